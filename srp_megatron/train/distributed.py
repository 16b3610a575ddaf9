"""Process groups and seeds: torchrun or a single process, gloo on CPU, nccl on GPU.

``srp pretrain`` runs either directly (one process; CPU or one GPU) or under ``torchrun`` /
``srun`` (the ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` variables).
Model parallelism is megatron-core's ``parallel_state``; seeds follow Megatron-LM's
``_set_random_seed`` (``seed + 100 * pp_rank``; the model-parallel CUDA RNG tracker on GPU).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

from srp_megatron.errors import SRPError
from srp_megatron.train.cpu import apply_cpu_accommodations

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: global rank, world size, local rank and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: Any
    """``torch.device``: ``cuda:LOCAL_RANK`` on GPU, ``cpu`` otherwise."""

    @property
    def is_last_rank(self) -> bool:
        """True on the rank that logs (the last one holds the last pipeline stage, like Megatron-LM)."""
        return self.rank == self.world_size - 1

    @property
    def on_gpu(self) -> bool:
        """True when computing on CUDA."""
        return self.device.type == "cuda"


def use_cuda(device: str) -> bool:
    """Whether to train on CUDA for ``device`` = ``auto`` | ``cpu`` | ``cuda`` (the config's ``device``)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SRPError("device=cuda but CUDA is not available here: use device=auto or device=cpu")
    if device == "cpu" and torch.cuda.is_available():
        # megatron-core keeps some buffers on torch.cuda.current_device(); the CPU accommodations that
        # redirect it apply only where CUDA is absent.
        raise SRPError("device=cpu on a machine with CUDA: hide the GPUs (CUDA_VISIBLE_DEVICES= srp pretrain ...) "
                       "or use device=auto")
    return device == "cuda" or (device == "auto" and torch.cuda.is_available())


def cuda_connections_advice(tensor_parallel: int, context_parallel: int, capability: tuple[int, int] | None,
                            environ: Any = None) -> str | None:
    """Megatron-LM's ``CUDA_DEVICE_MAX_CONNECTIONS=1`` rule for TP/CP before Blackwell, as advice (or None).

    megatron launches the TP/CP communication and the GEMMs it overlaps in order and relies on one hardware
    queue to keep that order; Megatron-LM refuses to start without it, here it costs speed, not correctness.
    """
    environ = os.environ if environ is None else environ
    if capability is None or capability >= (10, 0) or (tensor_parallel == 1 and context_parallel == 1):
        return None
    if environ.get("CUDA_DEVICE_MAX_CONNECTIONS") == "1":
        return None
    return (f"TP={tensor_parallel} CP={context_parallel} on a GPU of compute capability "
            f"{capability[0]}.{capability[1]} "
            "without CUDA_DEVICE_MAX_CONNECTIONS=1: communication will not overlap computation as megatron "
            "expects (slower); export CUDA_DEVICE_MAX_CONNECTIONS=1 before launching, as examples/ do")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value in (None, "") else int(value)
    except ValueError:
        from srp_megatron.errors import SRPError

        raise SRPError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(
    *,
    use_cuda: bool,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    virtual_pipeline_parallel: int | None = None,
    context_parallel: int = 1,
    timeout_minutes: int = 30,
) -> DistEnv:
    """Initialise ``torch.distributed`` and megatron's model-parallel groups (idempotent per process)."""
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not use_cuda:
        apply_cpu_accommodations()
        device = torch.device("cpu")
    else:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=timeout_minutes)}
        if "MASTER_ADDR" not in os.environ:
            if world != 1:
                raise SRPError(f"WORLD_SIZE={world} but MASTER_ADDR is not set: launch with torchrun (or srun)")
            # A direct launch: a private rendezvous on loopback, so two runs on one host never collide.
            kwargs["init_method"] = f"tcp://127.0.0.1:{_free_port()}"
        if use_cuda:
            kwargs["device_id"] = device  # eager NCCL init, as Megatron-LM does
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world, **kwargs)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tensor_parallel,
            pipeline_model_parallel_size=pipeline_parallel,
            virtual_pipeline_model_parallel_size=virtual_pipeline_parallel,
            context_parallel_size=context_parallel,
            distributed_timeout_minutes=timeout_minutes,
        )
    env = DistEnv(rank=rank, world_size=world, local_rank=local_rank, device=device)
    logger.info(
        "rank %d/%d on %s: TP=%d PP=%d VPP=%s CP=%d DP=%d", rank, world, device, tensor_parallel,
        pipeline_parallel, virtual_pipeline_parallel, context_parallel,
        parallel_state.get_data_parallel_world_size(),
    )
    return env


def set_seeds(seed: int, use_cuda: bool) -> None:
    """Seed Python, NumPy and torch like Megatron-LM: ``seed + 100 * pp_rank``; CUDA RNG tracker on GPU.

    Tensor-parallel ranks share the seed, so ``use_cpu_initialization`` weights are identical at any TP.
    """
    stage_seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    if use_cuda:
        model_parallel_cuda_manual_seed(stage_seed)
    else:
        from srp_megatron.train.cpu import initialize_cpu_rng_tracker

        initialize_cpu_rng_tracker()


def data_parallel_size() -> int:
    """Data-parallel replicas (context-parallel ranks share their data)."""
    return parallel_state.get_data_parallel_world_size()


def barrier() -> None:
    """A barrier over all ranks (no-op before initialisation)."""
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    """Destroy megatron's model-parallel groups and the default process group."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
