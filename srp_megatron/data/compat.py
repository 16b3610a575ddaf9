"""megatron-core version guards for the datasets: 0.16 (Python 3.11) and 0.17-0.19 (Python 3.12).

What differs, read from the megatron-core sources:

- ``GPTDataset._query_document_sample_shuffle_indices`` returns ``(text, document_ids)`` up to 0.18
  and ``(text, document_ids, document_lengths)`` from 0.19, where ``GPTDataset.__getitem__`` uses the
  per-document token counts for ``inter_document_masking`` (``cu_seqlens``). Both arrived in one
  change, so the config field is the feature test.
- ``GPTDatasetConfig`` gains fields across releases (``inter_document_masking`` in 0.19): callers that
  map Megatron-LM arguments onto it pass only the fields the installed version has.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np


@functools.cache
def gpt_config_fields() -> frozenset[str]:
    """Names of the installed ``GPTDatasetConfig``'s constructor fields."""
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig

    return frozenset(f.name for f in dataclasses.fields(GPTDatasetConfig) if f.init)


@functools.cache
def query_returns_document_lengths() -> bool:
    """True when the installed ``GPTDataset`` expects three values from its sample query (0.19+)."""
    return "inter_document_masking" in gpt_config_fields()


def query_result(
    text: np.ndarray, document_ids: np.ndarray, document_lengths: Sequence[int]
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, list[int]]:
    """What ``_query_document_sample_shuffle_indices`` returns in the installed megatron-core."""
    if query_returns_document_lengths():
        return text, document_ids, list(document_lengths)
    return text, document_ids


def mcore_version() -> str:
    """The installed megatron-core version string."""
    from megatron.core.package_info import __version__

    return __version__
