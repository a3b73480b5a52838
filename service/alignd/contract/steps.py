"""How many optimizer steps a run takes: the trainer's schedule, shared with the control plane's
estimate (`alignd.estimates`) so both count the same steps."""


def steps_per_epoch(pairs: int, *, batch_size: int, shards: int) -> int:
    """Optimizer steps in one pass over `pairs` usable pairs: every full batch, and the last partial
    one only if each of the `shards` micro-batches (GPUs × gradient_accumulation_steps) gets at least
    one pair. 0 when not even that fits."""
    full, rest = divmod(pairs, batch_size)
    return full + (1 if rest >= shards else 0)


def total_steps(steps_in_epoch: int, *, n_epochs: int, max_steps: int | None) -> int:
    """`n_epochs` passes, cut at `max_steps` when set."""
    steps = steps_in_epoch * n_epochs
    return steps if max_steps is None else min(steps, max_steps)


def pairs_per_epoch(pairs: int, *, batch_size: int, shards: int) -> int:
    """Pairs one epoch trains on: a partial batch too small to split over the shards is left out."""
    return min(pairs, steps_per_epoch(pairs, batch_size=batch_size, shards=shards) * batch_size)
