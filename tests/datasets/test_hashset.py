"""The duplicate detector's hash table answers exactly as a Python set would: a value is "seen" when
an earlier batch or an earlier place in the same batch held it, through growth and probe collisions."""

import random

import numpy as np
import pytest

from alignd.datasets.hashset import HashSet


@pytest.mark.parametrize("seed", range(30))
def test_add_many_matches_a_python_set(seed: int) -> None:
    rng = random.Random(seed)
    table, reference = HashSet(capacity=4), set[int]()
    for _ in range(rng.randint(1, 8)):
        # Small values and multiples of 4 collide in a small table; random 64-bit values do not.
        values = [
            rng.choice([rng.randint(1, 50), rng.getrandbits(64) or 1, rng.randint(1, 5) << 2])
            for _ in range(rng.randint(0, 80))
        ]
        expected = []
        for value in values:
            expected.append(value in reference)
            reference.add(value)
        assert table.add_many(np.array(values, dtype=np.uint64)).tolist() == expected
        assert len(table) == len(reference)


def test_capacity_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        HashSet(capacity=1000)
