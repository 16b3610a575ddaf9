"""The label stage: output contract, bad-input counts, resume after SIGKILL, workers and shards, CLI."""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from srp_megatron.cli.label import add_arguments, main
from srp_megatron.config import ConfigError, load_config
from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import SEGMENTS_SCHEMA, iter_labelled_documents
from srp_megatron.prep.demo_corpus import demo_documents
from srp_megatron.prep.label.stage import LabelConfig, run_label

# The command module, as `srp label` runs it (srp_megatron.cli wires these two functions).
SCRIPT = (
    "import argparse, sys\n"
    "from srp_megatron.cli import label as labeling\n"
    "p = argparse.ArgumentParser(); labeling.add_arguments(p)\n"
    "sys.exit(labeling.main(p.parse_args()))\n"
)


def make_config(inputs, out, **values) -> LabelConfig:
    return load_config(LabelConfig, values={"inputs": inputs, "out": str(out), "labeler": "keyword",
                                            "progress": False, **values})


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def dir_bytes(path) -> dict[str, bytes]:
    return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """1500 demo documents (a tenth with Chinese paragraphs) in two JSONL files."""
    rows = list(demo_documents(1500, seed=11, unsafe_share=0.3, cjk_share=0.1))
    d = tmp_path_factory.mktemp("corpus")
    write_jsonl(d / "part-0.jsonl", rows[:700])
    write_jsonl(d / "part-1.jsonl", rows[700:])
    return str(d), rows


@pytest.fixture(scope="module")
def clean_run(corpus, tmp_path_factory):
    """An uninterrupted single-process run with small units, the reference for the other runs."""
    out = tmp_path_factory.mktemp("clean") / "labels"
    manifest = run_label(make_config([corpus[0]], out, docs_per_unit=100, batch_docs=16))
    return str(out), manifest


def test_output_contract(corpus, clean_run):
    _, rows = corpus
    out, manifest = clean_run
    docs = list(iter_labelled_documents(out))
    assert [d.doc_id for d in docs] == [r["id"] for r in rows]
    assert [d.doc_index for d in docs] == list(range(len(rows)))
    assert ["".join(d.segments) for d in docs] == [r["text"] for r in rows]
    units = range(15)
    assert sorted(os.listdir(out)) == sorted(
        ["manifest.json", *(f"segments-{u:06d}.parquet" for u in units), *(f"stats-{u:06d}.json" for u in units)]
    )
    table = pa.concat_tables(pq.read_table(p) for p in sorted(glob.glob(os.path.join(out, "segments-*.parquet"))))
    assert table.schema.equals(SEGMENTS_SCHEMA)
    assert manifest == json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["complete"] and manifest["docs_in"] == manifest["docs_ok"] == len(rows)
    assert manifest["segments"] == table.num_rows
    assert manifest["labels"] == {"safe": 0, "controversial": 0, "unsafe": 0, **Counter(table["label"].to_pylist())}
    assert manifest["labels"]["unsafe"] > 0 and manifest["labeler"] == "keyword:builtin-v1"
    # every document the demo corpus made unsafe has an unsafe segment; no other document has one
    unsafe_docs = {d.doc_id for d in docs if any(lab.label.value == "unsafe" for lab in d.labels)}
    from srp_megatron.prep.demo_corpus import UNSAFE_SENTENCES

    sentences = [s for ss in UNSAFE_SENTENCES.values() for s in ss]
    assert unsafe_docs == {r["id"] for r in rows if any(s in r["text"] for s in sentences)}


def test_resume_after_kill_is_byte_identical(corpus, clean_run, tmp_path):
    out = tmp_path / "labels"
    cmd = [sys.executable, "-c", SCRIPT, corpus[0], "batch_docs=16", "--out", str(out), "--labeler", "keyword",
           "--no-progress", "--docs-per-unit", "100"]
    for target in (1, 5, 9):  # kill when this many units are done (the run is resumed each time)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while len(glob.glob(str(out / "stats-*.json"))) < target and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        assert not os.path.exists(out / "manifest.json")
    assert len(glob.glob(str(out / "stats-*.json"))) < 15
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert dir_bytes(out) == dir_bytes(clean_run[0])


def test_workers_and_shards_match_the_single_run(corpus, clean_run, tmp_path):
    manifest = run_label(make_config([corpus[0]], tmp_path / "w", docs_per_unit=100, batch_docs=16, workers=2))
    assert manifest["complete"] and dir_bytes(tmp_path / "w") == dir_bytes(clean_run[0])
    shard = tmp_path / "s"
    first = run_label(make_config([corpus[0]], shard, docs_per_unit=100, batch_docs=16, num_shards=2, shard_index=1))
    assert not first["complete"] and first["units_done"] == 7 and first["docs_in"] == 700
    second = run_label(make_config([corpus[0]], shard, docs_per_unit=100, batch_docs=16, num_shards=2, shard_index=0))
    assert second["complete"] and dir_bytes(shard) == dir_bytes(clean_run[0])


def test_refuses_to_mix_settings(corpus, clean_run):
    with pytest.raises(SRPError, match=r"stats-000000\.json was written with other settings \(segmenter differ\)"):
        run_label(make_config([corpus[0]], clean_run[0], docs_per_unit=100, segmenter={"max_words": 50}))


def bad_inputs(d) -> tuple[list[str], dict]:
    """A directory of inputs with every kind of bad record, and the counts they must produce."""
    good = [{"id": f"g{i}", "text": f"Good text {i}. Nothing to see."} for i in range(30)]
    lines = [json.dumps(r) for r in good[:10]] + [
        '{"text": "unterminated', "[1]", '{"id": 1}', '{"text": ""}', '{"text": ["a"]}',
        '{"text": "' + "x" * 300 + '"}', '{"text": "lone \\udc80"}', "",
    ]
    (d / "a.jsonl").write_bytes("\n".join(lines).encode() + b"\n" + b'{"text": "bad \xff byte"}\n')
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in good[10:20] * 50).encode())
    (d / "b.jsonl.gz").write_bytes(data[: len(data) // 2])  # truncated
    pq.write_table(pa.Table.from_pylist(good[20:] + [{"id": "n", "text": None}]), d / "c.parquet", row_group_size=4)
    expected = {"malformed_json": 1, "not_an_object": 1, "missing_text": 2, "empty_text": 1, "non_string_text": 1,
                "too_large": 1, "invalid_utf8": 2}
    return [str(d)], expected


def test_bad_input_is_counted_by_reason(tmp_path):
    (tmp_path / "in").mkdir()
    inputs, expected = bad_inputs(tmp_path / "in")
    m = run_label(make_config(inputs, tmp_path / "out", docs_per_unit=5, reader={"max_doc_chars": 200}))
    assert m["docs_skipped"] == expected
    assert m["docs_in"] == m["docs_ok"] + sum(m["docs_skipped"].values()) == m["records"]
    gz_read = m["file_errors"][0]["records_read"]
    assert m["files_skipped"] == {"corrupt": 1} and m["file_errors"][0]["file"].endswith("b.jsonl.gz")
    assert m["docs_ok"] == 10 + gz_read + 10 and m["blank_lines"] == 1 and m["complete"]
    # unit 2 (records 10-14) holds only bad records: it still has a (row-less) Parquet file, so it counts as done
    assert pq.read_table(tmp_path / "out" / "segments-000002.parquet").num_rows == 0
    for workers in (1, 2):  # the first bad record in stream order, though the truncated file fails sooner
        with pytest.raises(SRPError, match=r"a\.jsonl:11: malformed_json"):
            run_label(make_config(inputs, tmp_path / f"strict{workers}", strict=True, workers=workers))


def test_oracle_rows_through_the_stage(tmp_path):
    rows = [
        {"id": "s", "segments": [
            {"text": "Take D1. ", "label": "safe"},
            {"text": "Give D2.", "label": "unsafe", "categories": ["allergy"], "rewrite": "No."},
        ]},
        {"id": "d", "text": "One. Two.", "label": "controversial"},
        {"id": "m", "text": "Other.", "segments": [{"text": "Mismatch.", "label": "safe"}]},
        {"id": "x", "text": "No label."},
    ]
    m = run_label(make_config([write_jsonl(tmp_path / "o.jsonl", rows)], tmp_path / "out", labeler="oracle"))
    assert m["docs_skipped"] == {"oracle_text_mismatch": 1, "oracle_missing_label": 1}
    table = pq.read_table(tmp_path / "out" / "segments-000000.parquet").to_pylist()
    assert [(r["doc_id"], r["text"], r["label"], r["categories"], r["rewrite"]) for r in table] == [
        ("s", "Take D1. ", "safe", [], None), ("s", "Give D2.", "unsafe", ["allergy"], "No."),
        ("d", "One. Two.", "controversial", [], None),
    ]
    assert m["labeler"] == "oracle"


def test_cli_flags_presets_and_overrides(corpus, tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args([
        os.path.join(corpus[0], "part-1.jsonl"), "keyword.follow_segments=2", "docs_per_unit=400", "--out", str(out),
        "--config", "keyword", "--segment-words", "40", "--text-field", "text", "--no-progress",
    ])
    assert main(args) == 0
    manifest = json.load(open(out / "manifest.json"))
    cfg = manifest["config"]
    assert (cfg["segmenter"]["max_words"], cfg["keyword"]["follow_segments"], cfg["docs_per_unit"]) == (40, 2, 400)
    assert manifest["units"] == 2 and manifest["labeler"] == "keyword:builtin-v1:follow=2"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"inputs": []}, "inputs is empty"),
        ({"out": ""}, "out is empty"),
        ({"labeler": "nope"}, r"labeler='nope'.*keyword"),
        ({"docs_per_unit": 0}, "docs_per_unit=0"),
        ({"workers": 0}, "workers=0"),
        ({"num_shards": 2, "shard_index": 2}, r"shard_index=2: must be in \[0, num_shards=2\)"),
    ],
)
def test_config_rules(values, match):
    base = {"inputs": ["x.jsonl"], "out": "o", "labeler": "keyword"}
    with pytest.raises(ConfigError, match=match):
        load_config(LabelConfig, values={**base, **values})


def test_output_config_leaves_out_runtime_knobs():
    from srp_megatron.prep.label.stage import output_config

    cfg = make_config(["x.jsonl"], "o", labeler="openai", workers=3, openai={"concurrency": 3})
    got = output_config(cfg)
    assert set(got) == {"inputs", "labeler", "reader", "segmenter", "docs_per_unit", "openai"}
    assert not {"base_url", "api_key_env", "concurrency", "backoff_initial", "backoff_max"} & set(got["openai"])
    section = cfg.section("openai")
    assert (got["openai"]["model"], got["openai"]["max_retries"]) == (section.model, section.max_retries)

