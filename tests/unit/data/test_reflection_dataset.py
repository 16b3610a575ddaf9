"""ReflectionGPTDataset against a brute-force reference and against megatron-core's stock GPTDataset."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from megatron.core.datasets.gpt_dataset import GPTDataset
from rendered_corpus import expected_sample, preset_actions, reference_window, write_documents

from srp_megatron.data.dataset import ReflectionGPTDataset
from srp_megatron.errors import SRPError
from srp_megatron.formats.rendered import SpanType

PRESETS = ["paper", "reflection_context", "no_unsafe_text", "context_only"]
VARIANTS = {
    "cached-masks": {},
    "eod-mask-loss": {"eod_mask_loss": True},
    "reset-positions": {"reset_position_ids": True, "reset_attention_mask": True, "eod_mask_loss": True},
    "no-extra-token": {"add_extra_token_to_sequence": False, "create_attention_mask": False},
}
R, M = SpanType.reflection, SpanType.reflection_marker


def _assert_sample(ours: dict, stock: dict, expected: dict) -> None:
    assert ours.keys() == stock.keys()
    for key, value in stock.items():  # everything but the loss mask is GPTDataset's, bit for bit
        if key != "loss_mask":
            assert torch.equal(ours[key], value), key
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
    np.testing.assert_array_equal(ours["tokens"].numpy(), expected["tokens"])
    np.testing.assert_array_equal(ours["labels"].numpy(), expected["labels"])
    np.testing.assert_array_equal(ours["loss_mask"].numpy(), expected["loss_mask"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("policy", PRESETS)
def test_samples_equal_brute_force_reference(rendered, make_config, build, policy, variant):
    options = VARIANTS[variant]
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, loss_policy=policy, **options))[0]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True, **options))[0]
    actions = preset_actions(policy)
    assert len(ours) == len(stock) > 50
    starts_inside = ends_inside = crosses = 0
    for idx in range(len(ours)):
        _assert_sample(ours[idx], stock[idx], expected_sample(rendered, stock, idx, actions))
        _, spans = reference_window(rendered, stock, idx)
        sample = int(stock.shuffle_index[idx])
        starts_inside += spans[0] == R
        ends_inside += spans[-1] == R
        crosses += stock.sample_index[sample][0] != stock.sample_index[sample + 1][0]
    # the windows the reference must cover: starting or ending inside a reflection, across documents
    assert min(starts_inside, ends_inside, crosses) > 0


def test_policy_applies_to_the_predicted_token(tmp_path, tokenizer, make_config, build):
    eod = tokenizer.eod
    T = SpanType.text
    # "a b <think> Safe </think> c EOD": one sample of 6 positions
    write_documents(str(tmp_path / "one"), tokenizer, [([10, 11, 20, 21, 22, 12, eod], [T, T, M, R, M, T, T])])
    config = make_config(str(tmp_path / "one"), sequence_length=6, loss_policy="reflection_context")
    (sample,) = build(ReflectionGPTDataset, config)[0]
    assert sample["tokens"].tolist() == [10, 11, 20, 21, 22, 12]
    # predicting <think>, Safe, </think> is masked; the position reading </think> learns "c"
    assert sample["loss_mask"].tolist() == [1, 0, 0, 0, 1, 1]


def test_span_types_are_those_of_the_labels(rendered, make_config, build):
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, return_span_types=True))[0]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True))[0]
    for idx in range(0, len(ours), 7):
        sample = ours[idx]
        assert sample.keys() - stock[idx].keys() == {"span_types"}
        assert sample["span_types"].dtype == torch.int64 and sample["span_types"].shape == (31,)
        np.testing.assert_array_equal(sample["span_types"], expected_sample(rendered, stock, idx, {})["span_types"])


def test_padded_last_validation_sample(rendered, make_config, build):
    options = {"split": "60,40,0", "drop_last_partial_validation_sequence": False, "loss_policy": "context_only"}
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, **options))[1]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True, **options))[1]
    padded = [i for i in range(len(stock)) if (reference_window(rendered, stock, i)[0] == stock._pad_token_id).any()]
    assert len(padded) == 1, "the last validation sample should be partial"
    for idx in padded + [0]:
        _assert_sample(ours[idx], stock[idx], expected_sample(rendered, stock, idx, preset_actions("context_only")))


def test_batch_padding_sample_has_no_loss(rendered, make_config, build):
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, loss_policy="reflection_context"))[0]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True))[0]
    padding, reference = ours[None], stock[None]
    assert not padding["loss_mask"].any()
    assert {k: (v.dtype, v.shape) for k, v in padding.items()} == {k: (v.dtype, v.shape) for k, v in reference.items()}


def test_cached_masks_are_not_modified(rendered, make_config, build):
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, loss_policy="context_only"))[0]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True))[0]
    for idx in (0, 1, 2):
        ours[idx], stock[idx]
    assert ours.masks_and_position_ids_are_cached  # GPTDataset's reuse of the masks is kept
    assert torch.equal(ours.cached_loss_mask, stock.cached_loss_mask)
    assert torch.equal(ours.cached_attention_mask, stock.cached_attention_mask)


def test_collates_like_gpt_dataset(rendered, make_config, build):
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, loss_policy="no_unsafe_text"))[0]
    stock = build(GPTDataset, make_config(rendered.prefix, stock=True))[0]
    collate = torch.utils.data.default_collate
    ours_batch, stock_batch = collate([ours[i] for i in range(4)]), collate([stock[i] for i in range(4)])
    expected = {"tokens": (torch.int64, (4, 31)), "labels": (torch.int64, (4, 31)),
                "loss_mask": (torch.float32, (4, 31)), "position_ids": (torch.int64, (4, 31)),
                "attention_mask": (torch.bool, (4, 1, 31, 31))}
    assert {k: (v.dtype, tuple(v.shape)) for k, v in ours_batch.items()} == expected
    assert {k: (v.dtype, tuple(v.shape)) for k, v in stock_batch.items()} == expected


def test_pickles_for_dataloader_workers(rendered, make_config, build):
    ours = build(ReflectionGPTDataset, make_config(rendered.prefix, loss_policy="reflection_context"))[0]
    copy = pickle.loads(pickle.dumps(ours))
    for idx in (0, 5, len(ours) - 1):
        a, b = ours[idx], copy[idx]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(pickle.dumps(ours._spans)) < 500  # the span map is reopened, not copied


def test_same_samples_across_builds_and_cache_reuse(rendered, make_config, build, tmp_path):
    def samples(config):
        dataset = build(ReflectionGPTDataset, config)[0]
        return [dataset[i]["tokens"].tolist() + dataset[i]["loss_mask"].tolist() for i in range(len(dataset))]

    first = samples(make_config(rendered.prefix, loss_policy="context_only"))
    cache = sorted((tmp_path / "cache").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in cache]
    assert samples(make_config(rendered.prefix, loss_policy="context_only")) == first  # loaded from the cache
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "cache").iterdir())] == mtimes
    deferred = make_config(rendered.prefix, loss_policy="context_only", defer_npy_index_mmap=True)
    assert samples(deferred) == first  # index files mapped on first access
    fresh = make_config(rendered.prefix, loss_policy="context_only", path_to_cache=str(tmp_path / "other"))
    assert samples(fresh) == first  # rebuilt from scratch


def test_cache_key_covers_indices_not_policy(rendered, make_config, build):
    def key(**options):
        return build(ReflectionGPTDataset, make_config(rendered.prefix, **options))[0].unique_description_hash

    base = key()
    assert key(loss_policy="context_only") == base  # one index cache, one sample stream for all policies
    assert key(return_span_types=True) == base
    assert key(add_extra_token_to_sequence=False) != base
    assert key(drop_last_partial_validation_sequence=False) != base
    assert key(sequence_length=29) != base


def test_corrupt_span_code_is_reported(tmp_path, tokenizer, make_config, build):
    eod, T = tokenizer.eod, SpanType.text
    write_documents(str(tmp_path / "bad"), tokenizer, [([5, 6, 7, 8, eod], [T, T, 9, T, T])])
    ours = build(ReflectionGPTDataset, make_config(str(tmp_path / "bad"), sequence_length=4,
                                                   loss_policy="reflection_context"))[0]
    with pytest.raises(SRPError, match=r"bad_spans\.bin.*span code 9"):
        ours[0]
