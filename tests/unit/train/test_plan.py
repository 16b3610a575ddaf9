"""``srp plan``: memory terms against hand calculations and published formulas, verdicts for known layouts."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from srp_megatron.errors import SRPError
from srp_megatron.train.gpus import GIB, GPUS, get_gpu
from srp_megatron.train.model import ModelConfig, analytic_parameter_count, load_model_preset
from srp_megatron.train.parallel import ParallelConfig
from srp_megatron.train.plan import (
    bytes_per_parameter,
    chunks_in_flight,
    estimate,
    flops_per_token,
    format_report,
    layer_activation_bytes,
)
from srp_megatron.train.precision import DType, PrecisionConfig, load_precision_preset

N_SMOLLM2 = 1_711_376_384  # published parameter count of SmolLM2-1.7B


def model(name: str, **overrides) -> ModelConfig:
    """A model preset with overrides."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), load_model_preset(name), overrides))


def precision(name: str, **overrides) -> PrecisionConfig:
    """A precision preset with overrides."""
    merged = OmegaConf.merge(OmegaConf.structured(PrecisionConfig), load_precision_preset(name), overrides)
    return OmegaConf.to_object(merged)


BF16 = precision("bf16")
LLAMA70_H100 = ParallelConfig(tensor_model_parallel_size=4, pipeline_model_parallel_size=8,
                              virtual_pipeline_model_parallel_size=5, sequence_parallel=True,
                              use_distributed_optimizer=True)

# -- published layouts ---------------------------------------------------------------------------


def test_smollm2_tp1_pp1_on_8_h100_fits():
    r = estimate(model("smollm2-1.7b"), BF16, ParallelConfig(use_distributed_optimizer=True), seq_length=4096,
                 micro_batch_size=2, global_batch_size=512, gpus=8, gpu="h100-80gb")
    assert r.verdict == "fits" and r.reasons == []
    assert r.parameters == N_SMOLLM2 and r.layout["DP"] == 8


def test_llama3_70b_tp4_pp8_vpp5_on_64_h100_fits_with_fp8():
    # Megatron-Bridge's LLAMA3_70B_PRETRAIN_CONFIG_H100_FP8_CS: TP4 PP8 VPP5, seq 8192, mbs 1, gbs 128.
    r = estimate(model("llama3-70b"), precision("fp8-h100-tensorwise"), LLAMA70_H100, seq_length=8192,
                 micro_batch_size=1, global_batch_size=128, gpus=64, gpu="h100-80gb")
    assert r.verdict == "fits", format_report(r)
    assert [s.stage for s in r.stages] == ["first stage", "last stage"]
    assert r.peak.stage == "first stage"  # the interleaved schedule's warmup fills rank 0 most


def test_llama3_70b_bf16_h100_layout_fits():
    # Megatron-Bridge's BF16 H100 layout for 70B: TP4 PP4 CP2 VPP5.
    par = ParallelConfig(tensor_model_parallel_size=4, pipeline_model_parallel_size=4, context_parallel_size=2,
                         virtual_pipeline_model_parallel_size=5, sequence_parallel=True,
                         use_distributed_optimizer=True)
    r = estimate(model("llama3-70b"), BF16, par, seq_length=8192, micro_batch_size=1, global_batch_size=128,
                 gpus=64, gpu="h100-80gb")
    assert r.verdict == "fits", format_report(r)


def test_llama3_70b_tp1_pp1_on_8_gpus_does_not_fit():
    r = estimate(model("llama3-70b"), BF16, ParallelConfig(use_distributed_optimizer=True), seq_length=8192,
                 micro_batch_size=1, global_batch_size=128, gpus=8, gpu="h100-80gb")
    assert r.verdict == "does not fit"
    assert any("weights + gradients + optimizer state alone" in reason for reason in r.reasons)
    assert r.peak.weights == 2 * 70_553_706_496


def test_activation_heavy_layout_suggests_recompute():
    r = estimate(model("llama3-8b"), BF16, ParallelConfig(use_distributed_optimizer=True), seq_length=8192,
                 micro_batch_size=4, global_batch_size=128, gpus=8, gpu="h100-80gb")
    assert r.verdict != "fits" and any("training.recompute=full" in reason for reason in r.reasons)
    full = estimate(model("llama3-8b"), BF16, ParallelConfig(use_distributed_optimizer=True), seq_length=8192,
                    micro_batch_size=4, global_batch_size=128, gpus=8, gpu="h100-80gb", recompute="full")
    assert full.peak.activations == r.activations_by_recompute["full"] < r.peak.activations


def test_invalid_layout_is_an_error_not_a_verdict():
    with pytest.raises(SRPError, match="does not divide the query groups"):
        estimate(model("llama3-8b"), BF16, ParallelConfig(tensor_model_parallel_size=16), seq_length=8192,
                 micro_batch_size=1, global_batch_size=128, gpus=16, gpu="h100-80gb")


# -- memory terms against hand calculations ---------------------------------------------------------


def test_bytes_per_parameter_is_megatrons_table():
    # Megatron-LM docs (distributed optimizer): fp32 16 B, bf16 params + fp32 grads 18 B, 16-bit grads 20 B.
    assert bytes_per_parameter(PrecisionConfig(dtype=DType.fp32)) == (4, 4, 8)
    assert bytes_per_parameter(BF16) == (2, 4, 12)
    assert bytes_per_parameter(precision("bf16", grad_reduce_in_fp32=False)) == (2, 2, 16)


@pytest.mark.parametrize("distributed", [True, False])
def test_static_memory_of_a_single_stage(distributed):
    r = estimate(model("smollm2-1.7b"), BF16, ParallelConfig(use_distributed_optimizer=distributed),
                 seq_length=2048, micro_batch_size=1, global_batch_size=64, gpus=8, gpu="h100-80gb")
    s = r.peak
    assert (s.parameters, s.weights, s.gradients) == (N_SMOLLM2, 2 * N_SMOLLM2, 4 * N_SMOLLM2)
    assert s.optimizer == (12 * N_SMOLLM2 // 8 if distributed else 12 * N_SMOLLM2)
    assert s.overhead == 3 * GIB and s.fp8_weight_cache == 0
    # Logits of one microbatch: bf16 logits and their FP32 softmax, [2048 tokens x 49152].
    assert s.logits == 2048 * 49152 * (2 + 4)


def test_tied_embedding_is_copied_to_the_last_pipeline_stage():
    m = model("smollm2-1.7b")
    r = estimate(m, BF16, ParallelConfig(pipeline_model_parallel_size=2), seq_length=2048, micro_batch_size=1,
                 global_batch_size=8, gpus=2, gpu="h100-80gb")
    layer = 4 * 2048**2 + 3 * 2048 * 8192 + 2 * 2048  # attention + SwiGLU MLP + two RMSNorms
    first, last = r.stages
    assert first.parameters == 12 * layer + 49152 * 2048
    assert last.parameters == 12 * layer + 2048 + 49152 * 2048


def gpt3_like(**overrides) -> ModelConfig:
    """The model of Korthikanti et al.: LayerNorm, GELU MLP of 4h, MHA, dropout everywhere."""
    base = dict(num_layers=8, hidden_size=1024, ffn_hidden_size=4096, num_attention_heads=16,
                normalization="LayerNorm", activation="gelu", add_bias_linear=True, hidden_dropout=0.1,
                attention_dropout=0.1, vocab_size=51200, tie_embeddings=True)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), {**base, **overrides}))


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_layer_activations_follow_korthikanti(t):
    m, s, b, h, a = gpt3_like(), 2048, 2, 1024, 16

    def act(sp: bool, selective: bool = False) -> float:
        par = ParallelConfig(tensor_model_parallel_size=t, sequence_parallel=sp)
        return layer_activation_bytes(m, BF16, par, seq_length=s, micro_batch_size=b, flash_attention=False,
                                      recompute_core_attention=selective)

    # Equations 2-4 of the paper: no SP, SP, SP with selective recomputation.
    assert act(False) == pytest.approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))
    assert act(True) == pytest.approx(s * b * h * (34 / t + 5 * a * s / (h * t)))
    assert act(True, selective=True) == pytest.approx(34 * s * b * h / t)


def test_flash_attention_keeps_no_score_matrix():
    m, par = gpt3_like(attention_dropout=0.0), ParallelConfig()
    flash = layer_activation_bytes(m, BF16, par, seq_length=4096, micro_batch_size=1, flash_attention=True)
    eager = layer_activation_bytes(m, BF16, par, seq_length=4096, micro_batch_size=1, flash_attention=False)
    assert eager - flash == pytest.approx(2 * 16 * 4096**2)  # bf16 softmax output, a x s x s


def test_interleaved_schedule_in_flight_layers_follow_korthikanti():
    # Rank 0 of the interleaved schedule holds L (1 + (p - 1) / (p v)) layers of activations.
    L, p, v = 80, 8, 5
    par = ParallelConfig(pipeline_model_parallel_size=p, virtual_pipeline_model_parallel_size=v)
    assert chunks_in_flight(par, 0, num_microbatches=64) * L // (p * v) == L * (1 + (p - 1) / (p * v))
    plain = ParallelConfig(pipeline_model_parallel_size=p)
    assert chunks_in_flight(plain, 0, num_microbatches=64) * L // p == L  # 1F1B: p microbatches of L/p layers
    assert chunks_in_flight(plain, p - 1, num_microbatches=64) == 1
    assert chunks_in_flight(plain, 0, num_microbatches=3) == 3  # fewer microbatches than stages


def test_fp8_keeps_gemm_inputs_in_one_byte():
    m, par = model("llama3-8b"), ParallelConfig()
    bf16 = layer_activation_bytes(m, BF16, par, seq_length=1, micro_batch_size=1)
    fp8 = layer_activation_bytes(m, BF16, par, seq_length=1, micro_batch_size=1, fp8_layer=True)
    h, q, f = 4096, 4096, 14336
    # QKV, fc1 and fc2 inputs drop from 2 bytes to 1; the projection's FP8 input is kept beside its bf16 source.
    assert bf16 - fp8 == (h + h + f) - q


def test_flops_per_token_equals_megatron_lm_formula():
    m, s = model("llama3-8b"), 8192
    V, L, h, a, g, f = 128256, 32, 4096, 32, 8, 14336
    # Megatron-LM training.num_floating_point_operations, per token (causal attention, SwiGLU, GQA).
    megatron = 12 * L * h * h * ((1 + g / a + s / h / 2) + (f / h) * 1.5) + 6 * V * h
    counts = analytic_parameter_count(m, V)
    assert flops_per_token(m, counts, s, V) == pytest.approx(megatron, rel=1e-12)


def test_throughput_uses_the_fp8_peak_and_the_mfu():
    h100 = get_gpu("h100-80gb")
    kw = dict(seq_length=8192, micro_batch_size=1, global_batch_size=128, gpus=64, gpu="h100-80gb", mfu=0.5)
    fp8 = estimate(model("llama3-70b"), precision("fp8-h100-tensorwise"), LLAMA70_H100, **kw)
    assert fp8.peak_tflops == h100.fp8_tflops
    assert fp8.tokens_per_s == pytest.approx(0.5 * h100.fp8_tflops * 1e12 * 64 / fp8.flops_per_token)
    assert fp8.step_time_s == pytest.approx(128 * 8192 / fp8.tokens_per_s)
    bf16 = estimate(model("llama3-70b"), BF16, LLAMA70_H100, **kw)
    assert bf16.tokens_per_s == pytest.approx(fp8.tokens_per_s * h100.bf16_tflops / h100.fp8_tflops)


def test_gpu_table_is_consistent():
    for spec in GPUS.values():
        assert spec.memory_gib > 0 and spec.bf16_tflops > 0
        assert (spec.fp8_tflops is not None) == spec.supports_fp8
        assert (spec.fp4_tflops is not None) == spec.supports_mx_formats


# -- the command --------------------------------------------------------------------------------


def run_plan(argv: list[str]) -> int:
    """``srp plan ARGV`` through the command's own parser (as srp_megatron.cli wires it)."""
    import argparse

    from srp_megatron.cli import plan

    parser = argparse.ArgumentParser(prog="srp plan")
    plan.add_arguments(parser)
    return plan.main(parser.parse_args(argv))


def test_srp_plan_command_prints_table_and_json(capsys):
    args = ["tiny-cpu", "model.preset=smollm2-1.7b", "precision.preset=bf16",
            "parallel.use_distributed_optimizer=true", "training.seq_length=2048", "training.global_batch_size=64",
            "data.paths=[unused]",
            "--gpus", "8", "--gpu", "h100-80gb"]
    assert run_plan(args) == 0
    out = capsys.readouterr().out
    assert "verdict: FITS" in out and "parameters: 1.711 B" in out
    assert run_plan([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] == N_SMOLLM2 and report["verdict"] == "fits"
    assert report["stages"][0]["total"] == sum(v for k, v in report["stages"][0].items()
                                               if k not in ("stage", "parameters", "total"))
    assert run_plan(["tiny-cpu", "model.preset=llama3-70b", "data.paths=[unused]", "precision.preset=bf16",
                     "training.micro_batch_size=1", "training.global_batch_size=64",
                     "--gpus", "8"]) == 1


def test_plan_reads_the_vocabulary_of_the_rendered_data(capsys, tiny_tokenizer_dir, srp_prefix):
    """A config without model.vocab_size (tiny-cpu) is planned with the tokenizer's vocabulary from PREFIX.json,
    as srp pretrain builds it; the count equals the real GPTModel's for that vocabulary."""
    import os

    from tokenizers import Tokenizer

    from srp_megatron.train.model import count_parameters_meta

    with pytest.raises(SRPError, match="model.vocab_size is null and data.paths names no rendered dataset"):
        run_plan(["tiny-cpu", "data.paths=[unused]", "--gpus", "1"])
    assert run_plan(["tiny-cpu", f"data.paths=[{srp_prefix}]", "--gpus", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    vocab = Tokenizer.from_file(os.path.join(tiny_tokenizer_dir, "tokenizer.json")).get_vocab_size()
    assert report["padded_vocab"] == -(-vocab // 64) * 64
    assert report["parameters"] == count_parameters_meta(model("tiny"), vocab)
