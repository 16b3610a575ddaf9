"""Tokenizer: Hugging Face and megatron-core directories, identity, special tokens, against the raw libraries."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from srp_megatron.formats.rendered import dtype_for_vocab
from srp_megatron.prep.tokenizer import TokenizerKind, load_tokenizer, train_bpe_tokenizer

TEXTS = [
    "Photosynthesis explains how energy moves through living things.\n\nTeachers often use experiments.",
    "Literal <|endoftext|> and <think> Safe </think> in text.",
    "水循环描述了水在地球上的运动。  Tabs\tand  double  spaces ",
    "",
]


def _raw(path: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.encode_special_tokens = True
    return tok


@pytest.fixture(scope="module")
def megatron_dir(tiny_tokenizer_dir, tmp_path_factory):
    from megatron.core.tokenizers import MegatronTokenizer

    path = str(tmp_path_factory.mktemp("meg") / "tok")
    shutil.copytree(tiny_tokenizer_dir, path)
    MegatronTokenizer.write_metadata(path, "huggingface")
    return path


def test_huggingface_matches_the_raw_tokenizer(tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    raw = _raw(tiny_tokenizer_dir)
    assert tok.kind == TokenizerKind.huggingface
    assert tok.eod == raw.token_to_id("<|endoftext|>")
    assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True)
    expected = [raw.encode(t, add_special_tokens=False).ids for t in TEXTS]
    assert tok.encode_batch(TEXTS) == expected
    assert [tok.encode(t) for t in TEXTS] == expected
    assert tok.eod not in tok.encode(TEXTS[1])  # literal special-token text stays text
    assert [tok.decode(ids) for ids in expected] == TEXTS


def test_megatron_kind_matches_huggingface(tiny_tokenizer_dir, megatron_dir):
    hf = load_tokenizer(tiny_tokenizer_dir)
    meg = load_tokenizer(megatron_dir)
    assert meg.kind == TokenizerKind.megatron
    assert meg.encode_batch(TEXTS) == hf.encode_batch(TEXTS)
    assert (meg.eod, meg.vocab_size) == (hf.eod, hf.vocab_size)
    assert meg.identity["sha256"] == hf.identity["sha256"]
    assert load_tokenizer(megatron_dir, kind="huggingface").kind == TokenizerKind.huggingface
    ids = meg.add_special_tokens(["<|srp_think|>"])
    assert ids == [hf.vocab_size] and meg.encode("<|srp_think|>") == hf.encode("<|srp_think|>")


def test_identity_is_content_not_path(tiny_tokenizer_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_tokenizer_dir, copy)
    a, b = load_tokenizer(tiny_tokenizer_dir), load_tokenizer(copy)
    assert a.identity["sha256"] == b.identity["sha256"] and a.identity["path"] != b.identity["path"]
    assert a.unique_identifiers == b.unique_identifiers
    b.add_special_tokens(["<|x|>"])
    assert b.identity["sha256"] != a.identity["sha256"] and b.identity["vocab_size"] == a.vocab_size + 1


def test_special_tokens_idempotent_and_saved(tiny_tokenizer_dir, tmp_path):
    tok = load_tokenizer(tiny_tokenizer_dir)
    n = tok.vocab_size
    ids = tok.add_special_tokens(["<|a|>", "<|b|>"])
    assert ids == [n, n + 1]
    assert tok.add_special_tokens(["<|b|>", "<|a|>"]) == [n + 1, n]
    assert {n, n + 1, tok.eod} <= tok.special_token_ids()
    tok.save(str(tmp_path / "ext"))
    back = load_tokenizer(str(tmp_path / "ext"))
    assert (back.token_to_id("<|a|>"), back.token_to_id("<|b|>"), back.vocab_size) == (n, n + 1, n + 2)
    assert back.identity["sha256"] == tok.identity["sha256"]
    assert not {n, n + 1} & set(back.encode("<|a|><|b|> <|a|>"))
    assert back.decode([n, *back.encode(" hi"), n + 1]) == "<|a|> hi<|b|>"


@pytest.mark.parametrize("vocab", [255, 65499, 65500, 200_000])
def test_dtype_for_vocab_matches_megatron(vocab):
    from megatron.core.datasets.indexed_dataset import DType

    assert dtype_for_vocab(vocab) == DType.optimal_dtype(vocab)


def test_eod_token_option_and_errors(tiny_tokenizer_dir, tmp_path):
    raw = _raw(tiny_tokenizer_dir)
    some = raw.id_to_token(300)
    assert load_tokenizer(tiny_tokenizer_dir, eod_token=some).eod == 300
    with pytest.raises(ValueError, match="eod_token '<nope>' is not a token"):
        load_tokenizer(tiny_tokenizer_dir, eod_token="<nope>")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="tokenizer.path is empty"):
        load_tokenizer("")
    no_eos = str(tmp_path / "no_eos")
    shutil.copytree(tiny_tokenizer_dir, no_eos)
    with open(os.path.join(no_eos, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)
    with pytest.raises(ValueError, match="has no EOS token"):
        load_tokenizer(no_eos)


def test_train_bpe_tokenizer(tmp_path):
    path = train_bpe_tokenizer(["aaa bbb ccc " * 50, "abc cab"], str(tmp_path / "t"), vocab_size=300, eod_token="<e>")
    tok = load_tokenizer(path)
    assert tok.eod == 0 and tok.vocab_size <= 300
    assert tok.decode(tok.encode("aaa cab é")) == "aaa cab é"  # byte-level: any text round-trips
    assert np.all(np.array(tok.encode("aaa bbb")) < tok.vocab_size)
