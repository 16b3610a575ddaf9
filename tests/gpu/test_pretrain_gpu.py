"""``srp pretrain`` on one CUDA GPU (skipped without CUDA): what the CPU tests cannot exercise.

The shipped ``smollm2-1.7b-srp`` preset cut to 2 layers and 512 tokens: Transformer Engine's layer spec
(megatron's local spec where TE is not importable), BF16 (``Float16Module``, the distributed optimizer,
overlapped gradient reduce and parameter gather, evaluation and saving with the gathers finished),
megatron's pipeline schedule (``forward_backward_no_pipelining`` on CUDA), MFU, a GPU checkpoint and
resume; then each FP8 preset where the GPU has FP8 tensor cores and TE is recent enough.
Run: ``python -m pytest -q tests/gpu`` or, for a whole GPU session, ``bash tests/gpu/run_gpu_checks.sh``.
"""

from __future__ import annotations

import json
import math
import os

import pytest

pytestmark = pytest.mark.gpu


def _run(run_dir: str, srp_prefix: str, *overrides: str) -> tuple[list[dict], dict]:
    """Train the cut-down SmolLM2 preset in this process; returns train records and facts about the model."""
    from megatron.core.utils import unwrap_model

    from srp_megatron.train.config import load_pretrain_config
    from srp_megatron.train.trainer import Trainer

    cfg = load_pretrain_config("smollm2-1.7b-srp", [
        f"data.paths=[{srp_prefix}]", f"logging.run_dir={run_dir}", "model.num_layers=2", "training.seq_length=512",
        "training.micro_batch_size=2", "training.global_batch_size=4", "training.train_iters=4",
        "scheduler.warmup_iters=1", "training.eval_interval=4", "training.eval_iters=1", "data.split=90,10,0",
        "checkpoint.save_interval=2", "logging.log_interval=1", "logging.tensorboard=false", *overrides,
    ])
    with Trainer(cfg) as trainer:
        gpt, tc = unwrap_model(trainer.model[0]), trainer.tconfig
        facts = {"layer_classes": {type(m).__name__ for m in gpt.modules()},
                 "param_dtype": next(gpt.parameters()).dtype, "device": next(gpt.parameters()).device.type,
                 "fusions": {k: getattr(tc, k) for k in ("apply_rope_fusion", "bias_activation_fusion",
                                                         "gradient_accumulation_fusion",
                                                         "deallocate_pipeline_outputs")}}
        trainer.train()
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["split"] == "train"], facts


def _resumable_overrides() -> list[str]:
    """Without TE or Apex megatron cannot load the distributed optimizer's state (the driver refuses):
    checkpoint the mixed-precision optimizer there instead."""
    from megatron.core.optimizer import distrib_optimizer

    if getattr(distrib_optimizer, "HAVE_APEX_OR_TE", True):
        return []
    return ["parallel.use_distributed_optimizer=false", "parallel.overlap_param_gather=false"]


def test_smollm2_shaped_bf16_on_te(tmp_path, srp_prefix):
    import torch

    from srp_megatron.train.model import grad_accum_fusion_available, te_available

    records, facts = _run(str(tmp_path / "run"), srp_prefix)
    assert facts["device"] == "cuda" and facts["param_dtype"] == torch.bfloat16
    te = te_available()
    if te:
        assert any(name.startswith("TE") for name in facts["layer_classes"]), facts["layer_classes"]
    assert facts["fusions"] == {"apply_rope_fusion": te, "bias_activation_fusion": te,
                                "deallocate_pipeline_outputs": True,
                                "gradient_accumulation_fusion": grad_accum_fusion_available(te)}
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert math.isfinite(r["loss/total(nats)"]) and math.isfinite(r["optim/grad_norm"])
        assert r["throughput/mfu(%)"] > 0 and r["throughput/tokens_per_s(tok/s)"] > 0
        assert r["tokens/loss_trained(count)"] == 4 * 512
    assert records[-1]["loss/total(nats)"] < records[0]["loss/total(nats)"]


def test_gpu_resume_continues_the_curve(tmp_path, srp_prefix):
    optim = _resumable_overrides()
    whole, _ = _run(str(tmp_path / "whole"), srp_prefix, "checkpoint.save_interval=0", *optim)
    split_dir = str(tmp_path / "split")
    _run(split_dir, srp_prefix, "training.exit_interval=2", *optim)
    resumed, _ = _run(split_dir, srp_prefix, "training.exit_interval=2", *optim)
    by_step = {r["step"]: r["loss/total(nats)"] for r in resumed}
    assert sorted(by_step) == [1, 2, 3, 4]
    for r in whole:  # GPU kernels are not bitwise deterministic: compare to BF16 noise
        assert by_step[r["step"]] == pytest.approx(r["loss/total(nats)"], rel=2e-2)


@pytest.mark.parametrize(("preset", "layers", "min_te", "min_cc"), [
    ("fp8-h100-tensorwise", 4, "2.2.0.dev0", (8, 9)),  # as shipped: first and last layer in BF16, FP8 weights
    ("fp8-delayed", 2, "1.0.0", (8, 9)),
    ("fp8-blockwise", 2, "2.3.0.dev0", (9, 0)),
])
def test_fp8_presets_train(tmp_path, srp_prefix, preset, layers, min_te, min_cc):
    import torch
    from megatron.core.utils import is_te_min_version

    from srp_megatron.train.model import te_available

    if not te_available() or torch.cuda.get_device_capability() < min_cc or not is_te_min_version(min_te):
        pytest.skip(f"{preset} needs Transformer Engine >= {min_te} and compute capability >= {min_cc}")
    records, _ = _run(str(tmp_path / "fp8"), srp_prefix, f"precision.preset={preset}", f"model.num_layers={layers}",
                      "checkpoint.save_interval=0", "checkpoint.save_at_end=false")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss/total(nats)"]) for r in records)
    assert records[-1]["loss/total(nats)"] < records[0]["loss/total(nats)"]
