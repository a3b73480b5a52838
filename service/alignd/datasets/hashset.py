"""A set of 64-bit hashes in one flat numpy table, filled a batch at a time.

Duplicate detection needs one membership test per row. Asked one value at a time from Python that is
the report's largest cost after parsing, so `add_many` probes a whole batch with array operations.
Open addressing with linear probing, kept at most half full and grown fourfold: 16 to 64 bytes per
member, where a Python set of ints takes about 70 to 90.
"""

import numpy as np
import numpy.typing as npt

Hashes = npt.NDArray[np.uint64]
Flags = npt.NDArray[np.bool_]


class HashSet:
    def __init__(self, capacity: int = 1 << 15) -> None:
        if capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two")
        self._slots: Hashes = np.zeros(capacity, dtype=np.uint64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add_many(self, values: Hashes) -> Flags:
        """Add `values` (nonzero) in order; True where a value was already there, earlier in the
        batch included."""
        unique, first = np.unique(values, return_index=True)
        seen = np.ones(len(values), dtype=bool)
        seen[first] = False
        present = self._insert(unique)
        seen[first[present]] = True
        return seen

    def _insert(self, keys: Hashes) -> Flags:
        """Insert distinct nonzero keys; True where a key was already a member."""
        while (self._count + len(keys)) * 2 > len(self._slots):
            self._grow()
        slots = self._slots
        last = len(slots) - 1
        position = (keys & np.uint64(last)).astype(np.int64)
        present = np.zeros(len(keys), dtype=bool)
        todo = np.arange(len(keys))
        while len(todo):
            at = position[todo]
            found = slots[at]
            hit = found == keys[todo]
            present[todo[hit]] = True
            empty = found == 0
            # Keys aiming at the same empty slot: one write lands and takes it; the rest see it taken
            # when they read back, and probe on next round.
            slots[at[empty]] = keys[todo[empty]]
            claimed = empty & (slots[at] == keys[todo])
            self._count += int(claimed.sum())
            moving = ~(hit | empty)
            position[todo[moving]] = (at[moving] + 1) & last
            todo = todo[~(hit | claimed)]
        return present

    def _grow(self) -> None:
        old = self._slots[self._slots != 0]
        self._slots = np.zeros(4 * len(self._slots), dtype=np.uint64)
        self._count = 0
        self._insert(old)
