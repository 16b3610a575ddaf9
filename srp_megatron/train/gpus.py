"""A small table of accelerator specs for ``srp plan`` and for refusing precisions a GPU cannot run.

Peak numbers are NVIDIA's dense (no sparsity) tensor-core figures from the product datasheets; memory
is what the CUDA driver reports (``torch.cuda.get_device_properties().total_memory``), not the
marketing number, so plans compare against what a process can actually see.
"""

from __future__ import annotations

from dataclasses import dataclass

from srp_megatron.errors import SRPError

GIB = 1024**3


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator model."""

    name: str
    """Key used on the command line (``--gpu h100-80gb``)."""
    description: str
    """Product name."""
    memory_gib: float
    """Device memory visible to CUDA, in GiB."""
    bf16_tflops: float
    """Dense BF16 tensor-core peak, TFLOP/s."""
    fp8_tflops: float | None
    """Dense FP8 tensor-core peak, TFLOP/s; None when the GPU has no FP8 tensor cores."""
    fp4_tflops: float | None
    """Dense FP4 tensor-core peak, TFLOP/s; None when the GPU has no FP4 tensor cores."""
    compute_capability: tuple[int, int]
    """CUDA compute capability (major, minor): 8.0 Ampere, 8.9 Ada, 9.0 Hopper, 10.x Blackwell."""

    @property
    def memory_bytes(self) -> int:
        """Device memory in bytes."""
        return int(self.memory_gib * GIB)

    @property
    def supports_fp8(self) -> bool:
        """FP8 tensor cores (Ada, Hopper, Blackwell)."""
        return self.compute_capability >= (8, 9)

    @property
    def supports_mx_formats(self) -> bool:
        """MXFP8 / NVFP4 block-scaled formats need Blackwell (compute capability 10 or later)."""
        return self.compute_capability >= (10, 0)


# NOTE: memory_gib is the driver-reported total (e.g. H100 SXM 81559 MiB), peaks are dense datasheet values.
GPUS: dict[str, GPUSpec] = {
    g.name: g
    for g in (
        GPUSpec("h100-80gb", "NVIDIA H100 SXM5 80GB", 79.6, 989.4, 1978.9, None, (9, 0)),
        GPUSpec("h100-pcie", "NVIDIA H100 PCIe 80GB", 79.6, 756.0, 1513.0, None, (9, 0)),
        GPUSpec("h100-nvl", "NVIDIA H100 NVL 94GB", 93.1, 835.0, 1670.0, None, (9, 0)),
        GPUSpec("h200-141gb", "NVIDIA H200 SXM 141GB", 139.8, 989.4, 1978.9, None, (9, 0)),
        GPUSpec("h200-nvl", "NVIDIA H200 NVL 141GB", 139.8, 835.5, 1670.5, None, (9, 0)),
        GPUSpec("a100-80gb", "NVIDIA A100 SXM4 80GB", 79.2, 312.0, None, None, (8, 0)),
        GPUSpec("a100-40gb", "NVIDIA A100 SXM4 40GB", 39.4, 312.0, None, None, (8, 0)),
        GPUSpec("l40s", "NVIDIA L40S 48GB", 44.4, 362.0, 733.0, None, (8, 9)),
        GPUSpec("b200", "NVIDIA B200 (HGX) 180GB", 178.4, 2250.0, 4500.0, 9000.0, (10, 0)),
        GPUSpec("gb200", "NVIDIA GB200 (per GPU) 186GB", 184.0, 2500.0, 5000.0, 10000.0, (10, 0)),
    )
}


def get_gpu(name: str) -> GPUSpec:
    """The spec called ``name``; an unknown name is an error listing the known ones."""
    try:
        return GPUS[name]
    except KeyError:
        raise SRPError(f"--gpu {name!r}: unknown GPU (known: {', '.join(GPUS)})") from None


def runtime_compute_capability() -> tuple[int, int] | None:
    """Compute capability of this process's CUDA device, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability())  # type: ignore[return-value]
