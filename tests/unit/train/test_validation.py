"""One test per layout rule: each impossible config is refused with a message naming the key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from srp_megatron.errors import SRPError
from srp_megatron.train.model import ModelConfig, load_model_preset
from srp_megatron.train.parallel import ParallelConfig
from srp_megatron.train.precision import DType, FP4Format, FP8Format, FP8Recipe, PrecisionConfig, load_precision_preset
from srp_megatron.train.validation import resolve_target, validate_layout


def model(name: str = "llama3-8b", **overrides) -> ModelConfig:
    """A model preset with overrides."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), load_model_preset(name), overrides))


def precision(name: str = "bf16", **overrides) -> PrecisionConfig:
    """A precision preset with overrides."""
    merged = OmegaConf.merge(OmegaConf.structured(PrecisionConfig), load_precision_preset(name), overrides)
    return OmegaConf.to_object(merged)


BF16 = precision("bf16")
FP8 = precision("fp8-h100-tensorwise")


def check(m=None, p=BF16, par=None, *, world=8, gpu="h100-80gb", seq=4096, mbs=1, gbs=64, **kw):
    """validate_layout with defaults that pass."""
    validate_layout(m or model(), p, par or ParallelConfig(use_distributed_optimizer=True), world_size=world,
                    gpu=gpu, seq_length=seq, micro_batch_size=mbs, global_batch_size=gbs, **kw)


def par(**kw) -> ParallelConfig:
    """A ParallelConfig with the distributed optimizer."""
    return ParallelConfig(use_distributed_optimizer=True, **kw)


def test_published_layouts_pass():
    check(model("smollm2-1.7b"), BF16, par(), world=8, seq=2048, mbs=4, gbs=512)
    check(model("llama3-8b"), FP8, par(context_parallel_size=2), world=8, seq=8192, gbs=128)
    check(model("llama3-70b"), FP8, par(tensor_model_parallel_size=4, pipeline_model_parallel_size=8,
                                         virtual_pipeline_model_parallel_size=5, sequence_parallel=True),
          world=64, seq=8192, gbs=128)
    check(model("tiny", vocab_size=1024), precision("fp32-cpu"), ParallelConfig(tensor_model_parallel_size=2),
          world=2, gpu="cpu", seq=64, mbs=2, gbs=8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        # TP divides heads and query groups
        (dict(m=model(num_attention_heads=32, num_query_groups=8), par=par(tensor_model_parallel_size=16), world=16),
         "tensor_model_parallel_size=16 does not divide the query groups"),
        (dict(m=model("smollm2-1.7b", num_attention_heads=32), par=par(tensor_model_parallel_size=3), world=3),
         "tensor_model_parallel_size=3 does not divide model.num_attention_heads=32"),
        # PP (x VPP) divides layers
        (dict(par=par(pipeline_model_parallel_size=3), world=3), r"num_layers=32 is not divisible by .* = 3 x 1"),
        (dict(par=par(pipeline_model_parallel_size=4, virtual_pipeline_model_parallel_size=3), world=8),
         r"= 4 x 3: choose PP \(x VPP\)"),
        # world size, batch sizes
        (dict(par=par(tensor_model_parallel_size=4), world=6), "world size 6 is not divisible by TP x PP x CP"),
        (dict(world=8, mbs=2, gbs=24), "global_batch_size=24 is not divisible by micro_batch_size x DP = 2 x 8"),
        (dict(par=par(pipeline_model_parallel_size=4, virtual_pipeline_model_parallel_size=2), world=8, gbs=6),
         r"interleaved pipeline needs the number of microbatches \(3\) divisible by pipeline_model_parallel_size=4"),
        (dict(mbs=0), "micro_batch_size=0"),
        # sequence and context parallelism
        (dict(par=par(sequence_parallel=True)), "sequence_parallel=true needs tensor_model_parallel_size > 1"),
        (dict(par=par(tensor_model_parallel_size=2, tp_comm_overlap=True)), "tp_comm_overlap=true needs"),
        (dict(par=par(context_parallel_size=4), seq=4100), r"seq_length=4100 is not divisible by 2 x context"),
        (dict(par=par(tensor_model_parallel_size=8, sequence_parallel=True), seq=4100),
         r"seq_length / CP = 4100 is not divisible by tensor_model_parallel_size=8"),
        # FP8 alignment
        (dict(m=model(ffn_hidden_size=14344), p=FP8), r"ffn_hidden_size / TP = 14344 divisible by 16"),
        (dict(m=model("tiny", hidden_size=72, num_attention_heads=4, kv_channels=16), p=FP8),
         "model.hidden_size = 72 divisible by 16"),
        (dict(p=FP8, seq=4100), r"tokens per GPU .* = 4100 divisible by 8"),
        (dict(p=precision(fp8="e4m3", fp8_recipe="mxfp8"), gpu="b200", m=model(ffn_hidden_size=14352)),
         r"ffn_hidden_size / TP = 14352 divisible by 32"),
        # GPU generation
        (dict(p=precision(fp8="e4m3", fp8_recipe="mxfp8")), r"fp8_recipe=mxfp8 needs Blackwell .* h100-80gb is 9.0"),
        (dict(p=precision(fp4="nvfp4"), gpu="h200-141gb"), r"fp4=nvfp4 needs Blackwell .* h200-141gb is 9.0"),
        (dict(p=FP8, gpu="a100-80gb"), "a100-80gb .* has no FP8 tensor cores"),
        # CPU
        (dict(gpu="cpu", par=par(context_parallel_size=2), world=2), "context_parallel_size=2: context parallelism"),
        (dict(gpu="cpu", p=precision(dtype="fp16")), "dtype=fp16 on CPU"),
        (dict(gpu="cpu", p=FP8), "fp8/fp4 needs Transformer Engine on a CUDA GPU"),
        (dict(gpu="cpu", par=par(tensor_model_parallel_size=2, sequence_parallel=True, tp_comm_overlap=True)),
         "tp_comm_overlap=true needs GPUs"),
        # cross-section precision rules
        (dict(p=FP8, par=ParallelConfig()), "fp8_param=true needs parallel.use_distributed_optimizer=true"),
        (dict(p=precision("fp8-h100-tensorwise", num_layers_at_start_in_bf16=5),
              par=par(pipeline_model_parallel_size=8), world=8), "num_layers_at_start_in_bf16=5 exceeds the 4"),
        (dict(par=par(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=4), world=8,
              recompute="full", recompute_num_layers=5), r"recompute_num_layers=5: must be in \[1, 4\]"),
    ],
)
def test_each_rule_is_refused_with_its_key(kwargs, match):
    with pytest.raises(SRPError, match=match):
        check(**kwargs)


def test_fp8_alignment_is_per_tensor_parallel_rank():
    check(m=model(ffn_hidden_size=14336), p=FP8, par=par(tensor_model_parallel_size=8))  # 1792 per rank
    with pytest.raises(SRPError, match=r"ffn_hidden_size / TP = 1800 divisible by 16"):
        check(m=model(ffn_hidden_size=14400), p=FP8, par=par(tensor_model_parallel_size=8))


def test_every_problem_is_listed_at_once():
    with pytest.raises(SRPError) as info:
        check(par=par(tensor_model_parallel_size=3, sequence_parallel=False), world=7, gpu="cpu", p=FP8)
    text = str(info.value)
    assert text.startswith("invalid training layout for cpu:\n  - ")
    assert "num_attention_heads" in text and "world size 7" in text and "Transformer Engine" in text


def test_parallel_config_rules():
    with pytest.raises(ValueError, match="interleaving needs VPP >= 2 and PP >= 2"):
        ParallelConfig(virtual_pipeline_model_parallel_size=2)
    with pytest.raises(ValueError, match="interleaving needs VPP >= 2"):
        ParallelConfig(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=1)
    with pytest.raises(ValueError, match="overlap_param_gather=true needs the distributed optimizer"):
        ParallelConfig(overlap_param_gather=True)
    with pytest.raises(ValueError, match="context_parallel_size=0"):
        ParallelConfig(context_parallel_size=0)


def test_unknown_gpu_lists_the_known_ones():
    with pytest.raises(SRPError, match="unknown GPU .*h100-80gb"):
        check(gpu="h100-96gb")


def test_blackwell_accepts_mx_formats():
    check(p=precision(fp8="e4m3", fp8_recipe="mxfp8"), gpu="b200")
    check(p=precision(fp4="nvfp4"), gpu="gb200")


def test_this_machine_without_cuda_gets_cpu_rules():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_target(None).is_cpu
    check(gpu=None, par=par(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2), world=2,
          p=precision("fp32-cpu"), m=model("tiny", num_layers=4))  # megatron's pipeline schedules run on CPU
    with pytest.raises(SRPError, match="dtype=fp16 on CPU"):
        check(gpu=None, p=precision(dtype="fp16"))


def test_enums_are_used_by_value():
    p = PrecisionConfig(dtype=DType.bf16, fp8=FP8Format.hybrid, fp8_recipe=FP8Recipe.blockwise, fp4=FP4Format.none)
    check(p=p)


def test_gpu_without_transformer_engine_refuses_sequence_and_context_parallelism(monkeypatch):
    """The local spec (torch norms, megatron's own attention) has neither, on a GPU too."""
    import srp_megatron.train.gpus as gpus
    import srp_megatron.train.validation as validation

    monkeypatch.setattr(gpus, "runtime_compute_capability", lambda: (9, 0))
    monkeypatch.setattr(validation, "te_available", lambda: False)
    with pytest.raises(SRPError, match="sequence_parallel=true .* set it false without Transformer Engine") as info:
        check(gpu=None, par=par(tensor_model_parallel_size=2, sequence_parallel=True, context_parallel_size=2))
    assert "context parallelism needs Transformer Engine attention on GPU; use 1 without" in str(info.value)
    check(gpu=None, par=par(tensor_model_parallel_size=2))
    # CPU runs swap in norms that support sequence parallelism (train/cpu.py); context parallelism stays refused.
    check(gpu="cpu", par=par(tensor_model_parallel_size=2, sequence_parallel=True), p=precision("fp32-cpu"))
