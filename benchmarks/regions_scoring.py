"""Scoring the motion-regions benchmark: an agent's `detections` messages against the far video's true boxes.

A true box is found on a frame when a detection of its label overlaps it at IoU >= MATCH_IOU; each
detection finds at most one box, pairs taken in descending IoU. Only boxes wholly inside the frame
are scored: a detection on a shape cut by the border is neither found nor false. Every other
detection is a false positive (a second box of another class on a found shape included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from benchmarks.fixture.far_video import HEIGHT, SIZES, WIDTH, FarScene, TrueBoxes, true_boxes
from benchmarks.fixture.shapes import CLASS_NAMES

MATCH_IOU = 0.5


@dataclass(frozen=True)
class Seen:
    """One detector frame's detections, in pixels of the frame. boxes: (M, 4) float32 xyxy; class_ids: (M,) int64
    (-1 for a label the fixture does not have)."""

    boxes: np.ndarray
    class_ids: np.ndarray


@dataclass(frozen=True)
class FrameScore:
    """found: (N,) bool per true box of the frame (cut ones are always False and not scored); false_positives."""

    found: np.ndarray
    false_positives: int


@dataclass(frozen=True)
class Bucket:
    """One object size over the video. scored: whole boxes on the frames that ran the detector, found: of them;
    in_view: whole boxes on every frame (a frame the detector skipped finds nothing)."""

    size: int
    objects: int
    in_view: int
    scored: int
    found: int

    @property
    def recall(self) -> float | None:
        """Found over the detector frames' boxes; None when the detector never ran with one in view."""
        return self.found / self.scored if self.scored else None

    @property
    def found_share(self) -> float | None:
        """Found over every frame it was in view."""
        return self.found / self.in_view if self.in_view else None


@dataclass(frozen=True)
class Score:
    """A contender over the whole video: its size buckets, false positives and detector frames."""

    buckets: tuple[Bucket, ...]
    false_positives: int
    detector_frames: int

    def bucket(self, size: int) -> Bucket:
        return next(b for b in self.buckets if b.size == size)

    def pooled(self, sizes: Iterable[int]) -> Bucket:
        """Several buckets as one (size 0): recall over all their boxes together."""
        chosen = [b for b in self.buckets if b.size in set(sizes)]
        total = [sum(getattr(b, name) for b in chosen) for name in ("objects", "in_view", "scored", "found")]
        return Bucket(0, *total)


def parse_detections(message: Mapping) -> tuple[int, Seen]:
    """(video frame index, detections in pixels) of one `detections` message: the source numbers frames from 1,
    and boxes are 0..1 of the frame."""
    items = message.get("detections", [])
    boxes = np.array([item["box"] for item in items], np.float32).reshape(-1, 4) * [WIDTH, HEIGHT, WIDTH, HEIGHT]
    ids = [CLASS_NAMES.index(item["label"]) if item["label"] in CLASS_NAMES else -1 for item in items]
    return int(message["frame"]) - 1, Seen(boxes.astype(np.float32), np.array(ids, np.int64))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes a (N, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def score_frame(truth: TrueBoxes, seen: Seen) -> FrameScore:
    """Match one frame's detections to its true boxes (same class, IoU >= MATCH_IOU, greedy by IoU)."""
    overlap = iou(truth.boxes, seen.boxes)
    overlap[truth.class_ids[:, None] != seen.class_ids[None, :]] = 0.0
    matched_truth = np.zeros(len(truth.boxes), bool)
    matched_seen = np.zeros(len(seen.boxes), bool)
    for flat in np.argsort(-overlap, axis=None):
        t, s = np.unravel_index(flat, overlap.shape)
        if overlap[t, s] < MATCH_IOU:
            break
        if not matched_truth[t] and not matched_seen[s]:
            matched_truth[t] = matched_seen[s] = True
    # A detection matched to a cut shape is not false; one on nothing is.
    return FrameScore(matched_truth & truth.whole, int((~matched_seen).sum()))


def score_run(scene: FarScene, seen: Mapping[int, Seen], sizes: tuple[int, ...] = SIZES) -> Score:
    """Score every frame of the video: `seen` holds the detector frames (video index -> detections)."""
    in_view = dict.fromkeys(sizes, 0)
    scored = dict.fromkeys(sizes, 0)
    found = dict.fromkeys(sizes, 0)
    objects: dict[int, set[int]] = {size: set() for size in sizes}
    false_positives = 0
    for index in range(scene.frames):
        truth = true_boxes(scene, index)
        detections = seen.get(index)
        score = score_frame(truth, detections) if detections is not None else None
        if score is not None:
            false_positives += score.false_positives
        for n in np.flatnonzero(truth.whole):
            size = int(truth.sizes[n])
            in_view[size] += 1
            objects[size].add(int(truth.objects[n]))
            if score is not None:
                scored[size] += 1
                found[size] += int(score.found[n])
    buckets = tuple(Bucket(s, len(objects[s]), in_view[s], scored[s], found[s]) for s in sizes)
    return Score(buckets, false_positives, sum(1 for index in seen if 0 <= index < scene.frames))
