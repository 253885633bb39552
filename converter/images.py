"""Image sources for calibration and validation: a folder, a video or a data.yaml.

Every source yields BGR frames exactly as cv2 decodes them; the caller applies
the agent's letterbox so calibration sees what the device will see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from converter.errors import ConvertError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class LabelledImage:
    """One image; labels are None when the source has none.

    image: (H, W, 3) uint8 BGR. boxes_xyxy: (M, 4) float32 pixels. class_ids: (M,) int64.
    """

    name: str
    image: np.ndarray
    boxes_xyxy: np.ndarray | None = None
    class_ids: np.ndarray | None = None


@dataclass
class SkipCounter:
    """Unreadable inputs are skipped, not fatal; this keeps the tally for the report."""

    skipped: list[str] = field(default_factory=list)


def label_path_for(image_path: Path) -> Path:
    """Ultralytics' convention: .../images/x/y.jpg -> .../labels/x/y.txt (last 'images' part)."""
    parts = list(image_path.parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def read_yolo_labels(path: Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse 'class cx cy w h' normalized lines into (M, 4) xyxy pixels and (M,) class ids."""
    rows = []
    for line in path.read_text().splitlines():
        values = line.split()
        if len(values) >= 5:
            rows.append([float(v) for v in values[:5]])
    table = np.array(rows, dtype=np.float32).reshape(-1, 5)
    cx, cy, w, h = table[:, 1] * width, table[:, 2] * height, table[:, 3] * width, table[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    return boxes, table[:, 0].astype(np.int64)


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most `limit` items spread over the whole list, so a sorted folder is sampled end to end."""
    if limit is None or len(items) <= limit:
        return items
    picks = np.linspace(0, len(items) - 1, limit).round().astype(int)
    return [items[i] for i in picks]


class ImageSource:
    """A list of images (with labels when every image has a label file or a labels dir exists)."""

    def __init__(self, description: str, image_paths: list[Path], labelled: bool) -> None:
        self.description = description
        self.image_paths = image_paths
        self.labelled = labelled

    def __len__(self) -> int:
        return len(self.image_paths)

    def iter_images(self, limit: int | None, skips: SkipCounter) -> Iterator[LabelledImage]:
        for path in evenly_spaced(self.image_paths, limit):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or image.size == 0:
                skips.skipped.append(str(path))
                continue
            if not self.labelled:
                yield LabelledImage(path.name, image)
                continue
            label_path = label_path_for(path)
            if label_path.is_file():
                boxes, class_ids = read_yolo_labels(label_path, *image.shape[:2])
            else:  # Ultralytics treats a missing label file as an image with no objects.
                boxes, class_ids = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
            yield LabelledImage(path.name, image, boxes, class_ids)


class VideoSource:
    """Frames sampled evenly over a video file (never labelled)."""

    labelled = False

    def __init__(self, path: Path) -> None:
        self.description = f"video {path}"
        self.path = path
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise ConvertError(f"cannot open video {path}; check the file and that OpenCV can decode it")
            self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()

    def __len__(self) -> int:
        return self.frame_count

    def iter_images(self, limit: int | None, skips: SkipCounter) -> Iterator[LabelledImage]:
        wanted = set(evenly_spaced(list(range(self.frame_count)), limit))
        capture = cv2.VideoCapture(str(self.path))
        try:
            # Decoding sequentially and keeping the wanted frames is more reliable
            # than seeking, which many codecs only do to keyframes.
            for index in range(self.frame_count):
                ok = capture.grab()
                if not ok:
                    break
                if index not in wanted:
                    continue
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    skips.skipped.append(f"{self.path}#frame{index}")
                    continue
                yield LabelledImage(f"frame{index:06d}", frame)
        finally:
            capture.release()


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _folder_source(folder: Path, description: str) -> ImageSource:
    paths = _images_in(folder)
    if not paths:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ConvertError(f"{description} has no images ({kinds}); point it at a folder of images")
    labelled = any(label_path_for(p).is_file() for p in paths[:50])
    return ImageSource(description, paths, labelled)


def _data_yaml_source(path: Path, split: str) -> ImageSource:
    import yaml  # the converter's extra; the agent never reads data.yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConvertError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict) or split not in data:
        raise ConvertError(f"{path} has no '{split}' entry; an Ultralytics data.yaml lists train and val")
    root = Path(data.get("path") or path.parent)
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    paths: list[Path] = []
    for entry in entries:
        location = Path(entry) if Path(entry).is_absolute() else root / entry
        if location.is_dir():
            paths.extend(_images_in(location))
        elif location.suffix == ".txt" and location.is_file():
            for line in location.read_text().splitlines():
                if line.strip():
                    image = Path(line.strip())
                    paths.append(image if image.is_absolute() else root / image)
        else:
            raise ConvertError(f"{path}: {split} entry {entry!r} resolves to {location}, which does not exist")
    if not paths:
        raise ConvertError(f"{path}: the {split} split holds no images")
    return ImageSource(f"{path} ({split} split)", paths, labelled=True)


def open_source(spec: Path, split: str) -> ImageSource | VideoSource:
    """Open a calibration or validation source: folder, video file or data.yaml (`split` picks train/val)."""
    if not spec.exists():
        raise ConvertError(f"{spec} does not exist; pass an image folder, a video file or a data.yaml")
    if spec.is_dir():
        return _folder_source(spec, f"folder {spec}")
    if spec.suffix.lower() in (".yaml", ".yml"):
        return _data_yaml_source(spec, split)
    if spec.suffix.lower() in VIDEO_SUFFIXES:
        return VideoSource(spec)
    if spec.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(f"image {spec}", [spec], labelled=label_path_for(spec).is_file())
    raise ConvertError(f"{spec} is neither a folder, a video ({', '.join(sorted(VIDEO_SUFFIXES))}) nor a data.yaml")
