"""Distributed checkpoints with megatron-core's ``dist_checkpointing``, laid out like Megatron-LM's.

``SAVE_DIR/iter_0000100/`` holds model, optimizer, scheduler, RNG states, the step and the consumed
samples (``torch_dist`` format, reshardable to another TP/PP/DP layout); ``SAVE_DIR/
latest_checkpointed_iteration.txt`` names the newest complete one and is replaced atomically only after
every rank has finished writing, so a crash mid-save never points a resume at a partial checkpoint.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state, tensor_parallel
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper
from megatron.core.utils import unwrap_model

from srp_megatron.errors import SRPError

logger = logging.getLogger(__name__)

TRACKER_FILE = "latest_checkpointed_iteration.txt"


class ResumeMode(enum.StrEnum):
    """Whether a run continues from ``checkpoint.load_dir``."""

    auto = "auto"
    """Resume from the latest checkpoint when there is one, else start fresh."""
    never = "never"
    """Always start fresh (a later save still refuses to overwrite nothing: iterations restart at 0)."""
    required = "required"
    """Resume, and fail if there is no checkpoint."""


@dataclass
class CheckpointConfig:
    """Saving and resuming."""

    save_dir: str = ""
    """Checkpoint directory; empty means ``RUN_DIR/checkpoints``."""
    save_interval: int = 0
    """Save every this many iterations; 0 saves only at the end (see ``save_at_end``)."""
    save_at_end: bool = True
    """Save after the last iteration."""
    load_dir: str = ""
    """Directory to resume from; empty means ``save_dir``."""
    resume: ResumeMode = ResumeMode.auto
    """``auto`` (resume if a checkpoint exists), ``never`` or ``required``."""
    fully_parallel_save: bool = True
    """Spread the writing of replicated tensors over data-parallel ranks (Megatron-LM's default)."""
    optim_fully_reshardable: bool = False
    """Distributed optimizer only: save its state so a resume may change TP/PP too (slower saves);
    the default ``dp_reshardable`` format allows changing only the data-parallel size."""

    def __post_init__(self):
        if self.save_interval < 0:
            raise ValueError(f"checkpoint.save_interval={self.save_interval}: must be >= 0 (0 saves only at the end)")


def require_checkpoint_dependencies() -> None:
    """megatron-core's checkpoint writer imports ``psutil``; fail before training rather than at the first save."""
    import importlib.util

    if importlib.util.find_spec("psutil") is None:
        raise SRPError("saving checkpoints needs psutil (megatron-core's dist_checkpointing writer uses it): "
                       "pip install psutil, or set checkpoint.save_at_end=false and checkpoint.save_interval=0")


def checkpoint_path(directory: str, iteration: int) -> str:
    """``DIR/iter_0000100``: the directory of one checkpoint."""
    return os.path.join(directory, f"iter_{iteration:07d}")


def latest_iteration(directory: str) -> int | None:
    """Iteration named by the tracker file of ``directory``, or None when there is none."""
    path = os.path.join(directory, TRACKER_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        text = f.read().strip()
    try:
        return int(text)
    except ValueError:
        raise SRPError(f"{path}: expected an iteration number, got {text!r}") from None


def _sharding_metadata(cfg: CheckpointConfig, use_distributed_optimizer: bool) -> dict:
    """Content metadata that fixes the sharded format (as Megatron-LM's ``_build_sharded_state_dict_metadata``)."""
    metadata: dict[str, Any] = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}
    if use_distributed_optimizer:
        metadata["distrib_optim_sharding_type"] = "fully_reshardable" if cfg.optim_fully_reshardable \
            else "dp_reshardable"
    return metadata


def require_reshardable_optimizer(metadata: dict | None, saved: Any, current: dict, path: str) -> None:
    """Refuse a distributed-optimizer resume across a TP/PP change that the saved format cannot reshard
    (Megatron-LM refuses it too); the default ``dp_reshardable`` format changes only the DP size."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    kind = (metadata or {}).get("distrib_optim_sharding_type", "dp_reshardable")
    if kind not in DistributedOptimizer.checkpoint_fully_reshardable_formats:
        raise SRPError(f"{path}: saved with TP/PP {saved} and the distributed optimizer in the '{kind}' format, "
                       f"which reshards across data-parallel ranks only; this run is {current}. Resume with the "
                       "saved TP/PP and checkpoint.optim_fully_reshardable=true, so that the next checkpoint "
                       "can change TP/PP")


def _parallel_layout() -> dict:
    """TP and PP sizes: what the RNG states of a checkpoint are keyed by."""
    return {"tp": parallel_state.get_tensor_model_parallel_world_size(),
            "pp": parallel_state.get_pipeline_model_parallel_world_size()}


def _rng_state(on_gpu: bool) -> Any:
    """This rank's RNG states as a ``ShardedObject`` keyed by (pp, tp) rank, one replica per DP group."""
    state = {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "rng_tracker_states": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if on_gpu:
        state["cuda_rng_state"] = torch.cuda.get_rng_state()
    return ShardedObject(
        "rng_state",
        [state],
        (parallel_state.get_pipeline_model_parallel_world_size(),
         parallel_state.get_tensor_model_parallel_world_size()),
        (parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_tensor_model_parallel_rank()),
        replica_id=parallel_state.get_data_parallel_rank(with_context_parallel=True),
    )


def _state_dict(model_chunks: list, optimizer: Any, scheduler: Any, metadata: dict, on_gpu: bool, loading: bool):
    call_metadata = {**metadata, "dp_cp_group": parallel_state.get_data_parallel_group(with_context_parallel=True)}
    state: dict[str, Any] = {"checkpoint_version": 3.0}
    chunks = unwrap_model(model_chunks)
    for i, chunk in enumerate(chunks):
        state["model" if len(chunks) == 1 else f"model{i}"] = chunk.sharded_state_dict(metadata=call_metadata)
    state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=loading, metadata=call_metadata)
    state["opt_param_scheduler"] = scheduler.state_dict()
    state["rng_state"] = _rng_state(on_gpu)
    return state


def save_checkpoint(
    cfg: CheckpointConfig,
    directory: str,
    iteration: int,
    model_chunks: list,
    optimizer: Any,
    scheduler: Any,
    *,
    progress: dict,
    use_distributed_optimizer: bool,
    on_gpu: bool,
) -> str:
    """Save everything needed to continue at ``iteration``; ``progress`` holds step and data position.

    On CPU, call inside ``train.cpu.cuda_calls_on_cpu()`` (the ``Trainer`` holds it): ``dist_checkpointing``
    synchronises CUDA.
    """
    path = checkpoint_path(directory, iteration)
    if dist.get_rank() == 0:
        if os.path.isdir(path):  # left over by a save that crashed before the tracker was updated
            shutil.rmtree(path)
        os.makedirs(path)
    dist.barrier()
    metadata = _sharding_metadata(cfg, use_distributed_optimizer)
    strategy = get_default_save_sharded_strategy()
    if cfg.fully_parallel_save and parallel_state.get_data_parallel_world_size(with_context_parallel=True) > 1:
        strategy = FullyParallelSaveStrategyWrapper(
            strategy, parallel_state.get_data_parallel_group(with_context_parallel=True)
        )
    state = _state_dict(model_chunks, optimizer, scheduler, metadata, on_gpu, loading=False)
    state["iteration"] = iteration
    state["srp_progress"] = dict(progress)
    state["parallel_layout"] = _parallel_layout()
    dist_checkpointing.save(state, path, strategy, content_metadata=metadata)
    dist.barrier()
    if dist.get_rank() == 0:
        tracker = os.path.join(directory, TRACKER_FILE)
        with open(tracker + ".tmp", "w", encoding="utf-8") as f:
            f.write(f"{iteration}\n")
        os.replace(tracker + ".tmp", tracker)
    dist.barrier()
    logger.info("saved checkpoint %s", path)
    return path


def load_checkpoint(
    cfg: CheckpointConfig,
    directory: str,
    model_chunks: list,
    optimizer: Any,
    scheduler: Any,
    *,
    use_distributed_optimizer: bool,
    on_gpu: bool,
) -> dict:
    """Restore model, optimizer, scheduler and RNG from the latest checkpoint; returns its progress dict.

    On CPU, call inside ``train.cpu.cuda_calls_on_cpu()`` (the ``Trainer`` holds it).
    """
    iteration = latest_iteration(directory)
    if iteration is None:
        raise SRPError(f"no checkpoint to resume from in '{directory}' (no {TRACKER_FILE})")
    path = checkpoint_path(directory, iteration)
    if not os.path.isdir(path):
        raise SRPError(f"{os.path.join(directory, TRACKER_FILE)} names iteration {iteration} but '{path}' is missing")
    if use_distributed_optimizer:
        from megatron.core.optimizer import distrib_optimizer

        if not getattr(distrib_optimizer, "HAVE_APEX_OR_TE", True):
            raise SRPError(f"resuming from '{directory}' with parallel.use_distributed_optimizer=true needs "
                           "Transformer Engine or Apex (megatron-core cannot load the distributed optimizer's "
                           "state into torch's AdamW): resume on a GPU image, or train with it false")
    common = dist_checkpointing.load_common_state_dict(path)
    # The format the checkpoint was written in (it may predate a change of optim_fully_reshardable).
    metadata = dist_checkpointing.load_content_metadata(preloaded_state_dict=common) or \
        _sharding_metadata(cfg, use_distributed_optimizer)
    chunks = unwrap_model(model_chunks)
    saved_layout = common.get("parallel_layout")
    same_layout = saved_layout == _parallel_layout()
    if use_distributed_optimizer and not same_layout:
        require_reshardable_optimizer(metadata, saved_layout, _parallel_layout(), path)
    request = _state_dict(model_chunks, optimizer, scheduler, metadata, on_gpu, loading=True)
    if not same_layout:  # RNG states belong to (PP, TP) ranks: like Megatron-LM, start them fresh
        logger.warning("checkpoint %s was saved with %s, this run is %s: weights and optimizer are "
                       "resharded, RNG states start fresh", path, saved_layout, _parallel_layout())
        del request["rng_state"]
    loaded = dist_checkpointing.load(request, path)
    for i, chunk in enumerate(chunks):
        chunk.load_state_dict(loaded["model" if len(chunks) == 1 else f"model{i}"], strict=True)
    optimizer.load_state_dict(loaded["optimizer"])
    try:
        scheduler.load_state_dict(loaded["opt_param_scheduler"])
    except AssertionError as exc:
        raise SRPError(f"{path}: the schedule differs from the checkpoint's ({exc}); resume with the same "
                       "optimizer/scheduler settings or start a new run directory") from None
    if same_layout:
        _restore_rng(loaded["rng_state"], on_gpu, tensor_parallel)
    progress = dict(loaded.get("srp_progress") or {})
    progress.setdefault("iteration", int(loaded["iteration"]))
    logger.info("resumed from %s (iteration %d)", path, progress["iteration"])
    return progress


def _restore_rng(rng_state: Any, on_gpu: bool, tensor_parallel: Any) -> None:
    state = rng_state[0]
    random.setstate(state["random_rng_state"])
    np.random.set_state(state["np_rng_state"])
    torch.set_rng_state(state["torch_rng_state"])
    if on_gpu and "cuda_rng_state" in state:
        torch.cuda.set_rng_state(state["cuda_rng_state"])
    if state["rng_tracker_states"]:
        tensor_parallel.get_cuda_rng_tracker().set_states(state["rng_tracker_states"])
