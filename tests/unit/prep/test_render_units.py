"""Sharded render (``--num-shards N --shard-index I``) and the checks of the labels directory's units.

The shards are compared with the unsharded render document by document, using which documents each unit
holds as read from its Parquet file with pyarrow; the unsharded render is itself checked against the
brute-force renderer of test_rendering.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_rendering import make_docs, raw_tokenizer, read, reference, run_render, write_labels

from srp_megatron.config import ConfigError, load_config
from srp_megatron.errors import SRPError
from srp_megatron.formats.atomic import write_table_atomic
from srp_megatron.formats.labels import documents_to_table, unit_path
from srp_megatron.prep.render.stage import RenderConfig

UNITS = 5


@pytest.fixture(scope="module")
def docs():
    return make_docs()


@pytest.fixture(scope="module")
def labels_dir(docs, tmp_path_factory):
    return write_labels(str(tmp_path_factory.mktemp("labels")), docs, units=UNITS)


@pytest.fixture(scope="module")
def unsharded(labels_dir, tiny_tokenizer_dir, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("whole") / "all"
    return run_render(labels_dir, tiny_tokenizer_dir, prefix), read(prefix)


def unit_doc_indices(labels_dir: str, unit: int) -> list[int]:
    """The documents of one unit, in order, straight from its Parquet file."""
    column = pq.read_table(unit_path(labels_dir, unit), columns=["doc_index"]).column("doc_index").to_pylist()
    return list(dict.fromkeys(column))


def test_shards_partition_the_unsharded_render(labels_dir, unsharded, tiny_tokenizer_dir, tmp_path):
    whole_meta, whole = unsharded
    order = [d for u in range(UNITS) for d in unit_doc_indices(labels_dir, u)]
    by_doc = dict(zip(order, whole, strict=True))  # the srp arm keeps every document
    shards = 3
    totals = np.zeros(2, dtype=np.int64)
    for i in range(shards):
        meta = run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "srp_{shard}", num_shards=shards, shard_index=i)
        got = read(tmp_path / f"srp_{i:05d}")
        units = [u for u in range(UNITS) if u % shards == i]
        expected = [by_doc[d] for u in units for d in unit_doc_indices(labels_dir, u)]
        assert got == expected  # documents, tokens and span types, in unit order
        assert np.array_equal(np.concatenate([t for t, _ in got]), np.concatenate([t for t, _ in expected]))
        assert meta.options["shard"] == {"num_shards": shards, "shard_index": i, "units": units}
        assert meta.documents_in == len(expected) and meta.tokenizer == whole_meta.tokenizer
        totals += (meta.documents, meta.tokens)
    assert totals.tolist() == [whole_meta.documents, whole_meta.tokens]
    assert "shard" not in whole_meta.options


def test_one_shard_is_byte_identical_to_megatrons_writer(docs, labels_dir, unsharded, tiny_tokenizer_dir, tmp_path):
    """N=1 writes exactly what megatron's IndexedDatasetBuilder writes for the brute-force token streams."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    meta = run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "one_{shard}", num_shards=1, shard_index=0)
    tok = raw_tokenizer(tiny_tokenizer_dir)
    expected = [reference(d, "srp", "paper", tok, tok.token_to_id("<|endoftext|>")) for d in docs]
    for name, column, dtype in (("ref", 0, np.uint16), ("ref_spans", 1, np.uint8)):
        builder = IndexedDatasetBuilder(str(tmp_path / f"{name}.bin"), dtype=dtype)
        for doc in expected:
            builder.add_document(np.array(doc[column], dtype=dtype), [len(doc[column])])
        builder.finalize(str(tmp_path / f"{name}.idx"))
    for ours, ref in (("one_00000", "ref"), ("one_00000_spans", "ref_spans")):
        for ext in (".bin", ".idx"):
            assert (tmp_path / (ours + ext)).read_bytes() == (tmp_path / (ref + ext)).read_bytes()
    assert meta == unsharded[0]  # PREFIX.json as without sharding: no shard record


def test_cli_flags_and_placeholder(labels_dir, tiny_tokenizer_dir, tmp_path, capsys):
    from srp_megatron.cli import main

    out = str(tmp_path / "cli_{shard}")
    argv = ["render", labels_dir, "--tokenizer", tiny_tokenizer_dir, "--out", out, "--num-shards", "2",
            "--shard-index", "1", "progress=false"]
    assert main(argv) == 0
    assert f"-> {tmp_path}/cli_00001.bin/.idx" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli_00001.json").read_text())["options"]["shard"]["units"] == [1, 3]
    assert main(argv[:-3] + ["--shard-index", "2"]) == 2
    assert "shard_index=2: must be in [0, num_shards=2)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"num_shards": 0}, r"num_shards=0 must be >= 1"),
        ({"num_shards": 3, "shard_index": 3}, r"shard_index=3: must be in \[0, num_shards=3\)"),
        ({"shard_index": -1}, r"shard_index=-1: must be in \[0, num_shards=1\)"),
    ],
)
def test_config_rules(values, match):
    base = {"labels_dir": "L", "out": "P", "tokenizer": {"path": "T"}}
    with pytest.raises(ConfigError, match=match):
        load_config(RenderConfig, values={**base, **values})


def test_shard_without_units(labels_dir, tiny_tokenizer_dir, tmp_path):
    with pytest.raises(SRPError, match=r"shard_index=6 of num_shards=7 has no label units .*use num_shards <= 5"):
        run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "x", num_shards=7, shard_index=6)


def test_labels_manifest_checks(docs, tmp_path, tiny_tokenizer_dir):
    incomplete = write_labels(str(tmp_path / "inc"), docs, complete=False)
    with pytest.raises(SRPError, match="labelling is not complete"):
        run_render(incomplete, tiny_tokenizer_dir, tmp_path / "a")
    assert run_render(incomplete, tiny_tokenizer_dir, tmp_path / "a", allow_incomplete=True).documents == len(docs)
    damaged = write_labels(str(tmp_path / "dmg"), docs)
    os.remove(unit_path(damaged, 1))
    with pytest.raises(SRPError, match=r"segments-000001\.parquet is missing \(manifest.json lists 2 units\)"):
        run_render(damaged, tiny_tokenizer_dir, tmp_path / "b")
    half = len(docs) // 2
    write_table_atomic(documents_to_table(docs[half + 1 :], "test"), unit_path(damaged, 1))  # a document lost
    total, lost = sum(len(d.segments) for d in docs), len(docs[half].segments)
    message = f"manifest.json: {total} segments listed, but the Parquet files hold {total - lost}:"
    with pytest.raises(SRPError, match=message):
        run_render(damaged, tiny_tokenizer_dir, tmp_path / "b")
    write_table_atomic(documents_to_table(docs[:1], "test"), unit_path(damaged, 2))
    with pytest.raises(SRPError, match=r"segments-000002\.parquet is not one of its units"):
        run_render(damaged, tiny_tokenizer_dir, tmp_path / "b")
    assert not any(f.startswith("b") for f in os.listdir(tmp_path))


def test_sharded_counts_use_the_units_stats(docs, tmp_path, tiny_tokenizer_dir):
    labels = write_labels(str(tmp_path / "labels"), docs, units=UNITS)
    stats = tmp_path / "labels" / "stats-000003.json"
    good = json.loads(stats.read_text())
    stats.write_text(json.dumps({**good, "segments": good["segments"] + 1}))
    # shard 0 (units 0, 2, 4) does not read unit 3's stats; shard 1 (units 1, 3) finds the mismatch
    assert run_render(labels, tiny_tokenizer_dir, tmp_path / "s0", num_shards=2, shard_index=0).documents_in > 0
    in_units = sum(json.loads((tmp_path / "labels" / f"stats-{u:06d}.json").read_text())["segments"] for u in (1, 3))
    with pytest.raises(SRPError, match=f"the stats files of the 2 units of this shard: {in_units} segments listed, "
                                       f"but the Parquet files hold {in_units - 1}"):
        run_render(labels, tiny_tokenizer_dir, tmp_path / "s1", num_shards=2, shard_index=1)
    stats.unlink()
    with pytest.raises(SRPError, match=r"stats-000003\.json is missing: a sharded render checks each unit"):
        run_render(labels, tiny_tokenizer_dir, tmp_path / "s1", num_shards=2, shard_index=1)
    assert not os.path.exists(tmp_path / "s1.bin")
