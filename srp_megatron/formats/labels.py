"""The labels directory: Parquet shards of labelled segments (written by ``srp label``, read by ``srp render``)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from srp_megatron.errors import SRPError
from srp_megatron.prep.label.base import Label, SegmentLabel

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


def unit_path(labels_dir: str, unit: int) -> str:
    """Path of the Parquet file of one unit of work."""
    return os.path.join(labels_dir, f"segments-{unit:06d}.parquet")


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


def write_table_atomic(table: pa.Table, path: str) -> None:
    """Write a Parquet file so that a reader (or a resumed run) never sees a partial file."""
    tmp = path + ".tmp"
    pq.write_table(table, tmp, compression="zstd", row_group_size=65536)
    os.replace(tmp, path)


def unit_files(labels_dir: str) -> list[str]:
    """The unit Parquet files of a labels directory, in stream order."""
    if not os.path.isdir(labels_dir):
        raise SRPError(f"labels directory '{labels_dir}' does not exist")
    files = sorted(glob.glob(os.path.join(labels_dir, UNIT_GLOB)))
    if not files:
        raise SRPError(f"labels directory '{labels_dir}' has no {UNIT_GLOB} files (run srp label first)")
    return files


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
