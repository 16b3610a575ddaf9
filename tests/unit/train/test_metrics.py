"""MetricsProcessor, per-span loss arithmetic, and the model-FLOPs formula behind MFU."""

from __future__ import annotations

import json
import math

import pytest

from srp_megatron.errors import SRPError
from srp_megatron.train.metrics import (
    LoggingConfig,
    MetricsProcessor,
    format_console_line,
    num_floating_point_operations,
    peak_flops_per_gpu,
    span_loss_metrics,
)


def _processor(tmp_path, **kwargs) -> MetricsProcessor:
    cfg = LoggingConfig(run_dir=str(tmp_path), log_interval=5, tensorboard=kwargs.pop("tensorboard", False))
    defaults = dict(writer=True, train_iters=12, tokens_per_step=1000, flops_per_step=2e12)
    return MetricsProcessor(cfg, **{**defaults, **kwargs})


def test_should_log_every_interval_and_at_the_end(tmp_path):
    m = _processor(tmp_path)
    assert [s for s in range(1, 13) if m.should_log(s)] == [5, 10, 12]


def test_span_loss_metrics_are_token_weighted_means():
    names = ["text", "reflection", "reflection_marker", "unsafe_text"]
    sums, counts = [12.0, 3.0, 0.0, 1.5], [6.0, 2.0, 0.0, 1.0]
    out = span_loss_metrics(sums, counts, names)
    assert out["loss/text(nats)"] == 2.0 and out["loss/reflection(nats)"] == 1.5
    assert out["loss/unsafe_text(nats)"] == 1.5 and "loss/reflection_marker(nats)" not in out  # no tokens
    assert out["loss/total(nats)"] == pytest.approx(16.5 / 9.0)
    weighted = sum(out[f"loss/{n}(nats)"] * out[f"tokens/loss_{n}(count)"] for n in names if n != "reflection_marker")
    assert weighted / 9.0 == pytest.approx(out["loss/total(nats)"])


def test_log_writes_jsonl_tensorboard_and_console(tmp_path, caplog):
    m = _processor(tmp_path, tensorboard=True)
    with caplog.at_level("INFO", logger="srp_megatron.train.metrics"):
        m.log(5, {"loss/total(nats)": 2.5, "loss/reflection(nats)": 0.25, "optim/lr": 1e-3}, "train")
    m.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record == {"split": "train", "step": 5, "loss/total(nats)": 2.5, "loss/reflection(nats)": 0.25,
                      "optim/lr": 1e-3}
    assert list((tmp_path / "tensorboard").iterdir())  # an events file
    assert "train step 5/12 | loss 2.5000 | reflection 0.2500 | lr 1.000e-03" in caplog.text


def test_non_writer_ranks_write_nothing(tmp_path):
    m = _processor(tmp_path / "quiet", writer=False, tensorboard=True)
    m.log(5, {"loss/total(nats)": 1.0})
    m.close()
    assert not (tmp_path / "quiet").exists()


def test_throughput_and_mfu(tmp_path, monkeypatch):
    m = _processor(tmp_path, num_gpus=4, peak_flops=1e15)
    clock = iter([100.0, 102.0])
    monkeypatch.setattr("srp_megatron.train.metrics.time.perf_counter", lambda: next(clock))
    m.reset_timer(10)
    out = m.throughput(14)  # 4 steps in 2 s
    assert out["time/step(s)"] == pytest.approx(0.5)
    assert out["throughput/tokens_per_s(tok/s)"] == pytest.approx(4 * 1000 / 2)
    assert out["throughput/tflops_per_gpu(TFLOP/s)"] == pytest.approx(4 * 2e12 / 2 / 4 / 1e12)
    assert out["throughput/mfu(%)"] == pytest.approx(100 * (4 * 2e12 / 2 / 4) / 1e15)


def test_cpu_runs_report_no_mfu(tmp_path):
    m = _processor(tmp_path)
    m.reset_timer(0)
    assert "throughput/mfu(%)" not in m.throughput(1)


def test_peak_flops_from_the_gpu_table():
    assert peak_flops_per_gpu("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert peak_flops_per_gpu("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak_flops_per_gpu("Some Future Accelerator") is None


def test_wandb_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    cfg = LoggingConfig(run_dir=str(tmp_path), tensorboard=False, wandb_project="srp")
    with pytest.raises(SRPError, match=r"srp-megatron\[wandb\]"):
        MetricsProcessor(cfg, writer=True, train_iters=1, tokens_per_step=1, flops_per_step=1.0)


def test_console_line_skips_missing_and_nan():
    line = format_console_line("valid", 3, 9, {"loss/total(nats)": 1.0, "loss/text(nats)": math.nan})
    assert line == "valid step 3/9 | loss 1.0000"


def test_logging_config_rules():
    with pytest.raises(ValueError, match="logging.log_interval=0"):
        LoggingConfig(log_interval=0)
    with pytest.raises(ValueError, match="logging.run_dir is empty"):
        LoggingConfig(run_dir="")


@pytest.mark.parametrize("gqa", [False, True])
def test_flops_formula_matches_counted_flops(gqa):
    """Megatron-LM's formula vs. torch's FLOP counter on a real GPTModel forward+backward.

    The counter sees full (non-causal) ``QK^T`` and ``AV`` GEMMs where the formula counts the causal
    half, so the counted total exceeds the formula by exactly ``6 * b * s^2 * q * layers``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from srp_megatron.train.model import ModelConfig, _world_of_one, build_gpt_model
    from srp_megatron.train.parallel import ParallelConfig
    from srp_megatron.train.precision import DType, PrecisionConfig

    model = ModelConfig(num_layers=2, hidden_size=64, ffn_hidden_size=96, num_attention_heads=4,
                        num_query_groups=2 if gqa else None, tie_embeddings=True, make_vocab_size_divisible_by=64)
    b, s, vocab = 2, 32, 256
    with _world_of_one():
        gpt = build_gpt_model(model, PrecisionConfig(dtype=DType.fp32), ParallelConfig(), vocab_size=vocab,
                              max_sequence_length=s, use_te=False)
        tokens = torch.randint(0, vocab, (b, s))
        mask = torch.tril(torch.ones(1, 1, s, s)).lt(0.5)
        with FlopCounterMode(display=False) as counter:
            loss = gpt(tokens, torch.arange(s).expand(b, s), mask, labels=tokens).sum()
            loss.backward()
        formula = num_floating_point_operations(gpt.config, vocab, s, b)
    q = model.num_attention_heads * model.head_dim
    assert counter.get_total_flops() == formula + 6 * b * s * s * q * model.num_layers
