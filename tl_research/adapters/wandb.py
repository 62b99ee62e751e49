"""wandb (bounded <1): reading an offline run's `.wandb` file (config, history, summary) without a server.

wandb's public API (`wandb.Api`) reads runs from a server only; the file format and its protobuf schema
(`wandb.proto.wandb_internal_pb2`, an internal module) are what an offline run is. The file is a 7-byte header
(`:W&B`, magic 0xBEE1, version) followed by a LevelDB-style log: 32 KiB blocks of records with a 7-byte header
(CRC32C, length, type FULL/FIRST/MIDDLE/LAST); each assembled payload is one `Record` protobuf.

W&B's writer (wandb-core, another process) may still be flushing a run's last records when `finish()` has
returned, so a reader waits for the run's closing `exit` record (a fresh-clone CI run once read a report run's
file before its history had landed).
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path, wait: float = 60.0) -> list[Any]:
    """The records of a finished run's file, read again until its `exit` record is there (at most `wait` s; then
    what was written, for the caller's assertions to report)."""
    deadline = time.monotonic() + wait
    while True:
        records = _parse(path)
        if (records and records[-1].WhichOneof("record_type") == "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _parse(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, pending, records = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer: zero padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        chunk, pos = data[pos:pos + length], pos + length
        if kind == FULL:
            payload = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            payload, pending = pending + chunk, b""
        else:  # zero-filled tail of a file still being written
            break
        records.append(wandb_internal_pb2.Record.FromString(payload))
    return records


def _items(items) -> dict[str, Any]:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def decode(path: Path) -> dict[str, Any]:
    """{"run": RunRecord, "config": {...}, "history": [row, ...], "summary": {...}} of one run file."""
    out: dict[str, Any] = {"run": None, "config": {}, "history": [], "summary": {}}
    for rec in read_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update(_items(rec.run.config.update))
        elif kind == "config":
            out["config"].update(_items(rec.config.update))
        elif kind == "history":
            out["history"].append(_items(rec.history.item))
        elif kind == "summary":
            out["summary"].update(_items(rec.summary.update))
    return out


def run_file(wandb_dir: str | Path) -> Path:
    """The `.wandb` file of one offline run folder (`…/wandb/offline-run-*`)."""
    files = sorted(Path(wandb_dir).glob("*.wandb"))
    if len(files) != 1:
        raise ValueError(f"{wandb_dir}: expected one W&B run file (*.wandb), found {len(files)}")
    return files[0]
