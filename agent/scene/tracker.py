"""A stable id per object across detector frames: Kalman-predicted boxes matched by IoU, in two passes.

The passes follow ByteTrack's idea: detections scoring at least HIGH_SCORE are matched first, to
every track; the weaker ones then only continue tracks left unmatched, so a person half hidden
behind a car keeps their id, while a weak detection never starts a track of its own. Matching is
greedy in descending IoU: with boxes that overlap little between distinct objects it picks what an
optimal assignment would, without the Hungarian algorithm's cost (or scipy) on a Pi. A strong
detection left over that covers one already matched in this frame is the same object seen as a
second class (detectors' NMS is per class): it starts no track of its own.

A track gets its id once `min_hits` detector frames matched it (one-frame false positives never
do), and ends after `max_lost_s` seconds without a match. Frames the motion gate let pass without
detection never reach the tracker; a detector frame the caller marks `still` (no motion since the
last one) neither moves the predictions nor ages a track that was seen at the last detector frame,
since nothing in the scene moved and a refresh may come long after it. A track already missing then
keeps losing time on still frames, and the gate looks again every CHECK_S while one is (`missing`):
an object that left while the last motion was seen ends max_lost_s after it was missed, not at the
next motion, and a parked car that a flaky detector (night, low contrast) misses now and then is kept
as it is without the gate, not ended by two misses in a row.

Every track's state lives in arrays, one row per track, so a frame costs a fixed number of numpy
operations whatever the number of objects; only the pairs that could match are looped over.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.pipeline.detections import Detections
from agent.scene.kalman import BoxFilters, to_cxcywh

HIGH_SCORE = 0.5
MATCH_IOU = 0.3  # first pass: a high-score detection and a predicted box
LOW_MATCH_IOU = 0.5  # second pass: weak detections must overlap more to continue a track
DUPLICATE_IOU = 0.7  # a leftover detection overlapping a matched one this much is that same object
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
    """A confirmed track as of the last detector frame. box: xyxy source pixels (read-only). looked_ts: when
    the detector last looked where it is (with motion regions, a frame may leave it out)."""

    id: str
    class_id: int
    box: np.ndarray
    score: float
    top_score: float
    start_ts: float
    last_seen_ts: float
    stationary: bool
    hits: int
    looked_ts: float


@dataclass(frozen=True)
class TrackUpdate:
    """track_ids: per detection of the frame, its confirmed track's id or None. tracks: the confirmed
    tracks still open; started: ids confirmed in this frame; ended: tracks that ended in it;
    missing: how many of `tracks` this frame missed (the gate looks again soon while any are)."""

    track_ids: tuple[str | None, ...]
    tracks: tuple[TrackedObject, ...]
    started: tuple[str, ...]
    ended: tuple[TrackedObject, ...]
    missing: int = 0


def new_track_id(start_ts: float) -> str:
    """Unique across restarts of the device: the start time and 24 random bits."""
    return f"{start_ts:.3f}-{secrets.token_hex(3)}"


class _Tracks:
    """Every track's state, row i for track i. ids[i] is None while the track is tentative."""

    def __init__(self) -> None:
        self.filters = BoxFilters()
        self.box = np.zeros((0, 4), np.float32)  # last matched box, or the prediction while lost
        self.score = np.zeros(0)
        self.top_score = np.zeros(0)
        self.start_ts = np.zeros(0)
        self.last_seen_ts = np.zeros(0)
        self.looked_ts = np.zeros(0)
        self.anchor = np.zeros((0, 2))  # centre where the object last started to stand still
        self.anchor_ts = np.zeros(0)
        self.hits = np.zeros(0, np.int64)
        self.lost_s = np.zeros(0)
        self.misses = np.zeros(0, np.int64)  # consecutive detector frames without a match
        # Accumulated score per class id, columns added as new class ids turn up: the label is the
        # class with the most, so a flickering label settles on the likelier one.
        self.class_scores = np.zeros((0, 0))
        self.ids: list[str | None] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, ts: float) -> None:
        n = len(boxes)
        self.filters.add(boxes)
        self.box = np.concatenate([self.box, boxes.astype(np.float32)])
        self.score = np.concatenate([self.score, scores])
        self.top_score = np.concatenate([self.top_score, scores])
        self.start_ts = np.concatenate([self.start_ts, np.full(n, ts)])
        self.last_seen_ts = np.concatenate([self.last_seen_ts, np.full(n, ts)])
        self.looked_ts = np.concatenate([self.looked_ts, np.full(n, ts)])
        self.anchor = np.concatenate([self.anchor, to_cxcywh(boxes)[:, :2]])
        self.anchor_ts = np.concatenate([self.anchor_ts, np.full(n, ts)])
        self.hits = np.concatenate([self.hits, np.ones(n, np.int64)])
        self.lost_s = np.concatenate([self.lost_s, np.zeros(n)])
        self.misses = np.concatenate([self.misses, np.zeros(n, np.int64)])
        self.class_scores = np.concatenate([self.class_scores, np.zeros((n, self.class_scores.shape[1]))])
        self._add_class_scores(np.arange(len(self.ids), len(self.ids) + n), class_ids, scores)
        self.ids.extend([None] * n)

    def matched(
        self, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, ts: float
    ) -> None:
        self.filters.correct(rows, boxes)
        self.box[rows] = boxes
        self.score[rows] = scores
        self.top_score[rows] = np.maximum(self.top_score[rows], scores)
        self.hits[rows] += 1
        self.lost_s[rows] = 0.0
        self.misses[rows] = 0
        self.last_seen_ts[rows] = ts
        self._add_class_scores(rows, class_ids, scores)
        measured = to_cxcywh(boxes)
        reach = STATIONARY_SHARE * np.maximum(np.maximum(measured[:, 2], measured[:, 3]), 1.0)
        moved = np.abs(measured[:, :2] - self.anchor[rows]).max(axis=1) > reach
        self.anchor[rows[moved]] = measured[moved, :2]
        self.anchor_ts[rows[moved]] = ts

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (indices, in order)."""
        self.filters.keep(rows)
        for name in ("box", "score", "top_score", "start_ts", "last_seen_ts", "looked_ts", "anchor", "anchor_ts",
                     "hits", "lost_s", "misses", "class_scores"):  # fmt: skip
            setattr(self, name, getattr(self, name)[rows])
        self.ids = [self.ids[i] for i in rows.tolist()]

    def _add_class_scores(self, rows: np.ndarray, class_ids: np.ndarray, scores: np.ndarray) -> None:
        if len(class_ids) and int(class_ids.max()) >= self.class_scores.shape[1]:
            grow = int(class_ids.max()) + 1 - self.class_scores.shape[1]
            self.class_scores = np.pad(self.class_scores, ((0, 0), (0, grow)))
        self.class_scores[rows, class_ids] += scores


class Tracker:
    def __init__(self, settings: TrackerSettings, make_id: Callable[[float], str] = new_track_id) -> None:
        self.settings = settings
        self._make_id = make_id
        self._tracks = _Tracks()
        self._last_ts: float | None = None

    @property
    def active(self) -> int:
        return sum(i is not None for i in self._tracks.ids)

    def update(
        self,
        detections: Detections,
        ts: float,
        still: bool = False,
        looked_at: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> TrackUpdate:
        """Match one detector frame's detections (ts: its capture time, Unix seconds). looked_at: per box
        ((N, 4) pixels), did the detector look there (it ran on crops of the frame); None = everywhere."""
        gap = 0.0 if self._last_ts is None else max(0.0, ts - self._last_ts)
        dt = 0.0 if still else gap
        self._last_ts = ts
        tracks = self._tracks
        boxes, scores, class_ids = detections.boxes_xyxy, detections.scores.astype(np.float64), detections.class_ids
        n_tracks, n_dets = len(tracks), len(detections)
        last = tracks.box
        predicted = tracks.filters.predict(dt)
        high = scores >= HIGH_SCORE
        # The better of the prediction and the last seen box: an object that stops dead is where it was,
        # not where its velocity would have taken it.
        both = iou_matrix(np.concatenate([predicted, last]), boxes)
        iou = np.maximum(both[:n_tracks], both[n_tracks:])
        track_of = np.full(n_dets, -1, np.int64)  # per detection: its track's row, -1 for none
        _greedy(np.where(high[None, :], iou, 0.0), MATCH_IOU, track_of)
        taken = np.zeros(n_tracks, bool)
        taken[track_of[track_of >= 0]] = True
        _greedy(np.where(high[None, :] | taken[:, None], 0.0, iou), LOW_MATCH_IOU, track_of)

        det_rows = np.flatnonzero(track_of >= 0)
        rows = track_of[det_rows]
        tracks.matched(rows, boxes[det_rows], scores[det_rows], class_ids[det_rows], ts)
        is_matched = np.zeros(n_tracks, bool)
        is_matched[rows] = True
        started: list[str] = []
        min_hits = self.settings.min_hits
        for row in rows[tracks.hits[rows] >= min_hits].tolist():
            if tracks.ids[row] is None:
                tracks.ids[row] = self._make_id(float(tracks.start_ts[row]))
                started.append(tracks.ids[row])

        confirmed = np.array([i is not None for i in tracks.ids], bool)
        # A track where the detector did not look this frame (a crop left out) is neither missed nor aged.
        unseen = ~is_matched & ~looked_at(last) if looked_at is not None else np.zeros(n_tracks, bool)
        lost = confirmed & ~is_matched & ~unseen
        tracks.looked_ts[~unseen] = ts
        # A still frame ages only the tracks that the previous detector frame missed too, by the time since it.
        tracks.lost_s[lost & (tracks.misses > 0) if still else lost] += gap
        tracks.misses[lost] += 1
        tracks.box[lost | unseen] = predicted[lost | unseen]  # where to look for it next
        expired = lost & (tracks.lost_s > self.settings.max_lost_s)
        missing = int((lost & ~expired).sum())
        ended = tuple(self._public(row, ts) for row in np.flatnonzero(expired).tolist())
        # A tentative track missed once is dropped: most are false positives.
        kept = is_matched | (lost & ~expired) | unseen
        tracks.keep(np.flatnonzero(kept))
        det_track_row = np.full(n_dets, -1, np.int64)
        if len(det_rows):
            # Rows shifted by the drop: the kept rows' new positions.
            new_row = np.cumsum(kept) - 1
            det_track_row[det_rows] = new_row[rows]

        fresh = _new_track_detections(high & (track_of < 0), boxes, scores, det_rows)
        if len(fresh):
            first = len(tracks)
            tracks.add(boxes[fresh], scores[fresh], class_ids[fresh], ts)
            det_track_row[fresh] = np.arange(first, first + len(fresh))
            if min_hits <= 1:
                for row in range(first, first + len(fresh)):
                    tracks.ids[row] = self._make_id(ts)
                    started.append(tracks.ids[row])  # type: ignore[arg-type]
        ids = tracks.ids
        return TrackUpdate(
            track_ids=tuple(ids[row] if row >= 0 else None for row in det_track_row.tolist()),
            tracks=tuple(self._public(row, ts) for row, i in enumerate(ids) if i is not None),
            started=tuple(started),
            ended=ended,
            missing=missing,
        )

    def close(self, ts: float) -> tuple[TrackedObject, ...]:
        """End every confirmed track (a clean stop)."""
        ended = tuple(self._public(row, ts) for row, i in enumerate(self._tracks.ids) if i is not None)
        self._tracks = _Tracks()
        return ended

    def _public(self, row: int, ts: float) -> TrackedObject:
        tracks = self._tracks
        track_id = tracks.ids[row]
        assert track_id is not None
        box = tracks.box[row].copy()
        box.flags.writeable = False
        last_seen = float(tracks.last_seen_ts[row])
        return TrackedObject(
            id=track_id,
            class_id=int(np.argmax(tracks.class_scores[row])),
            box=box,
            score=float(tracks.score[row]),
            top_score=float(tracks.top_score[row]),
            start_ts=float(tracks.start_ts[row]),
            last_seen_ts=last_seen,
            stationary=last_seen - float(tracks.anchor_ts[row]) >= self.settings.stationary_s,
            hits=int(tracks.hits[row]),
            looked_ts=float(tracks.looked_ts[row]),
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


def _greedy(iou: np.ndarray, threshold: float, track_of: np.ndarray) -> None:
    """Pairs (track row, detection) above `threshold` in descending IoU, each row and detection once;
    fills track_of[detection] = row for detections still -1 (rows already in track_of stay taken)."""
    rows, cols = np.nonzero(iou > threshold)
    if not len(rows):
        return
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows = set(track_of[track_of >= 0].tolist())
    for row, col in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if row in used_rows or track_of[col] >= 0:
            continue
        track_of[col] = row
        used_rows.add(row)


def _new_track_detections(
    candidates: np.ndarray, boxes: np.ndarray, scores: np.ndarray, matched: np.ndarray
) -> np.ndarray:
    """Indices of the leftover strong detections that start tracks: not a second box (another class) on an
    object already matched, nor on another leftover that scores higher."""
    fresh = np.flatnonzero(candidates)
    if not len(fresh):
        return fresh
    fresh = fresh[np.argsort(-scores[fresh], kind="stable")]
    overlap = iou_matrix(boxes[fresh], boxes) >= DUPLICATE_IOU
    covered = overlap[:, matched].any(axis=1) if len(matched) else np.zeros(len(fresh), bool)
    chosen: list[int] = []
    for k, det in enumerate(fresh.tolist()):
        if covered[k] or any(overlap[k, c] for c in chosen):
            continue
        chosen.append(det)
    return np.array(sorted(chosen), np.int64)
