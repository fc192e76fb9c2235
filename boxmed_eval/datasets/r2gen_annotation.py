"""Reader of R2Gen's ``annotation.json`` layout, shared by the ``iu_xray`` and ``mimic`` adapters.

``{"train": [...], "val": [...], "test": [...]}``; each entry has ``id``, ``report``,
``image_path`` (list, relative to the image folder) and ``split``; MIMIC entries add
``study_id`` and ``subject_id``. Copies in the wild differ in their top-level keys (one
public IU X-Ray copy keys its test list by four spaces), so the entry's own ``split`` field
decides and the key is only the fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boxmed_eval.datasets.base import canonical_split
from boxmed_eval.errors import DataError
from boxmed_eval.records import read_json


def read_r2gen_annotation(path: Path) -> list[tuple[str, int, dict[str, Any]]]:
    """Return ``(split, index, entry)`` for every entry of the file, validated."""
    if not path.is_file():
        raise DataError("annotation file not found", file=path,
                        fix="pass --data-root pointing at the folder holding annotation.json, or annotation=PATH")
    data = read_json(path, what="annotation file", fix="restore the annotation.json from its source")
    if not isinstance(data, dict):
        raise DataError('expected an object {"train": [...], "val": [...], "test": [...]}', file=path)
    out: list[tuple[str, int, dict[str, Any]]] = []
    for key, entries in data.items():
        if not isinstance(entries, list):
            raise DataError(f"value of key {key!r} is not a list of studies", file=path)
        for index, entry in enumerate(entries):
            where = f"{key.strip() or repr(key)}[{index}]"
            if not isinstance(entry, dict):
                raise DataError("entry is not an object", file=path, record=where)
            for column in ("id", "report", "image_path"):
                if column not in entry:
                    raise DataError(f"missing {column!r}", file=path, record=f"{where} (id {entry.get('id')})",
                                    fix="R2Gen entries need id, report, image_path (list) and split")
            if not isinstance(entry["image_path"], list) or not entry["image_path"]:
                raise DataError("'image_path' must be a non-empty list", file=path, record=f"{where} (id {entry['id']})")
            bad = [p for p in entry["image_path"] if not isinstance(p, str) or not p.strip()]
            if bad:
                raise DataError(f"'image_path' holds {bad[0]!r}, not a relative file path", file=path,
                                record=f"{where} (id {entry['id']})",
                                fix='write image paths as strings, e.g. ["CXR1_1_IM-0001/0.png"]')
            if not isinstance(entry["report"], str):
                raise DataError(f"'report' is {type(entry['report']).__name__}, not text", file=path,
                                record=f"{where} (id {entry['id']})")
            if not isinstance(entry["id"], (str, int)) or isinstance(entry["id"], bool) or not str(entry["id"]).strip():
                raise DataError(f"'id' {entry['id']!r} is not a study id", file=path, record=where)
            split = canonical_split(entry.get("split") or key)
            out.append((split, index, entry))
    return out
