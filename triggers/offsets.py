"""Per-partition offset tracking: commit only the highest contiguous settled offset, never past an open fate."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class PartitionOffsets:
    """Offsets of one partition in fetch order; `position` is the next offset safe to commit."""

    __slots__ = ("_done", "_pending", "committed", "position")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self.position: int | None = None
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        """Register a fetched offset (offsets of a partition arrive in increasing order)."""
        self.add_all((offset,))

    def add_all(self, offsets: Iterable[int]) -> None:
        """Register a fetched batch's offsets, in increasing order (as a partition's records come): one call per
        batch, not per record."""
        batch = list(offsets)
        if batch and self._pending and batch[0] <= self._pending[-1]:
            raise ValueError(f"offset {batch[0]} arrived after {self._pending[-1]}")
        self._pending.extend(batch)

    def settle(self, offset: int) -> None:
        """Mark an offset's fate settled and advance the commit position over the settled prefix."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            last = offset
            done = self._done
            while pending and pending[0] in done:
                last = pending.popleft()
                done.discard(last)
            self.position = last + 1
        else:
            self._done.add(offset)

    def discard_after(self, offset: int | None) -> None:
        """Forget fetched-but-unstarted offsets (a revoked partition): the next owner reads them again."""
        while self._pending and (offset is None or self._pending[-1] > offset):
            self._done.discard(self._pending.pop())

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def dirty(self) -> bool:
        return self.position is not None and self.position != self.committed

    def mark_committed(self, position: int) -> None:
        self.committed = position
