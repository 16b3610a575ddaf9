"""One ``MetricsProcessor``: loss per span type, throughput, MFU; TensorBoard, optional W&B, a console line.

Keys are ``group/name(unit)`` (``loss/total(nats)``, ``loss/reflection(nats)``, ``throughput/tokens_per_s(tok/s)``).
Only one rank writes (the last, which holds the last pipeline stage); every other rank gets a no-op.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from srp_megatron.errors import SRPError

logger = logging.getLogger(__name__)

#: ``torch.cuda.get_device_name()`` fragment -> key of ``srp_megatron.train.gpus.GPUS`` (most specific first).
_DEVICE_NAME_TO_GPU = (
    ("GB200", "gb200"), ("B200", "b200"), ("H200 NVL", "h200-nvl"), ("H200", "h200-141gb"), ("H100 NVL", "h100-nvl"),
    ("H100 PCIe", "h100-pcie"), ("H100", "h100-80gb"), ("A100-SXM4-40GB", "a100-40gb"), ("A100", "a100-80gb"),
    ("L40S", "l40s"),
)


@dataclass
class LoggingConfig:
    """Where and how often a run reports."""

    run_dir: str = "runs/srp-pretrain"
    """Run directory: resolved config, TensorBoard events, and (by default) checkpoints."""
    log_interval: int = 10
    """Report every this many iterations (and at the last one)."""
    tensorboard: bool = True
    """Write TensorBoard events to ``RUN_DIR/tensorboard``."""
    wandb_project: str = ""
    """Weights & Biases project; empty disables W&B (install with ``pip install 'srp-megatron[wandb]'``)."""
    wandb_run_name: str = ""
    """W&B run name; empty uses the run directory's name."""

    def __post_init__(self):
        if self.log_interval < 1:
            raise ValueError(f"logging.log_interval={self.log_interval}: must be >= 1")
        if not self.run_dir:
            raise ValueError("logging.run_dir is empty: give a directory for the run's outputs")


def span_loss_metrics(sums: Sequence[float], counts: Sequence[float], names: Sequence[str],
                      group: str = "loss") -> dict:
    """Total and per-span-type mean losses from per-span loss sums and trained-token counts.

    The total is the token-weighted mean over all spans, i.e. ``sum(loss * loss_mask) / sum(loss_mask)``.
    Span types without trained tokens are left out.
    """
    total_n = float(sum(counts))
    out = {f"{group}/total(nats)": float(sum(sums)) / total_n if total_n > 0 else float("nan")}
    for name, s, n in zip(names, sums, counts, strict=True):
        if n > 0:
            out[f"{group}/{name}(nats)"] = float(s) / float(n)
            out[f"tokens/{group}_{name}(count)"] = float(n)
    return out


def loss_func(loss_mask: Any, span_types: Any, num_span_types: int, output: Any) -> tuple:
    """Megatron-LM's GPT ``loss_func`` (``sum(loss * loss_mask)``, trained tokens) plus a per-span report.

    ``output`` is ``GPTModel``'s per-token loss. Returns ``(loss sum, tokens as int, report)`` with the
    report ``[loss sum, tokens, per-span loss sums..., per-span tokens...]`` (no span parts without
    ``span_types``), the three values megatron's schedules expect with ``calculate_per_token_loss``.
    """
    import torch

    losses = output.view(-1).float()
    mask = loss_mask.view(-1).float()
    weighted = losses * mask
    loss = torch.sum(weighted)
    num_tokens = mask.sum().clone().detach().to(torch.int)
    parts = [loss.detach().view(1), mask.sum().view(1)]
    if span_types is not None:  # one scatter-add: row 0 loss sums, row 1 token counts, per span type
        per_span = torch.zeros(2, num_span_types, device=losses.device)
        per_span.index_add_(1, span_types.reshape(-1).long(), torch.stack([weighted.detach(), mask]))
        parts.append(per_span.view(-1))
    return loss, num_tokens, torch.cat(parts)


def report_metrics(report: Any, span_names: Sequence[str]) -> dict:
    """Metrics of a summed report: the total from the loss sum itself, and the per-span means."""
    values = report.tolist()
    k = len(span_names)
    out = span_loss_metrics(values[2 : 2 + k], values[2 + k :], span_names)
    out["loss/total(nats)"] = values[0] / values[1] if values[1] > 0 else float("nan")
    out["tokens/loss_trained(count)"] = values[1]
    return out


def num_floating_point_operations(config: Any, padded_vocab_size: int, seq_length: int, batch_size: int) -> float:
    """FLOPs of one forward+backward over ``batch_size`` sequences: Megatron-LM's dense-transformer formula.

    ``config`` is the model's ``TransformerConfig``. GEMMs count 3x (forward, dgrad, wgrad) and 2 FLOPs
    per multiply-add; causal attention counts half of ``QK^T`` and ``AV``.
    """
    h, layers = config.hidden_size, config.num_layers
    q_size = config.kv_channels * config.num_attention_heads
    kv_size = config.kv_channels * (config.num_query_groups or config.num_attention_heads)
    ffn_factor = 3 if config.gated_linear_unit else 2
    tokens = batch_size * seq_length
    per_token = 6 * (
        layers * (h * config.ffn_hidden_size * ffn_factor + h * (q_size + 2 * kv_size) + q_size * h)
        + h * padded_vocab_size
    )
    attention_core = 6 * q_size * layers * batch_size * seq_length**2  # causal: half of 2 GEMMs x 2
    return float(tokens * per_token + attention_core)


def peak_flops_per_gpu(device_name: str) -> float | None:
    """Dense BF16 peak FLOP/s of a GPU by its ``torch.cuda.get_device_name()``, or None if unknown.

    MFU is reported against the BF16 peak also for FP8 runs (as Megatron-LM's MFU figures are).
    """
    from srp_megatron.train.gpus import GPUS

    for fragment, key in _DEVICE_NAME_TO_GPU:
        if fragment in device_name:
            return GPUS[key].bf16_tflops * 1e12
    return None


class MetricsProcessor:
    """Formats and writes a run's metrics on the writing rank; a no-op elsewhere."""

    def __init__(
        self,
        cfg: LoggingConfig,
        *,
        writer: bool,
        train_iters: int,
        tokens_per_step: int,
        flops_per_step: float,
        num_gpus: int = 0,
        peak_flops: float | None = None,
        run_config: dict | None = None,
    ):
        self.cfg = cfg
        self.writer = writer
        self.train_iters = train_iters
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.num_gpus = num_gpus
        self.peak_flops = peak_flops
        self._tb = None
        self._wandb = None
        self._jsonl = None
        self._last_time = time.perf_counter()
        self._last_step: int | None = None
        if not writer:
            return
        os.makedirs(cfg.run_dir, exist_ok=True)
        self._jsonl = open(os.path.join(cfg.run_dir, "metrics.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=os.path.join(cfg.run_dir, "tensorboard"))
        if cfg.wandb_project:
            self._wandb = _start_wandb(cfg, run_config or {})

    def should_log(self, step: int) -> bool:
        """True at every ``log_interval``-th iteration and at the last one."""
        return step % self.cfg.log_interval == 0 or step == self.train_iters

    def reset_timer(self, step: int) -> None:
        """Start timing throughput from ``step`` (after setup, a resume, or an evaluation)."""
        self._last_time = time.perf_counter()
        self._last_step = step

    def throughput(self, step: int) -> dict:
        """Tokens/s (and MFU on GPU) since the last call; resets the timer."""
        now = time.perf_counter()
        steps = step - (self._last_step if self._last_step is not None else step - 1)
        elapsed = max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        out = {
            "time/step(s)": elapsed / max(steps, 1),
            "throughput/tokens_per_s(tok/s)": self.tokens_per_step * steps / elapsed,
        }
        if self.peak_flops and self.num_gpus:
            achieved = self.flops_per_step * steps / elapsed / self.num_gpus
            out["throughput/tflops_per_gpu(TFLOP/s)"] = achieved / 1e12
            out["throughput/mfu(%)"] = 100.0 * achieved / self.peak_flops
        return out

    def log(self, step: int, metrics: dict, prefix: str = "train") -> None:
        """Write ``metrics`` at ``step`` to ``metrics.jsonl``, TensorBoard, W&B, and print one console line."""
        if not self.writer or not metrics:
            return
        self._jsonl.write(json.dumps({"split": prefix, "step": step, **metrics}) + "\n")
        self._jsonl.flush()
        for key, value in metrics.items():
            if self._tb is not None:
                self._tb.add_scalar(f"{prefix}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{prefix}/{k}": v for k, v in metrics.items()}, step=step)
        logger.info("%s", format_console_line(prefix, step, self.train_iters, metrics))

    def close(self) -> None:
        """Flush and close the writers."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(cfg: LoggingConfig, run_config: dict) -> Any:
    try:
        import wandb
    except ImportError:
        raise SRPError(
            f"logging.wandb_project='{cfg.wandb_project}' needs wandb: pip install 'srp-megatron[wandb]', "
            "or set logging.wandb_project=''"
        ) from None
    name = cfg.wandb_run_name or os.path.basename(os.path.abspath(cfg.run_dir))
    return wandb.init(project=cfg.wandb_project, name=name, dir=cfg.run_dir, config=run_config)


_CONSOLE_KEYS = (
    ("loss/total(nats)", "loss {:.4f}"),
    ("loss/text(nats)", "text {:.4f}"),
    ("loss/reflection(nats)", "reflection {:.4f}"),
    ("loss/reflection_marker(nats)", "marker {:.4f}"),
    ("loss/unsafe_text(nats)", "unsafe {:.4f}"),
    ("optim/lr", "lr {:.3e}"),
    ("optim/grad_norm", "grad norm {:.3f}"),
    ("throughput/tokens_per_s(tok/s)", "{:,.0f} tok/s"),
    ("throughput/mfu(%)", "MFU {:.1f}%"),
    ("time/step(s)", "{:.3f} s/step"),
)


def format_console_line(prefix: str, step: int, total: int, metrics: dict) -> str:
    """``train step 10/100 | loss 4.1234 | text ... | 12,345 tok/s | MFU 41.0%``."""
    parts = [f"{prefix} step {step}/{total}"]
    for key, fmt in _CONSOLE_KEYS:
        value = metrics.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(fmt.format(value))
    return " | ".join(parts)


def read_metrics(run_dir: str) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` (one per logged step and split)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(run_dir: str, out_png: str | None = None) -> str:
    """Plot the training loss per span type against the step into ``RUN_DIR/losses.png``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: clusters and CI have no display
    import matplotlib.pyplot as plt

    train = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    keys = sorted({k for r in train for k in r if k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r["step"], r[key]) for r in train if key in r and math.isfinite(r[key])]
        if points:
            ax.plot(*zip(*points, strict=True), label=key.removeprefix("loss/").removesuffix("(nats)"))
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"training loss per span type: {os.path.basename(os.path.abspath(run_dir))}")
    ax.legend()
    ax.grid(alpha=0.3)
    out_png = out_png or os.path.join(run_dir, "losses.png")
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_png
