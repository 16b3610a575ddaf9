"""The CPU accommodations for megatron-core, in one place and used only when CUDA is absent.

megatron-core has no official CPU path, but ``GPTModel`` trains on CPU with gloo once three CUDA
assumptions are handled (see ``docs/design.md`` and the README's "What CPU runs exercise"):

1. ``torch.cuda.current_device()`` is used as a device (global memory buffer, RoPE frequencies);
2. the CUDA RNG tracker is forked around tensor-parallel initialisation and dropout;
3. the pipeline schedules allocate on ``"cuda"`` (so on CPU the driver calls forward/backward directly
   and supports PP=1 only).
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

_APPLIED = False


def cuda_absent() -> bool:
    """True when this process has no usable CUDA device."""
    return not torch.cuda.is_available()


def apply_cpu_accommodations() -> None:
    """Make megatron-core's CUDA assumptions hold on a CPU-only machine (idempotent; no-op with CUDA)."""
    global _APPLIED
    if _APPLIED or not cuda_absent():
        return
    # (1) megatron places a few buffers on torch.cuda.current_device(): make that name the CPU.
    torch.cuda.current_device = lambda: "cpu"
    _APPLIED = True
    logger.info("CUDA absent: megatron-core runs on CPU (gloo, local layer spec, PP=1)")


def initialize_cpu_rng_tracker() -> None:
    """(2) A model-parallel RNG tracker whose ``fork()`` is a no-op: CPU runs use no dropout."""
    from megatron.core.tensor_parallel.random import initialize_rng_tracker

    initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)
