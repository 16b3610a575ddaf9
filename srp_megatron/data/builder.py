"""The one place ``ReflectionGPTDataset`` splits are built: a config, the split sizes and which ranks build.

``srp pretrain`` (``train/data.py``), the Megatron-LM provider and the Megatron-Bridge provider each map their
own settings to a :class:`~srp_megatron.data.dataset.ReflectionGPTDatasetConfig` and call :func:`build_datasets`.
It runs megatron-core's ``BlendedMegatronDatasetBuilder``, which must be called on every rank: rank 0 writes the
index caches while the others wait, then the ranks that build load them.
"""

from __future__ import annotations

import enum
from functools import partial

from megatron.core import parallel_state
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

from srp_megatron.data.dataset import ReflectionGPTDataset, ReflectionGPTDatasetConfig


class BuildRanks(enum.StrEnum):
    """Which ranks hold datasets (the others get None and receive their batches by broadcast)."""

    data_stages = "data_stages"
    """Tensor-parallel rank 0 of the pipeline stages that read data: the first (tokens) and the last (labels),
    as Megatron-LM's ``pretrain_gpt.py``; TP rank 0 broadcasts each batch to its TP group."""
    every = "every"
    """Every rank (Megatron-Bridge: each tensor-parallel rank loads its own batches)."""


def is_built_on_rank(ranks: BuildRanks, vp_stage: int | None = None, middle_stages: bool = False) -> bool:
    """Whether this rank builds under ``ranks``; ``vp_stage`` names a virtual pipeline stage (None: the whole
    rank), ``middle_stages`` builds on middle stages too (multi-token-prediction layers there need labels)."""
    if ranks == BuildRanks.every:
        return True
    if parallel_state.get_tensor_model_parallel_rank() != 0:
        return False
    ignore_virtual = vp_stage is None
    return (
        middle_stages
        or parallel_state.is_pipeline_first_stage(ignore_virtual=ignore_virtual, vp_stage=vp_stage)
        or parallel_state.is_pipeline_last_stage(ignore_virtual=ignore_virtual, vp_stage=vp_stage)
    )


def build_datasets(
    config: ReflectionGPTDatasetConfig,
    sizes: list[int | None],
    ranks: BuildRanks = BuildRanks.data_stages,
    *,
    vp_stage: int | None = None,
    middle_stages: bool = False,
) -> tuple:
    """Train, valid and test ``ReflectionGPTDataset`` blends for ``sizes`` samples (None where not built)."""
    rule = partial(is_built_on_rank, ranks, vp_stage, middle_stages)
    return tuple(BlendedMegatronDatasetBuilder(ReflectionGPTDataset, sizes, rule, config).build())
