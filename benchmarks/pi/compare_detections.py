"""Compare the detections of two `yolo-edge-agent run --dry-run` outputs (JSON lines).

    python -m benchmarks.pi.compare_detections REFERENCE.jsonl CANDIDATE.jsonl [--label L]

The reference is the x86 run (or the Pi 4 one), the candidate the same command under emulation. Per frame,
detections are paired greedily by class and IoU; a pair must agree on the class, on every box
coordinate within --box-tol-px pixels of the source frame and on the confidence within
--conf-tol. A detection without a partner is tolerated only when its confidence is within
--conf-tol of the confidence threshold (it sat on the threshold and fell to the other side).
Prints one summary line and exits 1 when the outputs disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.config import ModelConfig
from converter.metrics import box_iou_xyxy


@dataclass(frozen=True)
class FrameDetections:
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) normalized xyxy
    scores: np.ndarray  # (N,)
    class_ids: np.ndarray  # (N,)


@dataclass(frozen=True)
class Comparison:
    frames: int
    detections: int
    matched: int
    borderline: int
    max_box_px: float
    max_conf: float
    problems: list[str]


def read_detections(path: Path) -> dict[int, FrameDetections]:
    """frame id -> detections, from every message on a `.../detections` topic."""
    frames: dict[int, FrameDetections] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if not message["topic"].endswith("/detections"):
            continue
        payload = message["payload"]
        items = payload["detections"]
        frames[int(payload["frame"])] = FrameDetections(
            width=int(payload["source"]["width"]),
            height=int(payload["source"]["height"]),
            boxes=np.array([item["box"] for item in items], np.float64).reshape(-1, 4),
            scores=np.array([item["confidence"] for item in items], np.float64),
            class_ids=np.array([item["class_id"] for item in items], np.int64),
        )
    return frames


def pair(reference: FrameDetections, candidate: FrameDetections) -> list[tuple[int, int]]:
    """Greedy pairs of the same class, highest IoU first."""
    iou = box_iou_xyxy(reference.boxes, candidate.boxes)
    iou[reference.class_ids[:, None] != candidate.class_ids[None, :]] = 0.0
    pairs = []
    while iou.size and iou.max() > 0.5:
        r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
        pairs.append((int(r), int(c)))
        iou[r, :] = 0.0
        iou[:, c] = 0.0
    return pairs


def compare(
    reference: dict[int, FrameDetections],
    candidate: dict[int, FrameDetections],
    box_tol_px: float,
    conf_tol: float,
    threshold: float,
) -> Comparison:
    empty = FrameDetections(0, 0, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    problems: list[str] = []
    detections = matched = borderline = 0
    max_box_px = max_conf = 0.0
    for frame in sorted(set(reference) | set(candidate)):
        ref, cand = reference.get(frame, empty), candidate.get(frame, empty)
        size = np.array([max(ref.width, cand.width), max(ref.height, cand.height)] * 2, np.float64)
        detections += len(ref.scores)
        pairs = pair(ref, cand)
        for r, c in pairs:
            box_px = float((np.abs(ref.boxes[r] - cand.boxes[c]) * size).max())
            conf = abs(float(ref.scores[r] - cand.scores[c]))
            max_box_px, max_conf = max(max_box_px, box_px), max(max_conf, conf)
            if box_px > box_tol_px or conf > conf_tol:
                problems.append(
                    f"frame {frame}: class {ref.class_ids[r]} box differs by {box_px:.2f} px, confidence by {conf:.4f}"
                )
        matched += len(pairs)
        for side, dets, used in (
            ("reference only", ref, {r for r, _ in pairs}),
            ("candidate only", cand, {c for _, c in pairs}),
        ):
            for index in set(range(len(dets.scores))) - used:
                score = float(dets.scores[index])
                if score < threshold + conf_tol:
                    borderline += 1
                else:
                    problems.append(f"frame {frame}: {side}: class {dets.class_ids[index]} confidence {score:.4f}")
    return Comparison(
        len(set(reference) | set(candidate)), detections, matched, borderline, max_box_px, max_conf, problems
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="reference run (JSON lines)")
    parser.add_argument("candidate", type=Path, help="candidate run (JSON lines)")
    parser.add_argument("--label", default="", help="printed at the start of the summary line")
    parser.add_argument("--box-tol-px", type=float, default=1.0, help="largest box coordinate difference (pixels)")
    parser.add_argument("--conf-tol", type=float, default=0.01, help="largest confidence difference")
    parser.add_argument(
        "--threshold",
        type=float,
        default=ModelConfig.confidence,
        help="the run's confidence threshold (default: the agent's default)",
    )
    parser.add_argument(
        "--info", action="store_true", help="report the differences without a verdict, and exit 0 whatever they are"
    )
    args = parser.parse_args()
    reference, candidate = read_detections(args.reference), read_detections(args.candidate)
    prefix = f"{args.label}: " if args.label else ""
    if not reference:
        # FAILED, so the check's summary counts it: a reference without detections proves nothing.
        print(f"{prefix}FAILED: the reference {args.reference} holds no detections; nothing to compare")
        return 1
    result = compare(reference, candidate, args.box_tol_px, args.conf_tol, args.threshold)
    if args.info:
        verdict = "within the tolerances" if not result.problems else "beyond the tolerances"
    else:
        verdict = "MATCH" if not result.problems else "DIFFER"
    print(
        f"{prefix}{verdict}: {result.frames} frames, {result.detections} reference detections, {result.matched} paired "
        f"(same class), {result.borderline} borderline unpaired; max box difference {result.max_box_px:.3f} px, "
        f"max confidence difference {result.max_conf:.4f}"
    )
    for problem in result.problems[:20]:
        print(f"  {problem}")
    return 0 if args.info or not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
