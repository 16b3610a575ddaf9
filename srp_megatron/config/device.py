"""Where a model runs: one enum for every config that places one (the trainer, the hf-classifier labeler)."""

from __future__ import annotations

import enum


class Device(enum.StrEnum):
    """Where to run a model."""

    auto = "auto"
    """CUDA when available, else CPU."""
    cpu = "cpu"
    cuda = "cuda"
