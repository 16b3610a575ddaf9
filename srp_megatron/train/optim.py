"""AdamW with gradient clipping and the WSD / cosine learning-rate schedules, from megatron-core.

The optimizer is megatron-core's ``get_megatron_optimizer`` (fp32, mixed precision or the distributed
optimizer, chosen from the precision and ``use_distributed_optimizer``); the schedule is megatron-core's
``OptimizerParamScheduler``, stepped in samples like Megatron-LM (``increment = global_batch_size``),
so a checkpoint's scheduler state means the same thing in both.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler, get_canonical_lr_for_logging

logger = logging.getLogger(__name__)


class LRSchedule(enum.StrEnum):
    """Learning-rate decay after warmup."""

    wsd = "wsd"
    """Warmup, stable at ``lr``, then a final decay to ``min_lr`` (the paper authors' choice)."""
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


class WSDDecayStyle(enum.StrEnum):
    """Shape of the final WSD decay (megatron-core's ``lr_wsd_decay_style``)."""

    linear = "linear"
    cosine = "cosine"
    exponential = "exponential"
    minus_sqrt = "minus_sqrt"


@dataclass
class OptimConfig:
    """AdamW (decoupled weight decay) and gradient clipping."""

    lr: float = 3.0e-4
    """Peak learning rate."""
    min_lr: float = 3.0e-5
    """Learning rate at the end of the decay."""
    weight_decay: float = 0.1
    """Decoupled weight decay; biases and 1-D parameters (norms) get none, as in Megatron-LM."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1.0e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Clip the global L2 gradient norm to this value; 0 disables clipping."""

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"optimizer.lr={self.lr}: must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"optimizer.min_lr={self.min_lr}: must be in [0, optimizer.lr={self.lr}]")
        if self.weight_decay < 0:
            raise ValueError(f"optimizer.weight_decay={self.weight_decay}: must be >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"optimizer.{name}={getattr(self, name)}: must be in [0, 1)")
        if not self.adam_eps > 0:
            raise ValueError(f"optimizer.adam_eps={self.adam_eps}: must be > 0")
        if self.clip_grad < 0:
            raise ValueError(f"optimizer.clip_grad={self.clip_grad}: must be >= 0 (0 disables clipping)")


@dataclass
class SchedulerConfig:
    """Learning-rate schedule in iterations (converted to samples for megatron's scheduler)."""

    style: LRSchedule = LRSchedule.wsd
    """``wsd`` (warmup-stable-decay), ``cosine``, ``linear`` or ``constant``."""
    warmup_iters: int = 0
    """Linear warmup from ``warmup_init_lr`` to ``optimizer.lr``, in iterations."""
    warmup_init_lr: float = 0.0
    """Learning rate at iteration 0."""
    decay_iters: int = 0
    """Iteration at which the decay ends (``min_lr`` from there on); 0 means ``training.train_iters``."""
    wsd_decay_fraction: float = 0.1
    """WSD only: share of ``decay_iters`` spent in the final decay (at least one iteration)."""
    wsd_decay_style: WSDDecayStyle = WSDDecayStyle.linear
    """WSD only: shape of the final decay."""

    def __post_init__(self):
        if self.warmup_iters < 0:
            raise ValueError(f"scheduler.warmup_iters={self.warmup_iters}: must be >= 0")
        if self.decay_iters < 0:
            raise ValueError(f"scheduler.decay_iters={self.decay_iters}: must be >= 0 (0 means train_iters)")
        if self.warmup_init_lr < 0:
            raise ValueError(f"scheduler.warmup_init_lr={self.warmup_init_lr}: must be >= 0")
        if not 0 < self.wsd_decay_fraction <= 1:
            raise ValueError(f"scheduler.wsd_decay_fraction={self.wsd_decay_fraction}: must be in (0, 1]")

    def resolved_decay_iters(self, train_iters: int) -> int:
        """``decay_iters`` with the 0 sentinel resolved."""
        return self.decay_iters or train_iters

    def wsd_decay_iters(self, train_iters: int) -> int:
        """Length of WSD's final decay, in iterations."""
        return max(1, round(self.wsd_decay_fraction * self.resolved_decay_iters(train_iters)))


def build_optimizer(
    model_chunks: list[Any],
    cfg: OptimConfig,
    *,
    bf16: bool,
    fp16: bool,
    params_dtype: Any,
    use_distributed_optimizer: bool,
    overlap_param_gather: bool = False,
    fp8_recipe: str | None = None,
) -> Any:
    """megatron-core's optimizer for ``model_chunks`` (DDP-wrapped), AdamW with ``cfg``'s clipping.

    ``use_distributed_optimizer`` / ``overlap_param_gather`` come from the ``parallel`` section. On CPU, call
    inside ``train.cpu.cuda_calls_on_cpu()`` (the ``Trainer`` holds it): megatron's optimizer makes CUDA scalars.
    """
    config = OptimizerConfig(
        optimizer="adam",
        decoupled_weight_decay=True,  # AdamW
        lr=cfg.lr,
        min_lr=cfg.min_lr,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_eps=cfg.adam_eps,
        clip_grad=cfg.clip_grad,
        bf16=bf16,
        fp16=fp16,
        params_dtype=params_dtype,
        fp8_recipe=fp8_recipe,
        use_distributed_optimizer=use_distributed_optimizer,
        overlap_param_gather=overlap_param_gather,
    )
    return get_megatron_optimizer(config, model_chunks)


def build_scheduler(
    optimizer: Any,
    optim: OptimConfig,
    sched: SchedulerConfig,
    *,
    train_iters: int,
    global_batch_size: int,
) -> Any:
    """megatron-core's ``OptimizerParamScheduler``; steps count samples (``global_batch_size`` per iteration)."""
    decay_iters = sched.resolved_decay_iters(train_iters)
    is_wsd = sched.style == LRSchedule.wsd
    return OptimizerParamScheduler(
        optimizer,
        init_lr=sched.warmup_init_lr,
        max_lr=optim.lr,
        min_lr=optim.min_lr,
        lr_warmup_steps=sched.warmup_iters * global_batch_size,
        lr_decay_steps=decay_iters * global_batch_size,
        lr_decay_style="WSD" if is_wsd else sched.style.value,
        start_wd=optim.weight_decay,
        end_wd=optim.weight_decay,
        wd_incr_steps=decay_iters * global_batch_size,  # constant weight decay: so a run may be extended
        wd_incr_style="constant",
        # Megatron-LM's default: a resumed run must use the schedule it was saved with.
        use_checkpoint_opt_param_scheduler=False,
        override_opt_param_scheduler=False,
        wsd_decay_steps=sched.wsd_decay_iters(train_iters) * global_batch_size if is_wsd else None,
        lr_wsd_decay_style=sched.wsd_decay_style.value if is_wsd else None,
    )


def current_lr(optimizer: Any) -> float:
    """Learning rate of the default parameter group (what Megatron-LM logs)."""
    lr = get_canonical_lr_for_logging(optimizer.param_groups)
    return float(lr if lr is not None else optimizer.param_groups[0]["lr"])
