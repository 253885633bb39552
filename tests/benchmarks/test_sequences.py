"""The moving-shapes ground truth the tracking benchmark scores against."""

from __future__ import annotations

import itertools

import numpy as np

from benchmarks.fixture.sequences import all_sequences, occlusion, truncated


def test_truth_is_stable_inside_the_frame_and_deterministic() -> None:
    for sequence in all_sequences():
        short = truncated(sequence, 40)
        first = [truth for _, truth in short.iter_frames()]
        again = [truth for _, truth in truncated(sequence, 40).iter_frames()]
        ids_seen: set[int] = set()
        for truth, repeat in zip(first, again, strict=True):
            assert len(set(truth.ids.tolist())) == len(truth.ids), sequence.name
            assert np.array_equal(truth.boxes, repeat.boxes) and np.array_equal(truth.ids, repeat.ids)
            b = truth.boxes
            inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= sequence.width) & (b[:, 3] <= sequence.height)
            assert inside.all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), sequence.name
            ids_seen |= set(truth.ids.tolist())
        assert ids_seen <= {m.gt_id for m in sequence.movers} and ids_seen, sequence.name


def test_the_occlusion_sequence_hides_a_shape_inside_the_frame_and_it_returns_under_its_id() -> None:
    sequence = occlusion(20261205)
    small = sequence.movers[0]  # drawn first: the big shape passes over it
    present = []
    for frame, (_, truth) in enumerate(sequence.iter_frames()):
        cx, cy = small.centre(frame)
        in_frame = (
            small.radius <= cx <= sequence.width - small.radius and small.radius <= cy <= sequence.height - small.radius
        )
        present.append((in_frame, small.gt_id in truth.ids))
    hidden = [i for i, (in_frame, shown) in enumerate(present) if in_frame and not shown]
    assert hidden, "the small shape is never hidden"
    assert any(shown for _, shown in present[hidden[-1] + 1 :]), "it never comes back"
    assert any(shown for _, shown in present[: hidden[0]])


def test_shapes_enter_and_leave_through_the_edges() -> None:
    sequence = next(s for s in all_sequences() if s.name == "enter_leave")
    frames = [set(truth.ids.tolist()) for _, truth in sequence.iter_frames()]
    entered = {i for before, after in itertools.pairwise(frames) for i in after - before}
    left = {i for before, after in itertools.pairwise(frames) for i in before - after}
    assert len(entered) >= 3 and len(left) >= 3, (entered, left)
