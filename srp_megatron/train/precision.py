"""Numeric precision of training: BF16/FP32/FP16, FP8 through Transformer Engine, NVFP4; named presets.

``PrecisionConfig`` maps one to one onto megatron-core's ``TransformerConfig`` fields (``fp16``,
``bf16``, ``fp8``, ``fp8_recipe``, ``first_last_layers_bf16``, ...) and the gradient dtype of
``DistributedDataParallelConfig``. Presets live in ``conf/precision/<name>.yaml``:

- ``bf16``: BF16 weights and activations, FP32 master weights and gradients (the GPU default);
- ``fp32-cpu``: FP32 everywhere (CPU runs, tests);
- ``fp8-h100-tensorwise``: hybrid FP8 with per-tensor current scaling, first and last layer in BF16,
  FP8 parameters (Megatron-Bridge's ``bf16_with_fp8_current_scaling_mixed``, the H100 recipe);
- ``fp8-delayed``: hybrid FP8 with delayed scaling (amax history 1024, max), the conservative fallback;
- ``fp8-blockwise``: hybrid FP8 with 1x128 / 128x128 block scaling (Hopper, TE >= 2.3).

Checks that need the model, the layout or the GPU live in ``srp_megatron.train.validation``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch

from srp_megatron.config.loader import load_preset, preset_names


class DType(enum.StrEnum):
    """Dtype of weights and activations (the optimizer's master weights are FP32 for 16-bit dtypes)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class FP8Format(enum.StrEnum):
    """Transformer Engine FP8 format (megatron ``TransformerConfig.fp8``)."""

    none = "none"
    e4m3 = "e4m3"
    """E4M3 for every FP8 tensor."""
    hybrid = "hybrid"
    """E4M3 for activations and weights, E5M2 for gradients (the usual training choice)."""


class FP8Recipe(enum.StrEnum):
    """Transformer Engine scaling recipe (megatron ``TransformerConfig.fp8_recipe``)."""

    delayed = "delayed"
    """Per-tensor scales from an amax history (any FP8 GPU, the oldest and most conservative)."""
    tensorwise = "tensorwise"
    """Per-tensor current scaling (TE >= 2.2)."""
    blockwise = "blockwise"
    """1x128 activation / 128x128 weight block scales (Hopper, TE >= 2.3)."""
    mxfp8 = "mxfp8"
    """Microscaling FP8 with 32-element blocks: Blackwell only."""


class FP4Format(enum.StrEnum):
    """Transformer Engine FP4 (megatron ``TransformerConfig.fp4`` / ``fp4_recipe``)."""

    none = "none"
    nvfp4 = "nvfp4"
    """E2M1 values with 16-element block scales (NVFP4BlockScaling): Blackwell only, TE >= 2.7."""


class AmaxComputeAlgo(enum.StrEnum):
    """How delayed scaling picks the amax from its history."""

    most_recent = "most_recent"
    max = "max"


_TORCH_DTYPES = {DType.fp32: "float32", DType.bf16: "bfloat16", DType.fp16: "float16"}


@dataclass
class PrecisionConfig:
    """Precision of weights, activations, GEMMs and gradients."""

    preset: str = ""
    """Name of the ``conf/precision`` preset these values came from (informational; set by the loader)."""
    dtype: DType = DType.bf16
    """Weights and activations dtype: ``bf16`` on GPU, ``fp32`` (or ``bf16``) on CPU."""
    fp8: FP8Format = FP8Format.none
    """FP8 GEMMs through Transformer Engine: ``none``, ``e4m3`` or ``hybrid``."""
    fp8_recipe: FP8Recipe = FP8Recipe.tensorwise
    """FP8 scaling recipe (used only when ``fp8`` is set)."""
    fp8_param: bool = False
    """Keep GEMM weights in FP8 and all-gather them in FP8 (needs the distributed optimizer)."""
    fp8_margin: int = 0
    """Delayed scaling: margin (a power of two) subtracted from the scale exponent."""
    fp8_amax_history_len: int = 1
    """Delayed scaling: length of the amax history window."""
    fp8_amax_compute_algo: AmaxComputeAlgo = AmaxComputeAlgo.most_recent
    """Delayed scaling: ``most_recent`` or ``max`` over the history window."""
    fp8_wgrad: bool = True
    """Compute weight gradients in FP8 too; false keeps the wgrad GEMM in higher precision."""
    first_last_layers_bf16: bool = False
    """Keep the first and last transformer layers out of FP8/FP4 (not with delayed scaling)."""
    num_layers_at_start_in_bf16: int = 1
    """Layers kept in BF16 at the start of the model when ``first_last_layers_bf16`` is set."""
    num_layers_at_end_in_bf16: int = 1
    """Layers kept in BF16 at the end of the model when ``first_last_layers_bf16`` is set."""
    fp4: FP4Format = FP4Format.none
    """NVFP4 GEMMs (Blackwell only); exclusive with ``fp8``."""
    grad_reduce_in_fp32: bool = True
    """Accumulate and reduce gradients in FP32 (4 bytes/parameter); false keeps them in ``dtype``."""

    def __post_init__(self):
        if self.fp8 != FP8Format.none and self.fp4 != FP4Format.none:
            raise ValueError(
                f"precision.fp8={self.fp8.value} and precision.fp4={self.fp4.value}: choose one "
                "(set the other to none)"
            )
        if self.fp8_param and self.fp8 == FP8Format.none:
            raise ValueError("precision.fp8_param=true needs FP8: set precision.fp8=hybrid or fp8_param=false")
        low = self.fp8 != FP8Format.none or self.fp4 != FP4Format.none
        if low and self.dtype == DType.fp32:
            raise ValueError(
                "precision.dtype=fp32 with FP8/FP4 GEMMs: set precision.dtype=bf16 (FP8 runs keep BF16 activations)"
            )
        if self.fp8 != FP8Format.none and self.fp8_recipe == FP8Recipe.delayed and self.first_last_layers_bf16:
            raise ValueError(
                "precision.first_last_layers_bf16=true is not supported with fp8_recipe=delayed "
                "(megatron-core refuses it): use fp8_recipe=tensorwise or set first_last_layers_bf16=false"
            )
        for name in ("num_layers_at_start_in_bf16", "num_layers_at_end_in_bf16", "fp8_margin"):
            if getattr(self, name) < 0:
                raise ValueError(f"precision.{name}={getattr(self, name)}: must be >= 0")
        if self.fp8_amax_history_len < 1:
            raise ValueError(f"precision.fp8_amax_history_len={self.fp8_amax_history_len}: must be >= 1")

    @property
    def uses_fp8(self) -> bool:
        """True when GEMMs run in FP8."""
        return self.fp8 != FP8Format.none

    @property
    def uses_fp4(self) -> bool:
        """True when GEMMs run in NVFP4."""
        return self.fp4 != FP4Format.none

    @property
    def needs_blackwell(self) -> bool:
        """MXFP8 and NVFP4 run only on compute capability 10 or later."""
        return self.uses_fp4 or (self.uses_fp8 and self.fp8_recipe == FP8Recipe.mxfp8)

    def torch_dtype(self) -> Any:
        """The ``torch.dtype`` of weights and activations."""
        return getattr(torch, _TORCH_DTYPES[self.dtype])

    @property
    def param_bytes(self) -> int:
        """Bytes per weight element in ``dtype``."""
        return 4 if self.dtype == DType.fp32 else 2

    def transformer_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for megatron-core's ``TransformerConfig`` (dtype fields excluded)."""
        kwargs: dict[str, Any] = {"fp16": self.dtype == DType.fp16, "bf16": self.dtype == DType.bf16}
        if self.uses_fp8:
            kwargs.update(
                fp8=self.fp8.value,
                fp8_recipe=self.fp8_recipe.value,
                fp8_param=self.fp8_param,
                fp8_margin=self.fp8_margin,
                fp8_amax_history_len=self.fp8_amax_history_len,
                fp8_amax_compute_algo=self.fp8_amax_compute_algo.value,
                fp8_wgrad=self.fp8_wgrad,
            )
        if self.uses_fp4:
            kwargs.update(fp4="e2m1", fp4_recipe="nvfp4")
        if self.first_last_layers_bf16 and (self.uses_fp8 or self.uses_fp4):
            kwargs.update(
                first_last_layers_bf16=True,
                num_layers_at_start_in_bf16=self.num_layers_at_start_in_bf16,
                num_layers_at_end_in_bf16=self.num_layers_at_end_in_bf16,
            )
        return kwargs

    def ddp_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for megatron-core's ``DistributedDataParallelConfig``."""
        return {"grad_reduce_in_fp32": self.grad_reduce_in_fp32, "fp8_param_gather": self.fp8_param}


def precision_preset_names() -> list[str]:
    """Names of the packaged precision presets."""
    return preset_names("precision")


def load_precision_preset(name: str) -> dict[str, Any]:
    """The values of ``conf/precision/<name>.yaml`` (or of a YAML path) as a plain dict, ``preset`` set."""
    return load_preset(name, "precision")
