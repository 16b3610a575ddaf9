"""Precision presets and their mapping onto megatron-core's config dataclasses."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from srp_megatron.config import load_config
from srp_megatron.config.loader import ConfigError, resolve_preset
from srp_megatron.train.precision import (
    DType,
    FP4Format,
    FP8Format,
    FP8Recipe,
    PrecisionConfig,
    load_precision_preset,
    precision_preset_names,
)

warnings.filterwarnings("ignore", module="megatron")

PRESETS = ["bf16", "fp32-cpu", "fp8-h100-tensorwise", "fp8-delayed", "fp8-blockwise"]


def load(name: str) -> PrecisionConfig:
    """A preset through the typed loader (unknown keys and bad values would fail here)."""
    return load_config(PrecisionConfig, [resolve_preset(name, "precision")])


def test_every_preset_is_packaged_and_loads():
    assert set(PRESETS) <= set(precision_preset_names())
    for name in precision_preset_names():
        load(name)


def test_h100_fp8_preset_is_hybrid_tensorwise_with_bf16_ends():
    p = load("fp8-h100-tensorwise")
    assert (p.dtype, p.fp8, p.fp8_recipe) == (DType.bf16, FP8Format.hybrid, FP8Recipe.tensorwise)
    assert p.first_last_layers_bf16 and (p.num_layers_at_start_in_bf16, p.num_layers_at_end_in_bf16) == (1, 1)
    assert p.fp8_param


def test_delayed_preset_is_conservative():
    p = load("fp8-delayed")
    assert p.fp8_recipe == FP8Recipe.delayed and not p.first_last_layers_bf16 and not p.fp8_param
    assert p.fp8_amax_history_len == 1024 and p.fp8_amax_compute_algo.value == "max"


def test_preset_dict_records_its_name():
    assert load_precision_preset("fp8-blockwise")["preset"] == "fp8-blockwise"
    with pytest.raises(ConfigError, match="known presets in conf/precision"):
        load_precision_preset("fp6")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(fp8=FP8Format.hybrid, fp4=FP4Format.nvfp4), "choose one"),
        (dict(fp8_param=True), "fp8_param=true needs FP8"),
        (dict(dtype=DType.fp32, fp8=FP8Format.hybrid), "dtype=fp32 with FP8/FP4"),
        (dict(fp8=FP8Format.hybrid, fp8_recipe=FP8Recipe.delayed, first_last_layers_bf16=True),
         "not supported with fp8_recipe=delayed"),
        (dict(num_layers_at_start_in_bf16=-1), "num_layers_at_start_in_bf16=-1"),
        (dict(fp8_amax_history_len=0), "fp8_amax_history_len=0"),
    ],
)
def test_precision_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrecisionConfig(**kwargs)


def test_bad_enum_value_names_the_key():
    with pytest.raises(ConfigError, match="fp8_recipe"):
        load_config(PrecisionConfig, overrides=["fp8=hybrid", "fp8_recipe=fancy"])


@pytest.mark.parametrize("name", PRESETS)
def test_kwargs_are_accepted_by_megatron_transformer_config(name):
    # megatron-core runs its own precision checks in TransformerConfig.__post_init__.
    from megatron.core.transformer import TransformerConfig

    p = load(name)
    kwargs = p.transformer_config_kwargs()
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    assert set(kwargs) <= fields
    cfg = TransformerConfig(num_layers=4, hidden_size=64, num_attention_heads=4, params_dtype=p.torch_dtype(),
                            **kwargs)
    assert cfg.bf16 == (p.dtype == DType.bf16) and cfg.fp16 == (p.dtype == DType.fp16)
    assert cfg.fp8 == (None if p.fp8 == FP8Format.none else p.fp8.value)
    if p.uses_fp8:
        assert cfg.fp8_recipe == p.fp8_recipe.value and cfg.fp8_param == p.fp8_param
        assert cfg.first_last_layers_bf16 == p.first_last_layers_bf16


def test_nvfp4_maps_to_megatron_fp4_fields():
    kwargs = PrecisionConfig(fp4=FP4Format.nvfp4).transformer_config_kwargs()
    assert kwargs["fp4"] == "e2m1" and kwargs["fp4_recipe"] == "nvfp4" and "fp8" not in kwargs


def test_ddp_kwargs_are_megatron_fields():
    from megatron.core.distributed import DistributedDataParallelConfig

    p = load("fp8-h100-tensorwise")
    ddp = DistributedDataParallelConfig(use_distributed_optimizer=True, **p.ddp_config_kwargs())
    assert ddp.grad_reduce_in_fp32 and ddp.fp8_param_gather


def test_torch_dtypes():
    import torch

    assert [PrecisionConfig(dtype=d).torch_dtype() for d in DType] == [torch.float32, torch.bfloat16, torch.float16]
    assert PrecisionConfig(fp8=FP8Format.e4m3, fp8_recipe=FP8Recipe.mxfp8).needs_blackwell
    assert not load("fp8-h100-tensorwise").needs_blackwell
