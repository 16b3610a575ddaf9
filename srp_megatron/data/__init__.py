"""Datasets for training on rendered SRP corpora: ``ReflectionGPTDataset``, loss policies, upstream providers.

Names are imported on first use, so ``import srp_megatron.data`` stays light (megatron-core loads
only with the dataset classes).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LossAction": "srp_megatron.data.loss_policy",
    "LossPolicy": "srp_megatron.data.loss_policy",
    "LossPolicyConfig": "srp_megatron.data.loss_policy",
    "ReflectionGPTDataset": "srp_megatron.data.dataset",
    "ReflectionGPTDatasetConfig": "srp_megatron.data.dataset",
    "check_rendered_dataset": "srp_megatron.data.dataset",
    "BuildRanks": "srp_megatron.data.builder",
    "build_datasets": "srp_megatron.data.builder",
    "ReflectionGPTDatasetProvider": "srp_megatron.data.integrations.bridge",
    "extra_args_provider": "srp_megatron.data.integrations.megatron_lm",
    "train_valid_test_datasets_provider": "srp_megatron.data.integrations.megatron_lm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
