"""Reading W&B offline runs back from their files, for tests.

A run's `run-<id>.wandb` is a LevelDB-style log: a 7-byte header (`:W&B`, a 2-byte magic, a version
byte), then 32 KiB blocks of records, each `crc32 (4) | length (2, little-endian) | kind (1) | data`,
where kind 1 is a whole record and 2, 3, 4 the first, middle and last piece of one cut at a block's end.
Each record's data is a `wandb.proto.wandb_internal_pb2.Record`. wandb 0.2x dropped its Python reader of
this format (the Go core reads it now); the format and the protobuf are wandb's own, unchanged.
"""

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pieces = HEADER, b""
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # a block's tail too short for a record header is padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        if kind == 0 and length == 0:
            position += left
            continue
        pieces += data[position + HEADER : position + HEADER + length]
        position += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def _key(item: Any) -> str:
    return str(item.key) if item.key else "/".join(item.nested_key)


@dataclass
class OfflineRun:
    """What a W&B run recorded: its run record, config, history rows (by `_step`) and final summary."""

    run_id: str = ""
    project: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


def read_run(directory: Path, run_id: str) -> OfflineRun:
    """The run `run_id` from every offline run directory under `directory` (a resumed run has several)."""
    run = OfflineRun()
    paths = sorted(directory.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert paths, f"no offline run {run_id} under {directory}"
    for path in paths:
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run.run_id, run.project = record.run.run_id, record.run.project
                run.name, run.tags = record.run.display_name, list(record.run.tags)
                run.config |= {_key(u): json.loads(u.value_json) for u in record.run.config.update}
            elif kind == "config":
                run.config |= {_key(u): json.loads(u.value_json) for u in record.config.update}
            elif kind == "history":
                run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                run.summary |= {_key(u): json.loads(u.value_json) for u in record.summary.update}
            elif kind == "exit":
                run.exit_code = record.exit.exit_code
    return run
