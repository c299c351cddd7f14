"""Reading an offline W&B run back (history, summary, config, artifacts, media files) without
``wandb sync`` or an account, e.g. to check what a cluster job logged.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from landscape_exp.errors import UserError

# The .wandb file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1 u16 LE, version
# u8 0), then 32 KiB blocks of records, each a 7-byte header (checksum u32 LE, length u16 LE,
# type u8) and its data. A record too long for the rest of a block is split FIRST/MIDDLE/LAST;
# fewer than 7 bytes left in a block are zero padding. The checksum is zlib's CRC-32 of the data,
# seeded with the CRC-32 of the type byte. Each full record is a wandb_internal_pb2.Record.
_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: str | Path) -> list[bytes]:
    """The raw protobuf records of a ``.wandb`` file, in order.

    A record cut short at the end (a killed process) ends the list; a bad header or checksum
    elsewhere is a UserError.
    """
    p = Path(path)
    data = p.read_bytes()
    if data[: len(_HEADER)] != _HEADER:
        raise UserError(f"{str(p)!r} is not a W&B run file (bad header)")
    records: list[bytes] = []
    pending: bytearray | None = None
    pos = len(_HEADER)
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zero fill: nothing more was written
            break
        start, end = pos + 7, pos + 7 + length
        if end > len(data):
            break  # truncated by a kill
        chunk = data[start:end]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise UserError(f"{str(p)!r} is corrupt: bad checksum at byte {pos}")
        pos = end
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = bytearray(chunk)
        elif kind == _MIDDLE and pending is not None:
            pending += chunk
        elif kind == _LAST and pending is not None:
            records.append(bytes(pending + chunk))
            pending = None
        else:
            raise UserError(f"{str(p)!r} is corrupt: record type {kind} at byte {pos}")
    return records


def _item_value(item: Any) -> Any:
    """The value of a HistoryItem/SummaryItem/ConfigItem (typed oneof or JSON text)."""
    which = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if which == "none":
        return None
    if which == "json":
        return json.loads(item.json)
    if which is not None:
        return getattr(item, which)
    return json.loads(item.value_json) if item.value_json else None


def _set_nested(d: dict[str, Any], keys: Sequence[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[keys[-1]] = value


def _item_keys(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def find_offline_runs(root: str | Path) -> list[Path]:
    """The ``offline-run-*`` directories under ``root`` (a job's run dir, or its ``wandb/``), oldest first."""
    r = Path(root)
    found = sorted({p.parent for p in r.glob("**/offline-run-*/run-*.wandb")})
    return found


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """Read an offline W&B run: a ``.wandb`` file or its ``offline-run-*`` directory.

    Returns a dict with ``id``, ``project``, ``name``, ``group``, ``job_type``, ``tags``,
    ``config`` (the run's config, nested), ``history`` (one dict per logged step, media entries
    as their metadata dicts), ``summary`` (nested), ``artifacts`` (``name``, ``type`` and
    ``files``: path -> digest and size, for each logged artifact, including W&B's own for
    tables), ``exit_code`` (None if the run never finished), ``files_dir`` and ``media`` (paths
    of the files under ``files/media``).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("run-*.wandb"))
        if not files:
            raise UserError(f"{str(p)!r} holds no run-*.wandb file; give an offline-run-* directory")
        p = files[0]
    if not p.is_file():
        raise UserError(f"W&B run file {str(p)!r} does not exist")
    out: dict[str, Any] = {"id": None, "project": None, "name": None, "group": None, "job_type": None,
                           "tags": [], "config": {}, "history": [], "summary": {}, "artifacts": [], "exit_code": None}
    for raw in wandb_records(p):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run = rec.run
            out.update(id=run.run_id, project=run.project, name=run.display_name, group=run.run_group,
                       job_type=run.job_type, tags=list(run.tags))
            for it in run.config.update:
                _set_nested(out["config"], _item_keys(it), _item_value(it))
        elif kind == "config":
            for it in rec.config.update:
                _set_nested(out["config"], _item_keys(it), _item_value(it))
        elif kind == "history":
            row: dict[str, Any] = {}
            for it in rec.history.item:
                _set_nested(row, _item_keys(it), _item_value(it))
            out["history"].append(row)
        elif kind == "summary":
            for it in rec.summary.update:
                _set_nested(out["summary"], _item_keys(it), _item_value(it))
            for it in rec.summary.remove:
                keys = _item_keys(it)
                node = out["summary"]
                for k in keys[:-1]:
                    node = node.get(k, {}) if isinstance(node, dict) else {}
                if isinstance(node, dict):
                    node.pop(keys[-1], None)
        elif kind == "artifact":
            art = rec.artifact
            out["artifacts"].append({"name": art.name, "type": art.type,
                                     "files": {e.path: {"digest": e.digest, "size": int(e.size)}
                                               for e in art.manifest.contents}})
        elif kind == "exit":
            out["exit_code"] = int(rec.exit.exit_code)
    out["config"].pop("_wandb", None)
    files_dir = p.parent / "files"
    out["files_dir"] = files_dir
    out["media"] = sorted(q for q in (files_dir / "media").glob("**/*") if q.is_file())
    return out
