"""A stable id per object across detector frames: Kalman-predicted boxes matched by IoU, in two passes.

The passes follow ByteTrack's idea: detections scoring at least HIGH_SCORE are matched first, to
every track; the weaker ones then only continue tracks left unmatched, so a person half hidden
behind a car keeps their id, while a weak detection never starts a track of its own. Matching is
greedy in descending IoU: with boxes that overlap little between distinct objects it picks what an
optimal assignment would, without the Hungarian algorithm's cost (or scipy) on a Pi.

A track gets its id once `min_hits` detector frames matched it (one-frame false positives never
do), and ends after `max_lost_s` seconds without a match. Frames the motion gate let pass without
detection never reach the tracker; a detector frame the caller marks `still` (no motion since the
last one) neither moves the predictions nor ages the tracks, since nothing in the scene moved.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent.pipeline.detections import Detections
from agent.scene.kalman import BoxFilter, to_cxcywh

HIGH_SCORE = 0.5
MATCH_IOU = 0.3  # first pass: a high-score detection and a predicted box
LOW_MATCH_IOU = 0.5  # second pass: weak detections must overlap more to continue a track
# The centre may wander this share of the box's larger side and the object still counts as not moving.
STATIONARY_SHARE = 0.15


@dataclass(frozen=True)
class TrackerSettings:
    min_hits: int = 2
    max_lost_s: float = 2.0
    stationary_s: float = 10.0

    def __post_init__(self) -> None:
        if self.min_hits < 1 or self.max_lost_s <= 0 or self.stationary_s <= 0:
            raise ValueError(f"invalid tracker settings: {self}")


@dataclass(frozen=True)
class TrackedObject:
    """A confirmed track as of the last detector frame. box: xyxy source pixels (read-only)."""

    id: str
    class_id: int
    box: np.ndarray
    score: float
    top_score: float
    start_ts: float
    last_seen_ts: float
    stationary: bool
    hits: int


@dataclass(frozen=True)
class TrackUpdate:
    """track_ids: per detection of the frame, its confirmed track's id or None. tracks: the confirmed
    tracks still open; started: ids confirmed in this frame; ended: tracks that ended in it."""

    track_ids: tuple[str | None, ...]
    tracks: tuple[TrackedObject, ...]
    started: tuple[str, ...]
    ended: tuple[TrackedObject, ...]


@dataclass
class _Track:
    filter: BoxFilter
    class_scores: dict[int, float]
    score: float
    top_score: float
    start_ts: float
    last_seen_ts: float
    anchor: np.ndarray  # centre where the object last started to stand still
    anchor_ts: float
    hits: int = 1
    lost_s: float = 0.0
    id: str | None = None
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))

    @property
    def class_id(self) -> int:
        # The class with the highest accumulated score: a flickering label settles on the likelier one.
        return max(self.class_scores, key=self.class_scores.__getitem__)


def new_track_id(start_ts: float) -> str:
    """Unique across restarts of the device: the start time and 24 random bits."""
    return f"{start_ts:.3f}-{secrets.token_hex(3)}"


class Tracker:
    def __init__(self, settings: TrackerSettings, make_id: Callable[[float], str] = new_track_id) -> None:
        self.settings = settings
        self._make_id = make_id
        self._tracks: list[_Track] = []
        self._last_ts: float | None = None

    @property
    def active(self) -> int:
        return sum(t.id is not None for t in self._tracks)

    def update(self, detections: Detections, ts: float, still: bool = False) -> TrackUpdate:
        """Match one detector frame's detections (ts: its capture time, Unix seconds)."""
        dt = 0.0 if self._last_ts is None or still else max(0.0, ts - self._last_ts)
        self._last_ts = ts
        last = np.array([t.box for t in self._tracks], np.float32).reshape(-1, 4)
        predicted = np.array([t.filter.predict(dt) for t in self._tracks], np.float32).reshape(-1, 4)
        boxes, scores = detections.boxes_xyxy, detections.scores
        high = [int(i) for i in np.flatnonzero(scores >= HIGH_SCORE)]
        low = [int(i) for i in np.flatnonzero(scores < HIGH_SCORE)]
        # The better of the prediction and the last seen box: an object that stops dead is where it was,
        # not where its velocity would have taken it.
        iou = np.maximum(iou_matrix(predicted, boxes), iou_matrix(last, boxes))
        matches = _greedy(iou, list(range(len(self._tracks))), high, MATCH_IOU)
        unmatched_tracks = [i for i in range(len(self._tracks)) if i not in matches]
        matches |= _greedy(iou, unmatched_tracks, low, LOW_MATCH_IOU)

        det_track: dict[int, _Track] = {}
        started: list[str] = []
        for track_index, det in matches.items():
            track = self._tracks[track_index]
            self._matched(track, boxes[det], float(scores[det]), int(detections.class_ids[det]), ts)
            if track.id is None and track.hits >= self.settings.min_hits:
                track.id = self._make_id(track.start_ts)
                started.append(track.id)
            det_track[det] = track
        kept: list[_Track] = []
        ended: list[TrackedObject] = []
        for index, track in enumerate(self._tracks):
            if index in matches:
                kept.append(track)
            elif track.id is None:
                continue  # a tentative track missed once is dropped: most are false positives
            else:
                track.lost_s += dt
                track.box = track.filter.box
                if track.lost_s > self.settings.max_lost_s:
                    ended.append(self._public(track, ts))
                else:
                    kept.append(track)
        for det in high:
            if det not in det_track:
                track = self._start(boxes[det], float(scores[det]), int(detections.class_ids[det]), ts)
                if self.settings.min_hits <= 1:
                    track.id = self._make_id(ts)
                    started.append(track.id)
                det_track[det] = track
                kept.append(track)
        self._tracks = kept
        return TrackUpdate(
            track_ids=tuple(det_track[i].id if i in det_track else None for i in range(len(detections))),
            tracks=tuple(self._public(t, ts) for t in self._tracks if t.id is not None),
            started=tuple(started),
            ended=tuple(ended),
        )

    def close(self, ts: float) -> tuple[TrackedObject, ...]:
        """End every confirmed track (a clean stop)."""
        ended = tuple(self._public(t, ts) for t in self._tracks if t.id is not None)
        self._tracks = []
        return ended

    def _start(self, box: np.ndarray, score: float, class_id: int, ts: float) -> _Track:
        centre = to_cxcywh(box)[:2]
        track = _Track(BoxFilter(box), {class_id: score}, score, score, ts, ts, centre, ts)
        track.box = np.asarray(box, np.float32).copy()
        return track

    def _matched(self, track: _Track, box: np.ndarray, score: float, class_id: int, ts: float) -> None:
        track.filter.correct(box)
        track.box = np.asarray(box, np.float32).copy()
        track.class_scores[class_id] = track.class_scores.get(class_id, 0.0) + score
        track.score, track.top_score = score, max(track.top_score, score)
        track.hits += 1
        track.lost_s = 0.0
        track.last_seen_ts = ts
        measured = to_cxcywh(box)
        if np.abs(measured[:2] - track.anchor).max() > STATIONARY_SHARE * max(measured[2], measured[3], 1.0):
            track.anchor, track.anchor_ts = measured[:2], ts

    def _public(self, track: _Track, ts: float) -> TrackedObject:
        assert track.id is not None
        box = track.box.copy()
        box.flags.writeable = False
        return TrackedObject(
            id=track.id,
            class_id=track.class_id,
            box=box,
            score=track.score,
            top_score=track.top_score,
            start_ts=track.start_ts,
            last_seen_ts=track.last_seen_ts,
            stationary=track.last_seen_ts - track.anchor_ts >= self.settings.stationary_s,
            hits=track.hits,
        )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _greedy(all_iou: np.ndarray, tracks: list[int], dets: list[int], threshold: float) -> dict[int, int]:
    """track index -> detection index among `tracks` x `dets`, pairs taken in descending IoU above `threshold`."""
    if not tracks or not dets:
        return {}
    iou = all_iou[np.ix_(tracks, dets)]
    matches: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        row, col = divmod(int(flat), iou.shape[1])
        if iou[row, col] <= threshold:
            break
        if tracks[row] in matches or dets[col] in used:
            continue
        matches[tracks[row]] = dets[col]
        used.add(dets[col])
    return matches
