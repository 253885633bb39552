"""What the model itself finds on the best crop an object could get: the ceiling of motion regions.

Each object wholly in view, on every `every`-th frame of the far video as the agent decodes it, is cut
out in one square of its own: centred on its true box, side CEILING_SPAN times its height but at least
the model's input, moved inside the frame, letterboxed into the model by the agent's own detector. A
contender below this ceiling lost the object in the planning (no crop, a crop cut short, the whole
frame instead); at the ceiling, only the model's own limits are left.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agent.pipeline.detector import load_detector
from benchmarks.fixture.far_video import HEIGHT, SIZES, WIDTH, FarScene, TrueBoxes, true_boxes
from benchmarks.regions_scoring import Seen, score_frame

# The crop's side over the object's height: the agent's regions grow a box by half its larger side on
# each side.
CEILING_SPAN = 2.0


def ceiling(bundle: Path, video: Path, scene: FarScene, threads: int, every: int = 3) -> dict[int, tuple[int, int]]:
    """Size -> (found, tried) on centred crops with `bundle` (INT8)."""
    detector, _ = load_detector(bundle, "int8", threads)
    side_min = detector.input_side
    tally = {size: [0, 0] for size in SIZES}
    capture = cv2.VideoCapture(str(video))
    try:
        for index in range(scene.frames):
            ok, image = capture.read()
            if not ok:
                break
            if index % every:
                continue
            truth = true_boxes(scene, index)
            for n in np.flatnonzero(truth.whole):
                box, size = truth.boxes[n], int(truth.sizes[n])
                side = min(max(side_min, round(CEILING_SPAN * size)), HEIGHT)
                x = round(min(max((box[0] + box[2] - side) / 2, 0), WIDTH - side))
                y = round(min(max((box[1] + box[3] - side) / 2, 0), HEIGHT - side))
                found, *_ = detector.detect(image[y : y + side, x : x + side])
                offset = np.array([x, y, x, y], np.float32)
                seen = Seen((found.boxes_xyxy + offset).astype(np.float32), found.class_ids.astype(np.int64))
                one = TrueBoxes(
                    box[None],
                    truth.class_ids[n : n + 1],
                    truth.sizes[n : n + 1],
                    truth.objects[n : n + 1],
                    np.ones(1, bool),
                )
                tally[size][0] += int(score_frame(one, seen).found[0])
                tally[size][1] += 1
    finally:
        capture.release()
    return {size: (found, tried) for size, (found, tried) in tally.items()}
