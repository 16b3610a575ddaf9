"""The labels directory: written by ``srp label``, read by ``srp render``.

A labels directory holds, per unit of work ``N`` (a fixed slice of the input stream), ``segments-NNNNNN.parquet``
(one row per segment: :data:`SEGMENTS_SCHEMA`) and ``stats-NNNNNN.json`` (the unit's counts and the settings it
was labelled with), plus ``manifest.json``. A unit is done when both its files exist (the stats file is
written last). The manifest sums the done units' stats, so it is the same whichever process, worker or array
task labelled a unit, and a resumed run reproduces it: ``labeler_stats`` (request and retry counters, which can
depend on the server's timing) are stored per unit when the unit is written and never recounted.
"""

from __future__ import annotations

import enum
import glob
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from srp_megatron.errors import SRPError
from srp_megatron.formats.atomic import write_json_atomic

logger = logging.getLogger(__name__)


class Label(enum.StrEnum):
    """Safety verdict of a segment (Qwen3Guard's three levels)."""

    safe = "safe"
    controversial = "controversial"
    unsafe = "unsafe"


@dataclass(frozen=True)
class SegmentLabel:
    """The verdict on one segment, with zero or more category names."""

    label: Label
    categories: tuple[str, ...] = ()


SEGMENTS_SCHEMA = pa.schema(
    [
        pa.field("doc_index", pa.int64(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("seg_idx", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("categories", pa.list_(pa.string()), nullable=False),
        pa.field("labeler", pa.string(), nullable=False),
        pa.field("rewrite", pa.string(), nullable=True),
    ]
)
UNIT_GLOB = "segments-*.parquet"
MANIFEST = "manifest.json"
_UNIT_NAME = re.compile(r"segments-(\d+)\.parquet")


def unit_path(labels_dir: str, unit: int) -> str:
    """Path of the Parquet file of one unit of work."""
    return os.path.join(labels_dir, f"segments-{unit:06d}.parquet")


def stats_path(labels_dir: str, unit: int) -> str:
    """Path of the stats file of one unit (written after its Parquet file: its presence marks the unit done)."""
    return os.path.join(labels_dir, f"stats-{unit:06d}.json")


@dataclass
class LabelledDocument:
    """A document as the render stage sees it: its segments with labels (and optional rewrites)."""

    doc_index: int
    doc_id: str
    segments: list[str]
    labels: list[SegmentLabel]
    rewrites: list[str | None]


def documents_to_table(docs: list[LabelledDocument], labeler: str) -> pa.Table:
    """One Arrow table (``SEGMENTS_SCHEMA``) of the segments of ``docs``, in order."""
    cols: dict[str, list] = {f.name: [] for f in SEGMENTS_SCHEMA}
    for d in docs:
        for i, (text, lab, rw) in enumerate(zip(d.segments, d.labels, d.rewrites, strict=True)):
            cols["doc_index"].append(d.doc_index)
            cols["doc_id"].append(d.doc_id)
            cols["seg_idx"].append(i)
            cols["text"].append(text)
            cols["label"].append(lab.label.value)
            cols["categories"].append(list(lab.categories))
            cols["labeler"].append(labeler)
            cols["rewrite"].append(rw)
    return pa.table(cols, schema=SEGMENTS_SCHEMA)


def unit_files(labels_dir: str) -> list[str]:
    """The unit Parquet files of a labels directory, in stream order."""
    if not os.path.isdir(labels_dir):
        raise SRPError(f"labels directory '{labels_dir}' does not exist")
    files = sorted(glob.glob(os.path.join(labels_dir, UNIT_GLOB)))
    if not files:
        raise SRPError(f"labels directory '{labels_dir}' has no {UNIT_GLOB} files (run srp label first)")
    return files


def unit_numbers(labels_dir: str) -> list[int]:
    """The units present in a labels directory, in stream order; a stray file name is an error."""
    present = []
    for path in unit_files(labels_dir):
        match = _UNIT_NAME.fullmatch(os.path.basename(path))
        if match is None:
            raise SRPError(f"{path}: not a unit file name (segments-NNNNNN.parquet, as srp label writes)")
        present.append(int(match.group(1)))
    return present


def iter_labelled_documents(
    labels_dir: str, batch_rows: int = 65536, units: Sequence[int] | None = None
) -> Iterator[LabelledDocument]:
    """Stream the documents of a labels directory (or of its ``units`` only) in order, memory bounded by
    ``batch_rows``."""
    pending: LabelledDocument | None = None
    for path in unit_files(labels_dir) if units is None else [unit_path(labels_dir, u) for u in units]:
        pf = pq.ParquetFile(path)
        if not pf.schema_arrow.equals(SEGMENTS_SCHEMA, check_metadata=False):
            raise SRPError(f"{path}: schema differs from the labels schema:\n{pf.schema_arrow}")
        for batch in pf.iter_batches(batch_size=batch_rows):
            c = batch.to_pydict()
            for di, did, si, text, lab, cats, rw in zip(
                c["doc_index"],
                c["doc_id"],
                c["seg_idx"],
                c["text"],
                c["label"],
                c["categories"],
                c["rewrite"],
                strict=True,
            ):
                if pending is not None and di != pending.doc_index:
                    yield pending
                    pending = None
                if pending is None:
                    pending = LabelledDocument(di, did, [], [], [])
                if si != len(pending.segments):
                    raise SRPError(
                        f"{path}: document {did} has segment {si} where {len(pending.segments)} was expected"
                    )
                pending.segments.append(text)
                pending.labels.append(SegmentLabel(Label(lab), tuple(cats)))
                pending.rewrites.append(rw)
    if pending is not None:
        yield pending


# -- stats and manifest ------------------------------------------------------------------------------------


def done_units(labels_dir: str, config: dict) -> dict[int, dict]:
    """Stats of the finished units in ``labels_dir`` (any shard's); refuses units labelled with other settings."""
    done = {}
    for path in sorted(glob.glob(os.path.join(labels_dir, "stats-*.json"))):
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        if stats.get("config") != config:
            old = stats.get("config") or {}
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise SRPError(f"{path} was written with other settings ({', '.join(diff)} differ): rerun with the same "
                           "arguments to resume, or write to a new --out directory")
        if not os.path.exists(unit_path(labels_dir, stats["unit"])):
            logger.warning("%s: the unit's Parquet file is missing: it is labelled again", path)
            continue
        done[stats["unit"]] = stats
    return done


def read_unit_stats(labels_dir: str, unit: int) -> dict:
    """The ``stats-NNNNNN.json`` of one unit, checked to hold its document and segment counts."""
    path = stats_path(labels_dir, unit)
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        for key in ("docs_ok", "segments"):
            int(stats[key])
    except FileNotFoundError:
        raise SRPError(
            f"{path} is missing: a sharded render checks each unit against its stats file (rerun the same "
            "srp label command in the labels directory: it labels that unit again)"
        ) from None
    except (KeyError, TypeError, ValueError) as exc:  # bad JSON included
        raise SRPError(f"{path}: not the stats file of a unit ({exc!r})") from None
    return stats


def build_manifest(labels_dir: str, config: dict, stream: Any, docs_per_unit: int, labeler: str) -> dict:
    """``manifest.json``: every finished unit's stats summed, plus what the reader saw of the whole ``stream``
    (``records``, ``files``, ``files_skipped``, ``file_errors``, ``blank_lines``); ``labeler`` names the labeler
    when no unit is done yet."""
    n_units = -(-stream.records // docs_per_unit)
    done = done_units(labels_dir, config)
    units = [done[u] for u in range(n_units) if u in done]
    sums: Counter = Counter()
    skipped, labels, categories = Counter(), Counter({lab.value: 0 for lab in Label}), Counter()
    labeler_stats: Counter = Counter()
    for st in units:
        sums.update({k: st[k] for k in ("docs_in", "docs_ok", "segments", "chars")})
        skipped.update(st["docs_skipped"])
        labels.update(st["labels"])
        categories.update(st["categories"])
        labeler_stats.update(st.get("labeler_stats", {}))  # units written before labeler_stats existed: none
    return {
        "complete": len(units) == n_units,
        "units": n_units,
        "units_done": len(units),
        "records": stream.records,
        **{k: sums[k] for k in ("docs_in", "docs_ok", "segments", "chars")},
        "docs_skipped": dict(skipped),
        "labels": dict(labels),
        "categories": dict(categories),
        "labeler": ", ".join(sorted({st["labeler"] for st in units})) or labeler,
        "labeler_stats": dict(labeler_stats),
        "files": stream.files,
        "files_skipped": dict(stream.files_skipped),
        "file_errors": stream.file_errors,
        "blank_lines": stream.blank_lines,
        "config": config,
    }


def write_manifest(labels_dir: str, config: dict, stream: Any, docs_per_unit: int, labeler: str,
                   shard_index: int = 0, num_shards: int = 1) -> dict:
    """Write ``manifest.json`` (recounted once if another array task finished meanwhile) and return it."""
    path = os.path.join(labels_dir, MANIFEST)
    manifest = build_manifest(labels_dir, config, stream, docs_per_unit, labeler)
    write_json_atomic(manifest, path, f".{shard_index}.tmp")
    if not manifest["complete"] and num_shards > 1:
        # a shard that finished while we counted may have written first: recount so the last write is complete
        again = build_manifest(labels_dir, config, stream, docs_per_unit, labeler)
        if again != manifest:
            write_json_atomic(again, path, f".{shard_index}.tmp")
            manifest = again
    return manifest


def read_manifest(labels_dir: str, allow_incomplete: bool) -> dict | None:
    """The labels manifest (None when there is none); an incomplete one is refused unless allowed."""
    path = os.path.join(labels_dir, MANIFEST)
    if not os.path.exists(path):
        logger.warning("%s has no %s: its segment counts cannot be checked", labels_dir, MANIFEST)
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except json.JSONDecodeError as exc:
        raise SRPError(f"{path}: not valid JSON ({exc})") from None
    if not manifest.get("complete", False) and not allow_incomplete:
        raise SRPError(f"{path}: labelling is not complete (finish srp label, or set allow_incomplete=true)")
    return manifest
