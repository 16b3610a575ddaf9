"""Clear errors for bad rendered datasets, tokenizers and configs (one per rule)."""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
from rendered_corpus import write_rendered

from srp_megatron.data.dataset import ReflectionGPTDataset
from srp_megatron.errors import SRPError


@pytest.fixture
def prefix(tmp_path, tokenizer) -> str:
    """A fresh 20-document rendered dataset each test may damage."""
    return write_rendered(str(tmp_path / "data" / "corpus"), tokenizer, 20, seed=3).prefix


def _rewrite_spans(prefix: str, lengths: list[int]) -> None:
    builder = IndexedDatasetBuilder(prefix + "_spans.bin", dtype=np.uint8)
    for n in lengths:
        builder.add_document(np.zeros(n, dtype=np.uint8), [n])
    builder.finalize(prefix + "_spans.idx")


def _lengths(prefix: str) -> list[int]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix)  # its arrays are views of a map it closes when collected
    return dataset.sequence_lengths.tolist()


def test_missing_span_dataset_names_the_files(prefix, make_config, build):
    os.remove(prefix + "_spans.idx")
    with pytest.raises(SRPError, match=rf"span-type dataset of '{prefix}'.*corpus_spans\.idx not found"):
        build(ReflectionGPTDataset, make_config(prefix))


def test_missing_token_dataset_names_the_files(tmp_path, make_config, build):
    with pytest.raises(SRPError, match=r"rendered dataset .*nothing\.bin and .*nothing\.idx not found"):
        build(ReflectionGPTDataset, make_config(str(tmp_path / "nothing")))


def test_misaligned_span_lengths_name_both_files(prefix, make_config, build):
    lengths = _lengths(prefix)
    lengths[4] += 1
    _rewrite_spans(prefix, lengths)
    with pytest.raises(SRPError, match=r"corpus_spans\.bin/\.idx' does not match the tokens '.*corpus\.bin/\.idx'"
                                       r": sequence_lengths\[4\]"):
        build(ReflectionGPTDataset, make_config(prefix))


def test_span_dataset_with_other_document_count(prefix, make_config, build):
    _rewrite_spans(prefix, _lengths(prefix)[:-1])
    with pytest.raises(SRPError, match=r"does not match the tokens.*19 sequence_lengths vs 20"):
        build(ReflectionGPTDataset, make_config(prefix))


def test_truncated_span_bin(prefix, make_config, build):
    size = os.path.getsize(prefix + "_spans.bin")
    with open(prefix + "_spans.bin", "r+b") as f:
        f.truncate(size - 3)
    with pytest.raises(SRPError, match=rf"corpus_spans\.bin' has {size - 3} bytes, its \.idx needs {size}"):
        build(ReflectionGPTDataset, make_config(prefix))


def test_span_codes_must_be_uint8(prefix, make_config, build):
    builder = IndexedDatasetBuilder(prefix + "_spans.bin", dtype=np.int32)
    for n in _lengths(prefix):
        builder.add_document(np.zeros(n, dtype=np.int32), [n])
    builder.finalize(prefix + "_spans.idx")
    with pytest.raises(SRPError, match="span codes are int32, expected uint8"):
        build(ReflectionGPTDataset, make_config(prefix))


def _edit_metadata(prefix: str, **tokenizer) -> None:
    with open(prefix + ".json") as f:
        meta = json.load(f)
    meta["tokenizer"].update(tokenizer)
    with open(prefix + ".json", "w") as f:
        json.dump(meta, f)


def test_other_tokenizer_hash(prefix, make_config, build):
    _edit_metadata(prefix, sha256="0" * 64, path="/elsewhere/tok")
    with pytest.raises(SRPError, match=r"corpus\.json: the dataset was rendered with tokenizer '/elsewhere/tok'.*sha"):
        build(ReflectionGPTDataset, make_config(prefix))
    build(ReflectionGPTDataset, make_config(prefix, check_tokenizer=False))  # the escape hatch


def test_other_vocab_size_for_a_tokenizer_without_identity(prefix, make_config, build, tokenizer):
    class MegatronStyle:  # what megatron's tokenizers expose: no content hash
        vocab_size = tokenizer.vocab_size + 64
        eod = tokenizer.eod
        pad = tokenizer.eod
        unique_identifiers = OrderedDict(cls="MegatronStyle")

    with pytest.raises(SRPError, match=rf"vocab_size {tokenizer.vocab_size} vs {tokenizer.vocab_size + 64}"):
        build(ReflectionGPTDataset, make_config(prefix, tokenizer=MegatronStyle()))
    MegatronStyle.vocab_size = tokenizer.vocab_size
    assert len(build(ReflectionGPTDataset, make_config(prefix, tokenizer=MegatronStyle()))[0]) > 0


def test_missing_metadata(prefix, make_config, build):
    os.remove(prefix + ".json")
    with pytest.raises(SRPError, match=r"corpus\.json' not found.*check_tokenizer=False"):
        build(ReflectionGPTDataset, make_config(prefix))


def test_object_storage_is_refused(make_config, build):
    with pytest.raises(SRPError, match="object storage"):
        build(ReflectionGPTDataset, make_config("s3://bucket/corpus"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"blend": None}, "blend and blend_per_split are both None"),
        ({"split": None}, "split is None but blend is set"),
        ({"eod_mask_loss": None}, "eod_mask_loss is None: set it to True or False"),
        ({"reset_position_ids": None}, "reset_position_ids is None"),
        ({"tokenizer": None}, "tokenizer is None"),
        ({"loss_policy": {"reflections": "mask"}}, "unknown span type 'reflections'"),
        ({"loss_policy": "no_such_policy"}, "no_such_policy' not found"),
    ],
)
def test_config_rules(prefix, make_config, options, message):
    with pytest.raises(ValueError, match=message):
        make_config(prefix, **options)


def test_prefix_moved_with_its_sidecar_still_works(prefix, tmp_path, make_config, build):
    moved = tmp_path / "moved"
    shutil.copytree(os.path.dirname(prefix), moved)
    assert len(build(ReflectionGPTDataset, make_config(str(moved / "corpus")))[0]) > 0
