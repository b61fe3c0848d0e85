"""Read an offline wandb run's directory without the network: its config, summary, history,
defined metrics and the tables it wrote.

An offline run of wandb 0.31 writes no ``files/config.yaml`` or ``files/wandb-summary.json``
(only uploads make them) and its SDK has no reader of the run file any more (the Python
``wandb.sdk.internal.datastore`` went with the Go core): everything is in ``run-<id>.wandb``, a
LevelDB-style log (a 7-byte file header ``:W&B`` + magic + version, then 32 KiB blocks of chunks
with a 7-byte header: CRC, length, type full/first/middle/last) of wandb's own protobuf
``wandb_internal_pb2.Record``s, which this module parses with wandb's classes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path):
    """The protobuf records of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file (header {data[:7]!r})")
    pos, parts = _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _FIRST):
            parts = chunk
        elif kind in (_MIDDLE, _LAST):
            parts += chunk
        else:  # zero padding at a block's end
            continue
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            yield record


def _put(tree: dict, item) -> None:
    """An update item (key, or nested_key path) with its JSON value into ``tree``; a one-element
    nested_key is a flat key (``segmenter/train/loss``), as history rows hold them."""
    path = [item.key] if item.key else list(item.nested_key)
    node = tree
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    """What a run directory (``.../wandb/offline-run-<time>-<id>``) holds."""

    dir: Path
    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    metrics: dict[str, dict] = field(default_factory=dict)  # define_metric: name or glob -> options

    def table(self, key: str) -> dict:
        """A logged wandb.Table (its last value): ``{"columns": [...], "data": [[...]]}``."""
        ref = self.summary[key]
        return json.loads((self.dir / "files" / ref["path"]).read_text())

    def keys(self) -> set[str]:
        """Every key logged to the history."""
        return {k for row in self.history for k in row}


def _finished_records(path: Path, timeout_s: float = 60.0) -> list:
    """The run file's records once it holds the exit record. wandb's service process writes the
    file on its own time: right after ``run.finish()`` returns, on a busy machine (two test
    workers on two cores), the file may not be whole yet."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = list(records(path))
        except Exception:  # noqa: BLE001  (a record half-written yet)
            if time.monotonic() > deadline:
                raise
            found = []
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def read_run(run_dir: str | Path) -> OfflineRun:
    run_dir = Path(run_dir)
    (path,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(run_dir)
    for record in _finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type = r.display_name, r.run_group, r.job_type
            run.tags = list(r.tags)
            for item in r.config.update:
                _put(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _put(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _put(run.summary, item)
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                _put(row, item)
            run.history.append(row)
        elif kind == "metric":
            m = record.metric
            run.metrics[m.name or m.glob_name] = {"step_metric": m.step_metric,
                                                  "hidden": m.options.hidden}
    return run


def offline_runs(root: str | Path) -> list[OfflineRun]:
    """Every offline run directly in ``<root>/wandb/``."""
    return [read_run(d) for d in sorted(Path(root).glob("wandb/offline-run-*"))]
