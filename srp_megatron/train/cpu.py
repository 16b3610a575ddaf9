"""The CPU accommodations for megatron-core, in one place and used only when CUDA is absent.

megatron-core has no official CPU path, but ``GPTModel`` trains on CPU with gloo, through megatron's own
pipeline schedules, once six CUDA assumptions are handled (see ``docs/training.md``, "CPU runs"):

1. ``torch.cuda.current_device()`` is used as a device (global memory buffer, RoPE frequencies, p2p buffers);
2. the CUDA RNG tracker is forked around tensor-parallel initialisation and dropout;
3. the pipeline schedules, the optimizer, tied-embedding setup and ``dist_checkpointing`` create tensors on
   ``"cuda"``, call ``.cuda()``, assert CUDA gradient types and call ``torch.cuda.synchronize()``
   (``cuda_calls_on_cpu``);
4. pipeline stage outputs are pseudo-freed right after an asynchronous send, which is safe only for NCCL
   (``deallocate_pipeline_outputs``);
5. sequence parallelism needs norms that support it, which the local spec has only with Apex
   (``sequence_parallel_block_spec``);
6. middle pipeline stages get no attention mask, and megatron builds the causal one on ``"cuda"``
   (``middle_stage_batch``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterator

import torch
from megatron.core.tensor_parallel.random import initialize_rng_tracker
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from srp_megatron.errors import SRPError

logger = logging.getLogger(__name__)

_APPLIED = False
#: Whether this thread is inside ``cuda_calls_on_cpu`` (function modes are per thread).
_MODE = threading.local()


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
    logger.info("CUDA absent: megatron-core runs on CPU (gloo, local layer spec)")


def initialize_cpu_rng_tracker() -> None:
    """(2) A model-parallel RNG tracker whose ``fork()`` is a no-op: CPU runs use no dropout."""
    initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


@contextlib.contextmanager
def cuda_calls_on_cpu() -> Iterator[None]:
    """(3) Run megatron code that hard-codes CUDA (schedules, optimizer, checkpoint I/O) on the CPU.

    The schedules count tokens in a ``device='cuda'`` tensor; megatron's optimizer creates its scalars there
    and asserts ``torch.cuda.FloatTensor`` gradients; tied embeddings on the last pipeline stage are synced
    through ``.cuda()``; ``dist_checkpointing`` calls ``torch.cuda.synchronize()``; activation recompute
    saves and restores the CUDA RNG state. Inside this context (CPU only; a no-op with CUDA) ``cuda`` factory
    calls get the CPU, CPU tensors report CUDA type names, ``.cuda()`` stays on the CPU, ``synchronize`` does
    nothing, ``current_stream`` is a stream that never waits and the CUDA RNG state is empty (there is none).
    Re-entrant: inside an active context (the ``Trainer`` holds one) it adds nothing, since a second function
    mode would rewrite the type names twice.
    """
    if not cuda_absent() or getattr(_MODE, "active", False):
        yield
        return

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
    saved_rng = torch.cuda.random.get_rng_state
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.current_stream = lambda device=None: _NoStream()
    torch.cuda.random.get_rng_state = lambda device="cuda": torch.empty(0, dtype=torch.uint8)
    # Restoring that state goes through torch.cuda._lazy_call, which queues callbacks until CUDA initialises:
    # on a CPU build never, so drop the ones queued here instead of letting them pile up.
    queued = getattr(torch.cuda, "_queued_calls", None)
    queued_before = len(queued) if queued is not None else 0
    _MODE.active = True
    try:
        with _CudaOnCpu():
            yield
    finally:
        _MODE.active = False
        for name, func in saved.items():
            setattr(torch.cuda, name, func)
        torch.cuda.random.get_rng_state = saved_rng
        if queued is not None:
            del queued[queued_before:]


class _NoStream:
    """The current "CUDA stream" on CPU: waits are no-ops (CPU work runs in order)."""

    def wait_event(self, event) -> None:
        """No-op."""

    def wait_stream(self, stream) -> None:
        """No-op."""

    def synchronize(self) -> None:
        """No-op."""


def middle_stage_batch(seq_length: int, needs_attention_mask: bool, device) -> dict:
    """(6) The micro-batch of a pipeline stage that reads no data: empty, as in Megatron-LM, except on CPU with
    the local spec, which gets the causal mask megatron would build on ``"cuda"``.

    ``cuda_calls_on_cpu`` redirects that construction in the forward pass, but activation recompute reruns it
    inside ``torch.autograd.backward``, and a torch function mode is off inside the calls it intercepts.
    """
    if not needs_attention_mask or not cuda_absent():
        return {}
    causal = torch.ones(seq_length, seq_length, dtype=torch.bool, device=device).triu(diagonal=1)
    return {"attention_mask": causal[None, None]}  # True = masked, as the dataset's mask


def deallocate_pipeline_outputs() -> bool:
    """(4) Whether megatron may pseudo-free a stage's output after sending it (``out.data = empty``): not on CPU.

    gloo's ``isend`` keeps sending from the tensor's memory in the background; with the overlapped sends of
    the interleaved schedule, swapping the storage frees that memory mid-send and the next stage silently
    gets corrupted activations. NCCL records the storage on its stream, so GPUs keep Megatron-LM's setting.
    """
    return not cuda_absent()


class SequenceParallelTorchNorm:
    """(5) torch's ``LayerNorm``/``RMSNorm`` with sequence parallelism, where megatron's local spec would take Apex's.

    Under sequence parallelism each TP rank normalises its own slice of the sequence, so a norm's weight
    gradients are partial sums. Marked ``sequence_parallel`` (as Apex's ``FusedLayerNorm`` and TE's norms mark
    theirs), megatron's ``finalize_model_grads`` all-reduces them over the TP group. megatron's
    ``WrappedTorchNorm`` refuses sequence parallelism because it leaves them unmarked.
    """

    def __new__(cls, config, hidden_size: int, eps: float = 1e-5, **_unused):
        norms = {"LayerNorm": torch.nn.LayerNorm, "RMSNorm": torch.nn.RMSNorm}
        if config.normalization not in norms:
            raise SRPError(f"model.normalization={config.normalization} with sequence parallelism on CPU: use one of "
                           f"{sorted(norms)}")
        norm = norms[config.normalization](hidden_size, eps=eps)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm


def sequence_parallel_block_spec(layer_spec, config, vp_stage: int | None):
    """(5) The local layer spec as a block spec whose norms (layers' and final) support sequence parallelism."""
    layer = _replace_module(layer_spec, WrappedTorchNorm, SequenceParallelTorchNorm)
    # The block's final norm is not part of a layer spec: megatron picks it globally, so give the block spec.
    return TransformerBlockSubmodules(layer_specs=[layer] * get_num_layers_to_build(config, vp_stage=vp_stage),
                                      layer_norm=SequenceParallelTorchNorm)


def _replace_module(spec, old, new):
    """A copy of a (nested) megatron spec with every ``old`` module class replaced by ``new``."""
    if spec is old:
        return new
    if not dataclasses.is_dataclass(spec) or isinstance(spec, type):
        return spec
    return dataclasses.replace(spec, **{f.name: _replace_module(getattr(spec, f.name), old, new)
                                        for f in dataclasses.fields(spec) if f.init})
