"""The upstream providers build datasets from our config: Megatron-LM's pretrain() and Megatron-Bridge."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import types

import pytest
import torch
from megatron.core.datasets.utils import get_blend_from_list

from srp_megatron.data.dataset import ReflectionGPTDataset
from srp_megatron.data.integrations.bridge import HAVE_BRIDGE, ReflectionGPTDatasetProvider
from srp_megatron.data.integrations.megatron_lm import extra_args_provider, train_valid_test_datasets_provider
from srp_megatron.errors import SRPError

SIZES = [40, 4, 4]


def _same_samples(a, b) -> None:
    assert len(a) == len(b)
    for idx in range(len(a)):
        x, y = a[idx], b[idx]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x if k != "dataset_id")


def megatron_lm_args(prefixes: list[str], cache: str, flags: list[str]) -> argparse.Namespace:
    """Megatron-LM's parsed arguments (the data ones pretrain_gpt.py reads) plus our ``--srp-*`` flags."""
    args = extra_args_provider(argparse.ArgumentParser()).parse_args(flags)
    data_path = prefixes if len(prefixes) == 1 else [x for p in prefixes for x in ("1", p)]
    megatron = dict(
        seed=7, seq_length=31, data_path=data_path, split="90,5,5", data_cache_path=cache, mmap_bin_files=True,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=True,
        create_attention_mask_in_dataloader=True, num_dataset_builder_threads=1, mid_level_dataset_surplus=0.005,
        allow_ambiguous_pad_tokens=False, dataloader_fast_cache_load=False, dataloader_defer_npy_index_mmap=False,
        per_dataset_sequences_path=None, context_parallel_size=1, data_parallel_size=1,
        tensor_model_parallel_size=1, sequence_parallel=False, hybrid_context_parallel=False,
        multiple_validation_sets=None, full_validation=None, object_storage_cache_path=None,
        mock_data=False, sft=False, fim_data=False,
    )
    return argparse.Namespace(**megatron, **vars(args))


@pytest.fixture
def fake_megatron_training(monkeypatch, tokenizer):
    """``megatron.training`` as pretrain() leaves it: global args and tokenizer (megatron-core 0.16 lacks it)."""
    state = {}
    training = types.ModuleType("megatron.training")
    training.get_args = lambda: state["args"]
    training.get_tokenizer = lambda: tokenizer
    training.print_rank_0 = lambda message: None
    utils = types.ModuleType("megatron.training.utils")
    # Megatron-LM's --data-path handling: [weight prefix ...] -> (prefixes, weights)
    utils.get_blend_and_blend_per_split = lambda args: (get_blend_from_list(args.data_path), None)
    monkeypatch.setitem(sys.modules, "megatron.training", training)
    monkeypatch.setitem(sys.modules, "megatron.training.utils", utils)
    from megatron.core import parallel_state

    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(parallel_state, "is_pipeline_first_stage", lambda ignore_virtual=True, vp_stage=None: True)
    return state


def test_megatron_lm_provider_builds_our_datasets(rendered, fake_megatron_training, make_config, build, tmp_path):
    flags = ["--srp-loss-policy", "reflection_context", "--srp-loss-override", "unsafe_text=mask",
             "--srp-return-span-types"]
    fake_megatron_training["args"] = megatron_lm_args([rendered.prefix], str(tmp_path / "lm_cache"), flags)
    assert train_valid_test_datasets_provider.is_distributed is True
    built = train_valid_test_datasets_provider(SIZES)
    config = built[0].config
    assert config.loss_policy.masked == ["reflection", "reflection_marker", "unsafe_text"]
    assert config.return_span_types and config.eod_mask_loss and config.check_tokenizer
    direct = build(ReflectionGPTDataset, make_config(
        rendered.prefix, split="90,5,5", eod_mask_loss=True, return_span_types=True,
        loss_policy={"preset": "context_only"}), SIZES)
    for ours, reference in zip(built, direct, strict=True):
        assert isinstance(ours, ReflectionGPTDataset)
        _same_samples(ours, reference)


def test_megatron_lm_provider_blends_data_path_weights(rendered, rendered_b, fake_megatron_training, process_group,
                                                       tmp_path):
    fake_megatron_training["args"] = megatron_lm_args([rendered.prefix, rendered_b.prefix], str(tmp_path), [])
    train, valid, _ = train_valid_test_datasets_provider(SIZES)
    assert train.weights == pytest.approx([0.5, 0.5]) and len(train) == SIZES[0]
    assert {int(train[i]["dataset_id"]) for i in range(len(train))} == {0, 1}
    assert train.datasets[0].config.loss_policy.trains_all


def test_megatron_lm_flags():
    args = extra_args_provider(argparse.ArgumentParser()).parse_args([])
    assert (args.srp_loss_policy, args.srp_loss_override, args.srp_return_span_types, args.srp_check_tokenizer) == (
        "paper", [], False, True)
    args = extra_args_provider(argparse.ArgumentParser()).parse_args(["--srp-no-check-tokenizer"])
    assert args.srp_check_tokenizer is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mock_data": True}, "--mock-data: not supported"),
        ({"srp_loss_override": ["unsafe_text"]}, "'unsafe_text' is not SPAN=ACTION"),
        ({"srp_loss_override": ["unsafe=mask"]}, "unknown span type 'unsafe'"),
    ],
)
def test_megatron_lm_errors(rendered, fake_megatron_training, tmp_path, change, message):
    args = megatron_lm_args([rendered.prefix], str(tmp_path), [])
    vars(args).update(change)
    fake_megatron_training["args"] = args
    with pytest.raises(SRPError, match=message):
        train_valid_test_datasets_provider(SIZES)


def test_megatron_lm_without_srp_flags(rendered, fake_megatron_training, tmp_path):
    args = megatron_lm_args([rendered.prefix], str(tmp_path), [])
    for name in ("srp_loss_policy", "srp_loss_override", "srp_return_span_types", "srp_check_tokenizer"):
        delattr(args, name)
    fake_megatron_training["args"] = args
    with pytest.raises(SRPError, match="pass extra_args_provider"):
        train_valid_test_datasets_provider(SIZES)


def test_bridge_provider_builds_our_datasets(rendered, tokenizer, make_config, build, tmp_path):
    provider = ReflectionGPTDatasetProvider(seq_length=31, blend=([rendered.prefix], None), split="90,5,5",
                                            random_seed=7, path_to_cache=str(tmp_path / "bridge_cache"),
                                            loss_policy="no_unsafe_text", num_workers=0)
    # Bridge's DatasetBuildContext: sample counts and the tokenizer it built
    context = types.SimpleNamespace(train_samples=SIZES[0], valid_samples=SIZES[1], test_samples=SIZES[2],
                                    tokenizer=tokenizer)
    built = provider.build_datasets(context)
    direct = build(ReflectionGPTDataset, make_config(rendered.prefix, split="90,5,5", loss_policy="no_unsafe_text"),
                   SIZES)
    for ours, reference in zip(built, direct, strict=True):
        _same_samples(ours, reference)
    # the fields Bridge's training loop reads from cfg.dataset
    names = {f.name for f in dataclasses.fields(provider)}
    assert {"dataloader_type", "num_workers", "data_sharding", "pin_memory", "persistent_workers",
            "create_attention_mask", "skip_getting_attention_mask_from_dataset", "tokenizer"} <= names


def test_bridge_provider_takes_the_tokenizer_bridge_set(rendered, tokenizer, tmp_path):
    provider = ReflectionGPTDatasetProvider(seq_length=31, blend=([rendered.prefix], None), split="100,0,0",
                                            path_to_cache=str(tmp_path))
    provider.tokenizer = tokenizer  # Bridge's setup: cfg.dataset.tokenizer = tokenizer
    context = types.SimpleNamespace(train_samples=10, valid_samples=0, test_samples=0, tokenizer=None)
    train = provider.build_datasets(context)[0]
    assert train.config.tokenizer is tokenizer and len(train) >= 10


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"seq_length": 0}, ValueError, "seq_length is 0"),
        ({"loss_policy": {"reflectoin": "mask"}}, SRPError, "unknown span type 'reflectoin'"),
        ({"loss_policy": 1}, ValueError, "give a preset name"),
    ],
)
def test_bridge_provider_rules(options, error, message):
    with pytest.raises(error, match=message):
        ReflectionGPTDatasetProvider(**{"seq_length": 31, **options})


def test_providers_import_without_the_upstream_packages():
    code = ("import sys; sys.modules['megatron.training'] = None; sys.modules['megatron.bridge'] = None; "
            "import srp_megatron.data.integrations.megatron_lm, srp_megatron.data.integrations.bridge as b; "
            "assert not b.HAVE_BRIDGE")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not HAVE_BRIDGE or ReflectionGPTDatasetProvider.__mro__[1].__module__.startswith("megatron.bridge")
