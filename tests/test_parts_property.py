"""Properties of the split into parts: every task in exactly one part, the split stable when
replications are added, every part holding its share of every sweep point."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from disco_data_logger.sharding.parts import Part, part_of


@given(points=st.integers(1, 40), replications=st.integers(1, 300), count=st.integers(1, 64))
def test_every_task_is_in_exactly_one_part(points: int, replications: int, count: int) -> None:
    masks = [Part(i, count).mask(points, replications) for i in range(1, count + 1)]
    total = sum(m.astype(int) for m in masks)
    assert (total == 1).all()
    for i, m in enumerate(masks, start=1):
        assert Part(i, count).size(points, replications) == int(m.sum())


@given(points=st.integers(1, 20), replications=st.integers(1, 200), more=st.integers(0, 200),
       count=st.integers(1, 32))
def test_adding_replications_keeps_every_task_in_its_part(points: int, replications: int,
                                                          more: int, count: int) -> None:
    for i in range(1, count + 1):
        before = Part(i, count).mask(points, replications)
        after = Part(i, count).mask(points, replications + more)
        assert (after[:, :replications] == before).all()


@given(points=st.integers(1, 20), replications=st.integers(1, 200), count=st.integers(1, 32))
def test_every_part_has_its_share_of_every_point(points: int, replications: int,
                                                 count: int) -> None:
    for i in range(1, count + 1):
        per_point = Part(i, count).mask(points, replications).sum(axis=1)
        # each point's replications are dealt round-robin: shares differ by at most one
        assert per_point.min() >= replications // count
        assert per_point.max() <= -(-replications // count)
    sizes = [Part(i, count).size(points, replications) for i in range(1, count + 1)]
    assert max(sizes) - min(sizes) <= points


@given(points=st.integers(1, 20), replications=st.integers(1, 100), count=st.integers(1, 16))
def test_part_of_agrees_with_contains(points: int, replications: int, count: int) -> None:
    import numpy as np

    p = np.repeat(np.arange(points), replications)
    r = np.tile(np.arange(replications), points)
    parts = part_of(p, r, count)
    for a, b, k in zip(p.tolist(), r.tolist(), parts.tolist(), strict=True):
        assert Part(k, count).contains(a, b)
