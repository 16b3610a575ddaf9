"""Input readers: formats, stream order, unit selection without parsing, bad records and bad files by reason."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from srp_megatron.errors import SRPError
from srp_megatron.prep.documents import (
    BadRecord,
    Document,
    ReaderConfig,
    RecordStream,
    expand_inputs,
    parse_record,
    unit_batches,
)

ROWS = [{"id": f"d{i}", "text": f"Document number {i}. It has two sentences.", "url": f"u{i}"} for i in range(23)]


def jsonl_bytes(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def read_all(inputs, config=None, docs_per_unit=5, want=lambda u: True, strict=False):
    stream = RecordStream(inputs, config or ReaderConfig(), docs_per_unit, want, strict)
    parsed = [parse_record(r, stream.config) for r in stream]
    return parsed, stream.stats


@pytest.fixture()
def corpus_dir(tmp_path):
    """The same 23 rows as plain, gzip and zstd JSONL and as Parquet (3 row groups), in subdirectories."""
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "deep" / "x.jsonl").write_bytes(jsonl_bytes(ROWS))
    (tmp_path / "a" / "y.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(ROWS)))
    # two zstd frames back to back, as parallel compressors write them
    half = len(ROWS) // 2
    cctx = zstandard.ZstdCompressor()
    (tmp_path / "b" / "z.jsonl.zst").write_bytes(
        cctx.compress(jsonl_bytes(ROWS[:half])) + cctx.compress(jsonl_bytes(ROWS[half:]))
    )
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "b" / "w.parquet", row_group_size=10)
    (tmp_path / "b" / "notes.txt").write_text("ignored")
    return tmp_path


def test_all_formats_give_the_same_documents(corpus_dir):
    files = expand_inputs([str(corpus_dir)])
    assert [f.removeprefix(str(corpus_dir)) for f in files] == [
        "/a/deep/x.jsonl", "/a/y.jsonl.gz", "/b/w.parquet", "/b/z.jsonl.zst"
    ]
    docs, stats = read_all([str(corpus_dir)])
    assert stats.records == 4 * len(ROWS) and stats.files == 4 and not stats.files_skipped
    assert [d.doc_index for d in docs] == list(range(4 * len(ROWS)))
    for k in range(4):
        chunk = docs[k * len(ROWS) : (k + 1) * len(ROWS)]
        assert [(d.doc_id, d.text, d.row) for d in chunk] == [
            (r["id"], r["text"], {"id": r["id"], "url": r["url"]}) for r in ROWS
        ]
    assert docs[0].location.endswith("x.jsonl:1") and docs[2 * len(ROWS) + 3].location.endswith("w.parquet:4")


def test_unwanted_units_are_counted_but_not_returned(corpus_dir, monkeypatch):
    # Units of 5 records; units 1 (x.jsonl rows 5-9) and 10 (records 50-54 = w.parquet rows 4-8) are wanted.
    # w.parquet has row groups of 10 rows; the spy records which groups are decoded.
    asked = []
    orig = pq.ParquetFile.iter_batches

    def spy(self, *args, row_groups=None, **kw):
        asked.append(tuple(row_groups))
        return orig(self, *args, row_groups=row_groups, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    want = {1, 10}
    docs, stats = read_all([str(corpus_dir)], docs_per_unit=5, want=lambda u: u in want)
    assert stats.records == 4 * len(ROWS)
    assert [d.doc_index for d in docs] == [5, 6, 7, 8, 9, 50, 51, 52, 53, 54]
    assert [d.doc_id for d in docs] == [f"d{i}" for i in range(5, 10)] + [f"d{i}" for i in range(4, 9)]
    assert asked == [(0,)]  # records 46..55 are rows 0..9 of w.parquet: group 0 only


def test_bad_records_get_reasons(tmp_path):
    lines = [
        b'{"id": 1, "text": "fine"}',
        b'{"text": "unterminated',
        b"[1, 2]",
        b'{"id": "x"}',
        b'{"text": null}',
        b'{"text": "   \\n"}',
        b'{"text": 42}',
        b'{"text": "caf\xe9"}',
        b'{"text": "lone \\ud800 surrogate"}',
        b'{"text": "' + b"x" * 50 + b'"}',
        b"",
        b'{"text": "' + b"y" * 5000 + b'"}',
        b'{"id": true, "text": "last"}',
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines))  # no newline at the end of the last line
    cfg = ReaderConfig(max_doc_chars=40, max_record_bytes=1000)
    docs, stats = read_all([str(path)], config=cfg)
    got = [(d.reason if isinstance(d, BadRecord) else "ok", d.location.rsplit(":", 1)[1]) for d in docs]
    assert got == [
        ("ok", "1"), ("malformed_json", "2"), ("not_an_object", "3"), ("missing_text", "4"), ("missing_text", "5"),
        ("empty_text", "6"), ("non_string_text", "7"), ("invalid_utf8", "8"), ("invalid_utf8", "9"),
        ("too_large", "10"), ("too_large", "12"), ("ok", "13"),
    ]
    assert stats.records == 12 and stats.blank_lines == 1
    assert docs[0].doc_id == "1" and docs[-1].doc_id == f"{path}:13"  # a boolean is no id


def test_truncated_and_unreadable_files_are_counted(tmp_path):
    data = jsonl_bytes(ROWS * 200)
    gz, zst = gzip.compress(data), zstandard.ZstdCompressor().compress(data)
    (tmp_path / "1.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    (tmp_path / "2.jsonl.zst").write_bytes(zst[: len(zst) // 2])
    (tmp_path / "3.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "4.jsonl").write_bytes(jsonl_bytes(ROWS[:3]))
    docs, stats = read_all([str(tmp_path)])
    assert dict(stats.files_skipped) == {"corrupt": 3}
    errors = {e["file"].rsplit("/", 1)[1]: e for e in stats.file_errors}
    assert sorted(errors) == ["1.jsonl.gz", "2.jsonl.zst", "3.parquet"]
    read = errors["1.jsonl.gz"]["records_read"] + errors["2.jsonl.zst"]["records_read"]
    assert 0 < errors["1.jsonl.gz"]["records_read"] < len(ROWS) * 200 and errors["3.parquet"]["records_read"] == 0
    assert stats.records == read + 3 == len(docs)
    with pytest.raises(SRPError, match=r"1\.jsonl\.gz: corrupt file after \d+ records"):
        read_all([str(tmp_path)], strict=True)


def test_input_errors(tmp_path):
    with pytest.raises(SRPError, match="does not exist"):
        expand_inputs([str(tmp_path / "missing.jsonl")])
    with pytest.raises(SRPError, match="has no input files"):
        expand_inputs([str(tmp_path)])
    with pytest.raises(SRPError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.jsonl")])
    with pytest.raises(ValueError, match=r"reader\.max_doc_chars=0"):
        ReaderConfig(max_doc_chars=0)


def test_text_from_row_supplies_missing_text():
    from srp_megatron.prep.documents import RawRecord

    raw = RawRecord(0, "f.jsonl", 1, b'{"parts": ["a", "b"]}')
    doc = parse_record(raw, ReaderConfig(), lambda row: "".join(row["parts"]))
    assert isinstance(doc, Document) and doc.text == "ab" and doc.doc_id == "f.jsonl:1"


def test_unit_batches_never_cross_units():
    from srp_megatron.prep.documents import RawRecord

    records = [RawRecord(i, "f", i + 1, b"{}") for i in [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]]
    got = [(u, [r.doc_index for r in b]) for u, b in unit_batches(records, docs_per_unit=5, batch_docs=2)]
    assert got == [(0, [0, 1]), (0, [2, 3]), (0, [4]), (1, [7, 8]), (1, [9]), (2, [10, 11])]
