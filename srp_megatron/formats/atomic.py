"""Atomic writes: a temporary file beside the target, then ``os.replace``, so readers never see a partial file."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq


def write_json_atomic(obj: dict, path: str, tmp_suffix: str = ".tmp", ensure_ascii: bool = False) -> None:
    """Write deterministic JSON (sorted keys, indent 2, a final newline); ``tmp_suffix`` names the temporary
    file (distinct per writer when several processes may write the same path)."""
    tmp = path + tmp_suffix
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=ensure_ascii) + "\n")
    os.replace(tmp, path)


def write_table_atomic(table: pa.Table, path: str) -> None:
    """Write a Parquet file (zstd, 64k-row groups)."""
    tmp = path + ".tmp"
    pq.write_table(table, tmp, compression="zstd", row_group_size=65536)
    os.replace(tmp, path)
