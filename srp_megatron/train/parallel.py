"""Model and data parallelism: TP, PP with virtual stages, CP, sequence parallelism, distributed optimizer.

Field names are megatron-core's (``ModelParallelConfig`` / ``DistributedDataParallelConfig``), so a
Megatron-LM user reads them as they are. The data-parallel size is what is left of the world size:
``DP = world / (TP * PP * CP)``. Checks that need the model or the batch sizes live in
``srp_megatron.train.validation``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class CPCommType(enum.StrEnum):
    """How context-parallel ranks exchange keys and values (megatron ``cp_comm_type``)."""

    p2p = "p2p"
    """Ring exchange overlapped with attention (the default)."""
    all_gather = "all_gather"
    a2a = "a2a"
    """All-to-all over heads (Ulysses style); needs heads divisible by CP."""


@dataclass
class ParallelConfig:
    """How one model replica is split over GPUs, and how replicas share optimizer work."""

    tensor_model_parallel_size: int = 1
    """TP: GPUs splitting every GEMM (within a node); must divide heads and query groups."""
    pipeline_model_parallel_size: int = 1
    """PP: pipeline stages; must divide ``num_layers`` (CPU runs: 1)."""
    virtual_pipeline_model_parallel_size: int | None = None
    """VPP: model chunks per pipeline stage (interleaved 1F1B); None disables. Needs PP > 1."""
    context_parallel_size: int = 1
    """CP: GPUs splitting the sequence inside attention (long sequences); GPU with TE only."""
    sequence_parallel: bool = False
    """Split norms, dropout and residuals along the sequence over TP ranks (needs TP > 1)."""
    use_distributed_optimizer: bool = False
    """Shard FP32 master weights and Adam moments over data-parallel ranks (ZeRO-1); the usual GPU choice."""
    overlap_grad_reduce: bool = False
    """Overlap the data-parallel gradient reduce-scatter with backward."""
    overlap_param_gather: bool = False
    """Overlap the distributed optimizer's parameter all-gather with forward (needs the distributed optimizer)."""
    overlap_p2p_comm: bool = True
    """Interleaved pipeline: overlap send/receive with compute (used only with VPP)."""
    tp_comm_overlap: bool = False
    """Overlap TP communication with GEMMs via Transformer Engine userbuffers (needs sequence parallelism)."""
    cp_comm_type: CPCommType = CPCommType.p2p
    """Context-parallel communication scheme."""

    def __post_init__(self):
        for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"parallel.{name}={getattr(self, name)}: must be >= 1")
        vpp = self.virtual_pipeline_model_parallel_size
        if vpp is not None and (vpp < 2 or self.pipeline_model_parallel_size < 2):
            raise ValueError(
                f"parallel.virtual_pipeline_model_parallel_size={vpp} with pipeline_model_parallel_size="
                f"{self.pipeline_model_parallel_size}: interleaving needs VPP >= 2 and PP >= 2 (null disables it)"
            )
        if vpp is not None and not self.overlap_p2p_comm and self.pipeline_model_parallel_size < 3:
            # Megatron-LM refuses it: batched send/receive pairs between the same two ranks.
            raise ValueError(
                "parallel.overlap_p2p_comm=false with interleaving needs pipeline_model_parallel_size >= 3: "
                "set overlap_p2p_comm=true or raise the pipeline size"
            )
        if self.overlap_param_gather and not self.use_distributed_optimizer:
            raise ValueError(
                "parallel.overlap_param_gather=true needs the distributed optimizer: "
                "set parallel.use_distributed_optimizer=true or overlap_param_gather=false"
            )
        if self.overlap_param_gather and not self.overlap_grad_reduce:
            # Megatron-LM refuses it too: without overlap_grad_reduce the buffers form a single bucket.
            raise ValueError(
                "parallel.overlap_param_gather=true needs parallel.overlap_grad_reduce=true (as Megatron-LM): "
                "set both, or overlap_param_gather=false"
            )

    @property
    def tp(self) -> int:
        """Tensor-parallel size."""
        return self.tensor_model_parallel_size

    @property
    def pp(self) -> int:
        """Pipeline-parallel size."""
        return self.pipeline_model_parallel_size

    @property
    def vpp(self) -> int:
        """Model chunks per pipeline stage (1 without interleaving)."""
        return self.virtual_pipeline_model_parallel_size or 1

    @property
    def cp(self) -> int:
        """Context-parallel size."""
        return self.context_parallel_size

    @property
    def model_parallel_size(self) -> int:
        """GPUs holding one model replica: TP x PP x CP."""
        return self.tp * self.pp * self.cp

    def data_parallel_size(self, world_size: int) -> int:
        """DP for ``world_size`` GPUs (the caller checks divisibility with ``validate_layout``)."""
        return world_size // self.model_parallel_size

    def transformer_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for megatron-core's ``TransformerConfig`` (a ``ModelParallelConfig``)."""
        interleaved = self.virtual_pipeline_model_parallel_size is not None
        kwargs: dict[str, Any] = {
            "tensor_model_parallel_size": self.tp,
            "pipeline_model_parallel_size": self.pp,
            "virtual_pipeline_model_parallel_size": self.virtual_pipeline_model_parallel_size if interleaved else None,
            "context_parallel_size": self.cp,
            "sequence_parallel": self.sequence_parallel,
            "tp_comm_overlap": self.tp_comm_overlap,
        }
        if interleaved:
            # Megatron-LM pairs batched p2p with no overlap and vice versa.
            kwargs.update(overlap_p2p_comm=self.overlap_p2p_comm, batch_p2p_comm=not self.overlap_p2p_comm)
        if self.cp > 1:
            kwargs["cp_comm_type"] = self.cp_comm_type.value
        return kwargs

    @property
    def align_param_gather(self) -> bool:
        """Dispatch the overlapped parameter all-gathers from the interleaved schedule (``param_sync_func``).

        Megatron-LM turns this off without VPP: the other schedules never call ``param_sync_func``, and
        with it on, DDP's forward pre-hooks would stop dispatching the next bucket's all-gather.
        """
        return self.overlap_param_gather and self.virtual_pipeline_model_parallel_size is not None

    def ddp_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for megatron-core's ``DistributedDataParallelConfig``."""
        return {
            "use_distributed_optimizer": self.use_distributed_optimizer,
            "overlap_grad_reduce": self.overlap_grad_reduce,
            "overlap_param_gather": self.overlap_param_gather,
            "align_param_gather": self.align_param_gather,
        }
