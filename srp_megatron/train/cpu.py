"""The CPU accommodations for megatron-core, in one place and used only when CUDA is absent.

megatron-core has no official CPU path, but ``GPTModel`` trains on CPU with gloo once three CUDA
assumptions are handled (see ``docs/design.md`` and the README's "What CPU runs exercise"):

1. ``torch.cuda.current_device()`` is used as a device (global memory buffer, RoPE frequencies);
2. the CUDA RNG tracker is forked around tensor-parallel initialisation and dropout;
3. the pipeline schedules allocate on ``"cuda"`` (so on CPU ``forward_backward_cpu`` runs the
   micro-batches, PP=1 only);
4. the optimizer and ``dist_checkpointing`` create tensors on ``"cuda"``, assert CUDA gradient types and call
   ``torch.cuda.synchronize()`` (``cuda_calls_on_cpu``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

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


@contextlib.contextmanager
def cuda_calls_on_cpu() -> Iterator[None]:
    """CPU accommodation (4): run megatron code that hard-codes CUDA (optimizer, checkpoint I/O) on the CPU.

    megatron's optimizer creates its scalars with ``device='cuda'`` and asserts ``torch.cuda.FloatTensor``
    gradients; ``dist_checkpointing`` calls ``torch.cuda.synchronize()``. Inside this context (CPU only;
    a no-op with CUDA) ``cuda`` factory calls get the CPU, CPU tensors report CUDA type names, ``.cuda()``
    stays on the CPU, ``synchronize`` does nothing and ``current_stream`` is a stream that never waits.
    """
    if not cuda_absent():
        yield
        return
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors

    constructors = _device_constructors()

    class _CudaOnCpu(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.Tensor.cuda:
                return args[0]
            device = kwargs.get("device")
            if device is not None and func in constructors and torch.device(device).type == "cuda":
                kwargs["device"] = "cpu"
            out = func(*args, **kwargs)
            if func is torch.Tensor.type and len(args) == 1 and not kwargs and isinstance(out, str):
                return out.replace("torch.", "torch.cuda.", 1)
            return out

    # megatron-core >= 0.19 also orders its gradient reduction on the current CUDA stream.
    saved = {name: getattr(torch.cuda, name) for name in ("synchronize", "current_stream")}
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.current_stream = lambda device=None: _NoStream()
    try:
        with _CudaOnCpu():
            yield
    finally:
        for name, func in saved.items():
            setattr(torch.cuda, name, func)


class _NoStream:
    """The current "CUDA stream" on CPU: waits are no-ops (CPU work runs in order)."""

    def wait_event(self, event) -> None:
        """No-op."""

    def wait_stream(self, stream) -> None:
        """No-op."""

    def synchronize(self) -> None:
        """No-op."""


def forward_backward_cpu(forward_step, data_iterator, model, num_microbatches: int, config, forward_only: bool):
    """(3) CPU stand-in for megatron's ``forward_backward_no_pipelining`` (whose buffers live on CUDA): same
    forward step, loss function, backward, no-sync accumulation and ``finalize_model_grads``."""
    reports, total_tokens = [], torch.zeros([], dtype=torch.int)
    for i in range(num_microbatches):
        sync = contextlib.nullcontext() if forward_only or i == num_microbatches - 1 else model.no_sync()
        with sync:
            output, loss_func = forward_step(data_iterator, model)
            loss, num_tokens, report = loss_func(output)
            total_tokens += num_tokens
            reports.append(report)
            if not forward_only:
                scaled = config.grad_scale_func(loss) if config.grad_scale_func is not None else loss
                scaled.backward()
    if not forward_only:
        with cuda_calls_on_cpu():
            config.finalize_model_grads_func([model], total_tokens)
    return reports
