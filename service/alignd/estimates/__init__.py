"""Estimates before training: tokens, steps, truncation, train/validation overlap and duration.

`throughput` is settings-only (pydantic); `service` does the work and loads the trainer's tokenizer
code (the `trainer` extra) only when an estimate needs it.
"""
