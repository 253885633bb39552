"""Draws docs/img/line-direction.png: which way across a counting line is `in` (agent/scene/lines.py).

python -m benchmarks.line_picture [--out docs/img/line-direction.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT = 640, 360
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw(out: Path) -> None:
    image = np.full((HEIGHT, WIDTH, 3), 245, np.uint8)
    a, b = (110, 200), (530, 200)  # points = [[0.17, 0.56], [0.83, 0.56]]: drawn left to right
    cv2.line(image, a, b, (40, 40, 200), 4, cv2.LINE_AA)
    for point, name in ((a, "1st point"), (b, "2nd point")):
        cv2.circle(image, point, 8, (40, 40, 200), -1, cv2.LINE_AA)
        cv2.putText(image, name, (point[0] - 40, point[1] + 34), FONT, 0.55, (40, 40, 200), 1, cv2.LINE_AA)
    cv2.putText(image, "left of the line", (60, 120), FONT, 0.6, (90, 90, 90), 1, cv2.LINE_AA)
    cv2.putText(image, "right of the line", (60, 300), FONT, 0.6, (90, 90, 90), 1, cv2.LINE_AA)
    cv2.arrowedLine(image, (330, 90), (330, 300), (30, 140, 30), 4, cv2.LINE_AA, tipLength=0.08)
    cv2.putText(image, "in", (346, 280), FONT, 0.9, (30, 140, 30), 2, cv2.LINE_AA)
    cv2.arrowedLine(image, (430, 300), (430, 90), (160, 90, 20), 4, cv2.LINE_AA, tipLength=0.08)
    cv2.putText(image, "out", (446, 120), FONT, 0.9, (160, 90, 20), 2, cv2.LINE_AA)
    cv2.putText(image, "looking from the 1st point to the 2nd: in = left to right", (20, 30), FONT, 0.6, (0, 0, 0), 1)
    cv2.putText(
        image,
        "(y grows downwards: a line drawn left to right counts moving down as in)",
        (20, 55),
        FONT,
        0.5,
        (60, 60, 60),
        1,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/line-direction.png"))
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
