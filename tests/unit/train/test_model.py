"""Model presets, vocabulary padding, TransformerConfig mapping and parameter counts.

Parameter counts are checked three ways: the closed formula against the real megatron ``GPTModel``
(built on CPU for tiny models, on the meta device for the large presets) and against the counts
published for the Hugging Face checkpoints.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
from omegaconf import OmegaConf

from srp_megatron.config import load_config
from srp_megatron.config.loader import ConfigError, resolve_preset
from srp_megatron.errors import SRPError
from srp_megatron.train import model as model_mod
from srp_megatron.train.model import (
    Activation,
    ModelConfig,
    Normalization,
    analytic_parameter_count,
    build_gpt_model,
    build_transformer_config,
    count_parameters,
    count_parameters_meta,
    layer_spec,
    load_model_preset,
    model_preset_names,
    padded_vocab_size,
)
from srp_megatron.train.parallel import ParallelConfig
from srp_megatron.train.precision import DType, FP8Format, PrecisionConfig

warnings.filterwarnings("ignore", module="megatron")

LARGE = ["smollm2-1.7b", "qwen3-1.7b", "llama3-8b", "llama3-70b"]


def preset(name: str, **overrides) -> ModelConfig:
    """A preset as the root loader would merge it: preset values under the YAML's own keys."""
    merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), load_model_preset(name), overrides)
    return OmegaConf.to_object(merged)


FP32 = PrecisionConfig(dtype=DType.fp32)


def test_every_preset_file_loads_through_the_schema():
    names = model_preset_names()
    assert set(LARGE + ["tiny", "tiny-gqa"]) <= set(names)
    for name in names:
        cfg = load_config(ModelConfig, [resolve_preset(name, "model")])
        assert cfg.num_layers >= 1


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known presets in conf/model: .*llama3-8b"):
        load_model_preset("llama-9000")


def test_preset_name_is_recorded_and_yaml_keys_override_it():
    cfg = preset("smollm2-1.7b", num_layers=4)
    assert cfg.preset == "smollm2-1.7b" and cfg.num_layers == 4 and cfg.hidden_size == 2048


def test_paper_shape_of_smollm2():
    m = preset("smollm2-1.7b")
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.query_groups, m.ffn_hidden_size) == (
        24, 2048, 32, 32, 8192)
    assert m.normalization == Normalization.RMSNorm and m.norm_epsilon == 1e-5 and m.rotary_base == 130000
    assert m.activation == Activation.swiglu and m.tie_embeddings and m.vocab_size == 49152


@pytest.mark.parametrize("vocab", [1, 127, 128, 129, 1000, 49152, 128256, 151936])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_padded_vocab_is_the_smallest_multiple_of_divisor_times_tp(vocab, tp):
    m = preset("llama3-8b")
    padded = padded_vocab_size(m, tp, vocab)
    brute = next(v for v in range(vocab, vocab + 128 * tp + 1) if v % (128 * tp) == 0)
    assert padded == brute
    assert padded_vocab_size(m, tp, padded) == padded  # padding twice changes nothing


def test_padded_vocab_needs_a_vocabulary():
    with pytest.raises(SRPError, match="model.vocab_size is null"):
        padded_vocab_size(preset("tiny"), 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_query_groups=3), "num_query_groups=3: must divide num_attention_heads=4"),
        (dict(hidden_size=66), "set model.kv_channels"),
        (dict(num_layers=0), "model.num_layers=0"),
        (dict(rotary_percent=0.0), "rotary_percent"),
        (dict(hidden_dropout=1.0), "hidden_dropout"),
        (dict(vocab_size=0), "vocab_size=0"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, match):
    base = dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4)
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**base, **kwargs})


def test_missing_shape_is_reported_by_the_loader():
    with pytest.raises(ConfigError, match="hidden_size"):
        load_config(ModelConfig, overrides=["num_layers=2"])


# Published parameter counts of the Hugging Face checkpoints (model cards / safetensors metadata).
PUBLISHED = {
    "smollm2-1.7b": 1_711_376_384,
    "llama3-8b": 8_030_261_248,
    "llama3-70b": 70_553_706_496,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_analytic_count_matches_published_checkpoints(name):
    m = preset(name)
    assert analytic_parameter_count(m, m.vocab_size)["total"] == PUBLISHED[name]


def test_qwen3_count_matches_its_model_card():
    # Qwen3-1.7B card: 1.7B parameters, 1.4B without embeddings; untied it would be ~2.03B.
    m = preset("qwen3-1.7b")
    counts = analytic_parameter_count(m, m.vocab_size)
    assert round(counts["total"] / 1e9, 2) == 1.72 and round(counts["non_embedding"] / 1e9, 1) == 1.4
    untied = analytic_parameter_count(dataclasses.replace(m, tie_embeddings=False), m.vocab_size)
    assert round(untied["total"] / 1e9, 2) == 2.03


@pytest.mark.parametrize("name", LARGE)
def test_analytic_count_equals_megatron_gptmodel_on_meta_device(name):
    m = preset(name)
    vocab = padded_vocab_size(m, 1)
    assert count_parameters_meta(m, vocab) == analytic_parameter_count(m, vocab)["total"]


def _real_count(m: ModelConfig, vocab: int) -> int:
    import torch

    with model_mod._world_of_one():
        torch.manual_seed(0)
        gpt = build_gpt_model(m, FP32, ParallelConfig(), vocab_size=vocab, max_sequence_length=32, use_te=False)
        return count_parameters(gpt)


VARIANTS = {
    "tiny": {},
    "tiny-gqa": {},
    # Exercise the formula's other branches: LayerNorm (with bias), GELU MLP, linear biases, untied.
    "tiny-gpt2-like": dict(normalization="LayerNorm", activation="gelu", add_bias_linear=True, tie_embeddings=False),
    "tiny-qkv-bias": dict(add_qkv_bias=True, activation="squared_relu", qk_layernorm=True,
                          normalization="LayerNorm"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_analytic_count_equals_real_cpu_model(variant):
    base = "tiny-gqa" if variant == "tiny-gqa" else "tiny"
    m = preset(base, vocab_size=1000, **VARIANTS[variant])
    vocab = padded_vocab_size(m, 1)
    assert vocab == 1024
    assert _real_count(m, vocab) == analytic_parameter_count(m, vocab)["total"]


def test_tied_embedding_is_shared_once():
    m = preset("tiny", vocab_size=1024)
    tied = _real_count(m, 1024)
    untied = _real_count(dataclasses.replace(m, tie_embeddings=False), 1024)
    assert untied - tied == 1024 * m.hidden_size


def test_tiny_model_runs_forward_on_cpu():
    import torch

    m = preset("tiny-gqa", vocab_size=256)
    with model_mod._world_of_one():
        torch.manual_seed(0)
        gpt = build_gpt_model(m, FP32, ParallelConfig(), vocab_size=256, max_sequence_length=16, use_te=False)
        tokens = torch.randint(0, 256, (2, 16))
        mask = torch.ones(1, 1, 16, 16, dtype=torch.bool).triu(1)
        loss = gpt(tokens, torch.arange(16).expand(2, 16), mask, labels=tokens)
    assert loss.shape == (2, 16) and torch.isfinite(loss).all()


def test_transformer_config_carries_the_architecture():
    import torch.nn.functional as F

    m = preset("qwen3-1.7b")
    cfg = build_transformer_config(m, PrecisionConfig(), ParallelConfig(tensor_model_parallel_size=2),
                                   use_te=False)
    assert (cfg.num_layers, cfg.hidden_size, cfg.ffn_hidden_size) == (28, 2048, 6144)
    assert (cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels) == (16, 8, 128)
    assert cfg.normalization == "RMSNorm" and cfg.layernorm_epsilon == 1e-6 and cfg.qk_layernorm
    assert cfg.gated_linear_unit and cfg.activation_func is F.silu and not cfg.add_bias_linear
    assert cfg.bf16 and not cfg.fp16 and cfg.tensor_model_parallel_size == 2
    assert cfg.recompute_granularity is None


@pytest.mark.parametrize(
    ("recompute", "n", "expected"),
    [
        ("none", None, (None, None, None)),
        ("selective", None, ("selective", None, None)),
        ("full", None, ("full", "uniform", 1)),
        ("full", 3, ("full", "block", 3)),
    ],
)
def test_recompute_maps_to_megatron_fields(recompute, n, expected):
    cfg = build_transformer_config(preset("tiny", vocab_size=64, num_layers=4), FP32, ParallelConfig(),
                                   recompute=recompute, recompute_num_layers=n, use_te=False)
    assert (cfg.recompute_granularity, cfg.recompute_method, cfg.recompute_num_layers) == expected


def test_unknown_recompute_is_refused():
    with pytest.raises(SRPError, match="training.recompute='sometimes'"):
        build_transformer_config(preset("tiny", vocab_size=64), FP32, ParallelConfig(), recompute="sometimes",
                                 use_te=False)


def test_local_spec_without_te_and_fp8_refused_there():
    from megatron.core.transformer.transformer_layer import TransformerLayer

    m = preset("tiny", vocab_size=64)
    assert layer_spec(m, FP32, use_te=False).module is TransformerLayer
    fp8 = PrecisionConfig(dtype=DType.bf16, fp8=FP8Format.hybrid)
    with pytest.raises(SRPError, match="needs Transformer Engine"):
        layer_spec(m, fp8, use_te=False)


def test_unknown_transformer_config_field_is_refused_when_set():
    with pytest.raises(SRPError, match="has no TransformerConfig.not_a_field"):
        build_transformer_config(preset("tiny", vocab_size=64), FP32, ParallelConfig(), use_te=False,
                                 not_a_field=3)
    # An unset field this megatron-core lacks is dropped (how newer/older fields are guarded).
    cfg = build_transformer_config(preset("tiny", vocab_size=64), FP32, ParallelConfig(), use_te=False,
                                   not_a_field=None)
    assert not hasattr(cfg, "not_a_field")
