"""The commit position never passes an offset whose fate is open."""

from __future__ import annotations

import pytest

from triggers.offsets import PartitionOffsets


def test_position_is_highest_contiguous_settled() -> None:
    t = PartitionOffsets()
    for o in range(10, 15):
        t.add(o)
    assert t.position is None
    t.settle(12)
    t.settle(11)
    assert t.position is None  # 10 is still open
    t.settle(10)
    assert t.position == 13
    t.settle(14)
    assert t.position == 13
    t.settle(13)
    assert t.position == 15
    assert t.in_flight == 0


def test_dirty_until_committed() -> None:
    t = PartitionOffsets()
    t.add(0)
    t.settle(0)
    assert t.dirty
    t.mark_committed(1)
    assert not t.dirty


def test_gaps_in_offsets_are_fine() -> None:
    # compacted topics and transaction markers leave gaps: only fetched offsets count
    t = PartitionOffsets()
    for o in (3, 7, 8):
        t.add(o)
    t.settle(7)
    t.settle(3)
    assert t.position == 8
    t.settle(8)
    assert t.position == 9


def test_out_of_order_add_is_rejected() -> None:
    t = PartitionOffsets()
    t.add(5)
    with pytest.raises(ValueError, match="arrived after"):
        t.add(5)


def test_a_batch_is_added_at_once_and_must_come_after_what_is_pending() -> None:
    t = PartitionOffsets()
    t.add_all([3, 4, 7])
    t.add_all([])
    t.add_all(iter([8]))
    assert t.in_flight == 4
    with pytest.raises(ValueError, match="offset 8 arrived after 8"):
        t.add_all([8, 9])
    assert t.in_flight == 4  # a refused batch adds nothing
    for o in (4, 3, 7):
        t.settle(o)
    assert t.position == 8
