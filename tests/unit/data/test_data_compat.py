"""megatron-core version guards, checked against the installed megatron-core."""

from __future__ import annotations

import inspect

import numpy as np
from megatron.core.datasets.gpt_dataset import GPTDataset
from rendered_corpus import reference_window

from srp_megatron.data import compat
from srp_megatron.data.dataset import ReflectionGPTDataset


def test_query_arity_matches_the_installed_gpt_dataset():
    # Independent evidence: does the installed GPTDataset.__getitem__ unpack per-document lengths?
    unpacks_three = "text, _, document_lengths = self._query_document_sample_shuffle_indices" in inspect.getsource(
        GPTDataset.__getitem__
    )
    assert compat.query_returns_document_lengths() == unpacks_three
    result = compat.query_result(np.arange(3), np.arange(1), [3])
    assert len(result) == (3 if unpacks_three else 2)


def test_config_fields_are_the_constructor_fields():
    fields = compat.gpt_config_fields()
    assert {"eod_mask_loss", "sequence_length", "blend", "tokenizer"} <= fields
    assert "token_dtype_code" not in fields and "split_matrix" not in fields  # init=False


def test_document_lengths_of_the_019_query(rendered, make_config, build, monkeypatch):
    """The three-value query of megatron-core 0.19: per-document token counts before padding."""
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix))[0]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True))[0]
    monkeypatch.setattr(compat, "query_returns_document_lengths", lambda: True)
    for idx in range(len(ours)):
        text, document_ids, lengths = ours._query_document_sample_shuffle_indices(idx)
        sample = int(stock.shuffle_index[idx])
        (beg, beg_off), (end, end_off) = stock.sample_index[sample].tolist(), stock.sample_index[sample + 1].tolist()
        docs = stock.document_index[beg : end + 1].tolist()
        want = [len(rendered.tokens[d]) for d in docs]
        want[0] -= beg_off
        want[-1] = end_off + 1 - (beg_off if len(docs) == 1 else 0)
        assert document_ids.tolist() == docs and lengths == want
        np.testing.assert_array_equal(text, reference_window(rendered, stock, idx)[0])
