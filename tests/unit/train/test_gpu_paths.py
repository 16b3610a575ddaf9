"""The GPU-only paths of ``srp pretrain`` checked where a CPU can check them: the settings the driver hands
megatron-core (against Megatron-LM's rules and the installed signatures), context-parallel slicing across
real process groups, resharding refusals, and the GPU table behind MFU."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys

import pytest
import torch
from pretrain_helpers import free_port

from srp_megatron.errors import SRPError
from srp_megatron.train.parallel import ParallelConfig

# -- data-parallel overlap settings ------------------------------------------------------------------


@pytest.mark.parametrize(("pp", "vpp", "aligned"), [(1, None, False), (4, None, False), (4, 2, True)])
def test_param_gather_is_aligned_only_for_the_interleaved_schedule(pp, vpp, aligned):
    """Megatron-LM (arguments.py) sets align_param_gather=False without VPP: only the interleaved schedule
    calls param_sync_func, and an aligned DDP's pre-hooks stop dispatching the next bucket's all-gather."""
    from megatron.core.distributed import DistributedDataParallelConfig

    par = ParallelConfig(pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
                         use_distributed_optimizer=True, overlap_grad_reduce=True, overlap_param_gather=True)
    ddp = DistributedDataParallelConfig(**par.ddp_config_kwargs())
    assert ddp.overlap_param_gather and ddp.overlap_grad_reduce and ddp.use_distributed_optimizer
    assert ddp.align_param_gather is aligned and par.align_param_gather is aligned


def test_param_gather_overlap_needs_grad_reduce_overlap():
    with pytest.raises(ValueError, match="overlap_param_gather=true needs parallel.overlap_grad_reduce=true"):
        ParallelConfig(use_distributed_optimizer=True, overlap_param_gather=True)


def test_interleaving_without_p2p_overlap_needs_three_stages():
    with pytest.raises(ValueError, match="overlap_p2p_comm=false with interleaving needs pipeline_model_parallel"):
        ParallelConfig(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2, overlap_p2p_comm=False)
    ParallelConfig(pipeline_model_parallel_size=3, virtual_pipeline_model_parallel_size=2, overlap_p2p_comm=False)


def test_all_to_all_context_parallelism_needs_heads_divisible_by_cp():
    """TE's a2a attention splits the heads of each TP rank over the CP ranks: llama3-8b has 8 KV groups."""
    from omegaconf import OmegaConf

    from srp_megatron.train.model import ModelConfig, load_model_preset
    from srp_megatron.train.precision import PrecisionConfig
    from srp_megatron.train.validation import validate_layout

    llama = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), load_model_preset("llama3-8b")))

    def check(tp: int, cp: int) -> None:
        par = ParallelConfig(tensor_model_parallel_size=tp, context_parallel_size=cp, cp_comm_type="a2a",
                             use_distributed_optimizer=True)
        validate_layout(llama, PrecisionConfig(), par, world_size=tp * cp, gpu="h100-80gb", seq_length=8192,
                        micro_batch_size=1, global_batch_size=8)

    check(2, 2)  # 16 heads and 4 groups per TP rank, over 2 CP ranks
    with pytest.raises(SRPError, match=r"cp_comm_type=a2a .* divisible by context_parallel_size=8"):
        check(2, 8)  # 4 groups per TP rank over 8 CP ranks


# -- TransformerConfig fields Megatron-LM sets -------------------------------------------------------


def test_pipeline_outputs_are_deallocated_as_megatron_lm_does(monkeypatch):
    """On GPU as Megatron-LM; on CPU not (gloo's async sends read the memory; see test_parallel_equivalence)."""
    import srp_megatron.train.cpu as cpu
    from srp_megatron.train.model import ModelConfig, build_transformer_config
    from srp_megatron.train.precision import DType, PrecisionConfig

    tiny = ModelConfig(num_layers=4, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4)
    par = ParallelConfig(pipeline_model_parallel_size=2)
    monkeypatch.setattr(cpu, "cuda_absent", lambda: True)
    assert build_transformer_config(tiny, PrecisionConfig(dtype=DType.bf16), par, use_te=False) \
        .deallocate_pipeline_outputs is False
    monkeypatch.setattr(cpu, "cuda_absent", lambda: False)
    cfg = build_transformer_config(tiny, PrecisionConfig(dtype=DType.bf16), par, use_te=False)
    assert cfg.deallocate_pipeline_outputs is True
    assert cfg.pipeline_dtype == torch.bfloat16 == cfg.params_dtype == cfg.autocast_dtype and cfg.bf16
    assert cfg.gradient_accumulation_fusion is False  # local spec: megatron's layers would need Apex


@pytest.mark.parametrize(("use_te", "apex_kernel", "expected"),
                         [(False, False, False), (False, True, False), (True, False, False), (True, True, True)])
def test_wgrad_accumulation_fusion_needs_te_and_apex(monkeypatch, use_te, apex_kernel, expected):
    """With it on and Apex's kernel absent, megatron's output layer raises at construction."""
    from megatron.core.tensor_parallel import layers

    from srp_megatron.train.model import grad_accum_fusion_available

    monkeypatch.setattr(layers, "_grad_accum_fusion_available", apex_kernel)
    assert grad_accum_fusion_available(use_te) is expected


# -- the calls the driver makes, against the installed megatron-core ---------------------------------


def _params(func) -> set[str]:
    return set(inspect.signature(func).parameters)


def test_schedules_take_the_driver_arguments():
    """``driver._forward_backward`` passes these to whichever schedule megatron picks."""
    from megatron.core.pipeline_parallel import schedules

    passed = {"forward_step_func", "data_iterator", "model", "num_microbatches", "seq_length",
              "micro_batch_size", "forward_only"}
    for func in (schedules.forward_backward_no_pipelining, schedules.forward_backward_pipelining_without_interleaving,
                 schedules.forward_backward_pipelining_with_interleaving):
        assert passed <= _params(func), func.__name__
    assert {"pp_size", "vp_size"} <= _params(schedules.get_forward_backward_func)


def test_model_wrappers_take_the_driver_arguments():
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt import gpt_layer_specs as specs
    from megatron.core.transformer.module import Float16Module

    assert {"config", "ddp_config", "module", "disable_bucketing"} <= _params(DistributedDataParallel.__init__)
    assert {"config", "module"} <= _params(Float16Module.__init__)
    assert {"vp_stage", "rotary_base", "rope_scaling", "rope_scaling_factor", "share_embeddings_and_output_weights",
            "position_embedding_type", "pre_process", "post_process"} <= _params(GPTModel.__init__)
    # megatron-core >= 0.17 forwards the spec's keywords to *_submodules
    te_spec = getattr(specs, "get_gpt_layer_with_transformer_engine_submodules",
                      specs.get_gpt_layer_with_transformer_engine_spec)
    local_spec = getattr(specs, "get_gpt_layer_local_submodules", specs.get_gpt_layer_local_spec)
    assert "qk_layernorm" in _params(te_spec) and {"qk_layernorm", "normalization"} <= _params(local_spec)
    for hook in ("no_sync", "start_grad_sync", "start_param_sync", "zero_grad_buffer", "enable_forward_pre_hook"):
        assert callable(getattr(DistributedDataParallel, hook)), hook
    assert "param_sync" in _params(DistributedDataParallel.disable_forward_pre_hook)


def test_optimizer_and_checkpoint_calls_take_the_driver_arguments():
    from megatron.core import dist_checkpointing
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
    from megatron.core.utils import get_batch_on_this_cp_rank

    used = {"optimizer", "decoupled_weight_decay", "lr", "min_lr", "weight_decay", "adam_beta1", "adam_beta2",
            "adam_eps", "clip_grad", "bf16", "fp16", "params_dtype", "fp8_recipe", "use_distributed_optimizer",
            "overlap_param_gather"}
    assert used <= {f.name for f in dataclasses.fields(OptimizerConfig)}
    assert list(inspect.signature(get_megatron_optimizer).parameters)[:2] == ["config", "model_chunks"]
    assert {"is_loading", "metadata"} <= _params(DistributedOptimizer.sharded_state_dict)
    assert "dp_reshardable" not in DistributedOptimizer.checkpoint_fully_reshardable_formats
    assert "fully_reshardable" in DistributedOptimizer.checkpoint_fully_reshardable_formats
    assert "content_metadata" in _params(dist_checkpointing.save)
    assert "preloaded_state_dict" in _params(dist_checkpointing.load_content_metadata)
    assert "cp_group" in _params(get_batch_on_this_cp_rank)


# -- context parallelism -----------------------------------------------------------------------------


def _zigzag(seq: torch.Tensor, cp_size: int, cp_rank: int) -> torch.Tensor:
    """Brute force: chunks ``cp_rank`` and ``2*CP-1-cp_rank`` of ``2*CP`` along the last dimension."""
    n = seq.shape[-1] // (2 * cp_size)
    first, second = cp_rank * n, (2 * cp_size - 1 - cp_rank) * n
    return torch.cat([seq[..., first:first + n], seq[..., second:second + n]], dim=-1)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="gloo CPU ranks: run with CUDA_VISIBLE_DEVICES=")
def test_context_parallel_ranks_get_their_zigzag_slice(tmp_path):
    """Four gloo ranks, TP=2 x CP=2: every rank receives the TP broadcast and keeps its CP group's slice
    (megatron-core >= 0.18 would slice over the world were the CP group not named)."""
    from cp_batch_worker import known_batch

    worker = os.path.join(os.path.dirname(__file__), "cp_batch_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--master_port", str(free_port()),
           worker, str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    full = known_batch(2, 16)
    seen = set()
    for rank in range(4):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["cp_size"] == 2
        seen.add((got["tp_rank"], got["cp_rank"]))
        assert set(got["batch"]) == {"tokens", "labels", "position_ids", "loss_mask", "span_types"}
        for key, value in got["batch"].items():
            assert value.dtype == full[key].dtype, key
            assert torch.equal(value, _zigzag(full[key], 2, got["cp_rank"])), (rank, key)
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}


# -- checkpoints -------------------------------------------------------------------------------------


def test_dp_reshardable_optimizer_refuses_a_tp_change():
    from srp_megatron.train.checkpoint import require_reshardable_optimizer

    saved, now = {"tp": 1, "pp": 1}, {"tp": 2, "pp": 1}
    with pytest.raises(SRPError, match="'dp_reshardable' format.*optim_fully_reshardable=true"):
        require_reshardable_optimizer({"distrib_optim_sharding_type": "dp_reshardable"}, saved, now, "ck/iter_1")
    with pytest.raises(SRPError, match="dp_reshardable"):  # checkpoints without content metadata
        require_reshardable_optimizer(None, saved, now, "ck/iter_1")
    require_reshardable_optimizer({"distrib_optim_sharding_type": "fully_reshardable"}, saved, now, "ck/iter_1")


# -- environment and MFU -----------------------------------------------------------------------------


@pytest.mark.parametrize(("tp", "cp", "cc", "env", "advised"), [
    (2, 1, (9, 0), {}, True), (1, 2, (9, 0), {"CUDA_DEVICE_MAX_CONNECTIONS": "8"}, True),
    (2, 1, (9, 0), {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}, False), (1, 1, (9, 0), {}, False),
    (2, 1, (10, 0), {}, False), (2, 1, None, {}, False),
])
def test_cuda_device_max_connections_advice_follows_megatron_lm(tp, cp, cc, env, advised):
    from srp_megatron.train.distributed import cuda_connections_advice

    advice = cuda_connections_advice(tp, cp, cc, env)
    assert (advice is not None) is advised
    if advised:
        assert "export CUDA_DEVICE_MAX_CONNECTIONS=1" in advice


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.5), ("NVIDIA A100-SXM4-80GB", 312.0),
])
def test_mfu_peak_for_the_gpus_torch_names(name, tflops):
    """Dense BF16 datasheet peaks (sparsity halved) for the names ``torch.cuda.get_device_name()`` gives."""
    from srp_megatron.train.metrics import peak_flops_per_gpu

    assert peak_flops_per_gpu(name) == pytest.approx(tflops * 1e12)
