"""Training data: rendered datasets through megatron's builder, a resumable sampler, batches broadcast over TP.

Datasets are built by ``srp_megatron.data.builder`` on TP rank 0 of the first and last pipeline stages
(like Megatron-LM's ``is_dataset_built_on_rank``); the sampler is
Megatron-LM's ``MegatronPretrainingSampler`` rule (consecutive global batches, this DP rank's slice of
each), so a resumed run continues at exactly the next sample; TP rank 0 broadcasts each micro-batch
to the other TP ranks (``get_batch_on_this_tp_rank``) and context parallelism slices it per rank.
"""

from __future__ import annotations

import glob
import inspect
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.utils import get_attr_wrapped_model, get_batch_on_this_cp_rank

from srp_megatron.data import builder as data_builder
from srp_megatron.data.builder import BuildRanks
from srp_megatron.data.dataset import ReflectionGPTDatasetConfig
from srp_megatron.data.loss_policy import LossPolicy
from srp_megatron.errors import SRPError
from srp_megatron.formats.rendered import SPANS_SUFFIX, RenderMetadata
from srp_megatron.train.cpu import middle_stage_batch

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """Rendered datasets (``srp render`` outputs), their blend and split, and the loss policy."""

    paths: list[str] = field(default_factory=list)
    """Blend of dataset prefixes: ``[PREFIX, ...]`` or weight/prefix pairs ``[0.7, A, 0.3, B]``
    (Megatron-LM's ``--data-path``); split into train/valid/test by ``split``."""
    split: str = "969,30,1"
    """Train/valid/test proportions of ``paths``."""
    train_paths: list[str] = field(default_factory=list)
    """Per-split blend for training (instead of ``paths`` + ``split``)."""
    valid_paths: list[str] = field(default_factory=list)
    """Per-split blend for validation (with ``train_paths``; may be empty)."""
    test_paths: list[str] = field(default_factory=list)
    """Per-split blend for test (with ``train_paths``; may be empty)."""
    tokenizer: str = ""
    """Tokenizer directory; empty takes the one the first dataset was rendered with (``PREFIX.json``)."""
    loss_policy: str = "paper"
    """Loss policy preset (``conf/loss_policy/<name>.yaml``) or a YAML path: which span types are trained."""
    loss_policy_overrides: dict[str, str] = field(default_factory=dict)
    """Span type -> ``train``/``mask`` over the preset, e.g. ``{unsafe_text: mask}``."""
    return_span_types: bool = True
    """Read span types with the tokens, for per-span losses (text vs reflection) in the logs."""
    eod_mask_loss: bool = False
    """Do not train on predicting the token after an EOD (megatron's ``eod_mask_loss``)."""
    cache_dir: str = ""
    """Where megatron writes its index caches; empty means ``RUN_DIR/data_cache``."""
    num_workers: int = 2
    """DataLoader worker processes per data-loading rank; 0 loads in the training process."""

    def __post_init__(self):
        per_split = bool(self.train_paths or self.valid_paths or self.test_paths)
        if per_split and self.paths:
            raise ValueError(
                "data.paths and data.train_paths/valid_paths/test_paths are both set: use paths + split, "
                "or per-split blends, not both"
            )
        if self.valid_paths and not self.train_paths or self.test_paths and not self.train_paths:
            raise ValueError("data.valid_paths/test_paths are set but data.train_paths is empty: give train_paths")
        for name in ("paths", "train_paths", "valid_paths", "test_paths"):
            parse_blend(getattr(self, name), f"data.{name}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers}: must be >= 0")
        weights = self.split_weights()
        if len(weights) != 3 or min(weights) < 0 or weights[0] <= 0:
            raise ValueError(f"data.split='{self.split}': give three weights train,valid,test with train > 0")
        self.loss_policy_spec()  # an unknown preset or span type fails here, not after the model is built

    def split_weights(self) -> list[float]:
        """``split`` as numbers (megatron's ``"969,30,1"`` or ``"969/30/1"`` spelling)."""
        try:
            return [float(w) for w in self.split.replace("/", ",").split(",")]
        except ValueError:
            raise ValueError(f"data.split='{self.split}': expected numbers like '969,30,1'") from None

    def loss_policy_spec(self) -> Any:
        """The resolved ``LossPolicy`` (preset plus overrides)."""
        if self.loss_policy_overrides:
            return LossPolicy.resolve({"preset": self.loss_policy, **self.loss_policy_overrides})
        return LossPolicy.resolve(self.loss_policy)

    @property
    def per_split(self) -> bool:
        """True when the blends are given per split."""
        return bool(self.train_paths)

    def all_prefixes(self) -> list[str]:
        """Every dataset prefix named, in order."""
        out: list[str] = []
        for name in ("paths", "train_paths", "valid_paths", "test_paths"):
            blend = parse_blend(getattr(self, name), f"data.{name}")
            out += blend[0] if blend else []
        return out


def tokenizer_path(cfg: DataConfig) -> str:
    """``data.tokenizer``, else the tokenizer the first dataset was rendered with (from its ``PREFIX.json``)."""
    if cfg.tokenizer:
        return cfg.tokenizer

    try:
        return RenderMetadata.load(cfg.all_prefixes()[0]).tokenizer["path"]
    except FileNotFoundError as exc:
        raise SRPError(f"{exc}; or set data.tokenizer to the tokenizer directory") from None


def rendered_vocab_size(cfg: DataConfig) -> int | None:
    """The tokenizer vocabulary recorded in the first dataset's ``PREFIX.json``; None without one (plan)."""
    prefixes = cfg.all_prefixes()
    try:
        return int(RenderMetadata.load(prefixes[0]).tokenizer["vocab_size"]) if prefixes else None
    except FileNotFoundError:
        return None


def expand_prefix_glob(value: str, key: str) -> list[str]:
    """A prefix, or a glob over prefixes (``data/srp_*`` for the shards of ``srp render --num-shards``)."""
    if not any(c in value for c in "*?["):
        return [value]
    found = sorted(p.removesuffix(".bin") for p in glob.glob(value + ".bin"))
    prefixes = [p for p in found if not p.endswith(SPANS_SUFFIX)]
    if not prefixes:
        raise ValueError(f"{key}: '{value}' matches no rendered dataset (no {value}.bin)")
    return prefixes


def parse_blend(values: list[str], key: str) -> tuple[list[str], list[float] | None] | None:
    """``[A, B]`` -> ``([A, B], None)``; ``[0.7, A, 0.3, B]`` -> ``([A, B], [0.7, 0.3])``; ``[]`` -> None.

    Unweighted entries may be globs over prefixes (each shard then weighs by its size, as one dataset would).
    """
    if not values:
        return None
    values = [str(v).strip() for v in values]

    def is_number(text: str) -> bool:
        """True for a weight such as ``0.7``."""
        try:
            float(text)
            return True
        except ValueError:
            return False

    numbers = [is_number(v) for v in values]
    if not any(numbers):
        return [p for v in values for p in expand_prefix_glob(v, key)], None
    if len(values) % 2 or numbers[0::2] != [True] * (len(values) // 2) or any(numbers[1::2]):
        raise ValueError(f"{key}={values}: give prefixes only, or weight/prefix pairs like [0.7, A, 0.3, B]")
    if any(c in v for v in values[1::2] for c in "*?["):
        raise ValueError(f"{key}={values}: a glob cannot take a weight; list the prefixes, or drop the weights")
    weights = [float(w) for w in values[0::2]]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"{key}: weights {weights} must be >= 0 with a positive sum")
    return values[1::2], weights


def build_datasets(cfg: DataConfig, tokenizer: Any, sizes: list[int], *, seq_length: int, seed: int,
                   cache_dir: str, create_attention_mask: bool) -> tuple[Any, Any]:
    """Train and validation ``ReflectionGPTDataset`` blends (None on ranks that do not load data).

    Must run on every rank: megatron's builder synchronises while rank 0 writes the index caches.
    """
    for prefix in cfg.all_prefixes():
        if not prefix.startswith(("s3://", "msc://")) and not os.path.isfile(prefix + ".idx"):
            raise SRPError(f"data: rendered dataset '{prefix}' not found ({prefix}.idx is missing; run srp render)")
    blend_kwargs: dict[str, Any] = {"blend": parse_blend(cfg.paths, "data.paths"), "split": cfg.split}
    if cfg.per_split:
        blend_kwargs = {"blend_per_split": [parse_blend(cfg.train_paths, "data.train_paths"),
                                            parse_blend(cfg.valid_paths, "data.valid_paths"),
                                            parse_blend(cfg.test_paths, "data.test_paths")]}
    config = ReflectionGPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, path_to_cache=cache_dir, tokenizer=tokenizer,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=cfg.eod_mask_loss,
        create_attention_mask=create_attention_mask, loss_policy=cfg.loss_policy_spec(),
        return_span_types=cfg.return_span_types, **blend_kwargs,
    )
    train, valid, _ = data_builder.build_datasets(config, sizes, BuildRanks.data_stages)
    return train, valid


class PretrainingSampler:
    """Megatron-LM's ``MegatronPretrainingSampler`` rule: micro-batches of this DP rank from ``consumed_samples``.

    Global batch ``i`` is samples ``[i*G, (i+1)*G)``; within each run of ``micro_batch_size * dp_size``
    samples, DP rank ``r`` takes the ``r``-th slice. Iterating again restarts at ``consumed_samples``.
    """

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int):
        if consumed_samples > total_samples:
            raise SRPError(f"data position {consumed_samples} is past the end of the dataset "
                           f"({total_samples} samples)")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // (self.micro_batch_size * self.dp_size)

    def __iter__(self) -> Iterator[list[int]]:
        span = self.micro_batch_size * self.dp_size
        start = self.dp_rank * self.micro_batch_size
        for first in range(self.consumed_samples, self.total_samples - span + 1, span):
            yield list(range(first + start, first + start + self.micro_batch_size))


def build_loader(dataset: Any, consumed_samples: int, micro_batch_size: int, num_workers: int, pin_memory: bool):
    """A DataLoader over ``dataset`` for this DP rank, starting at ``consumed_samples``; None without a dataset."""
    if dataset is None:
        return None

    sampler = PretrainingSampler(
        len(dataset),
        consumed_samples,
        micro_batch_size,
        parallel_state.get_data_parallel_rank(),
        parallel_state.get_data_parallel_world_size(),
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def chunk_iterators(loader: Any, model_chunks: list) -> list:
    """A fresh iterator of ``loader`` for each model chunk that reads data (first or last pipeline stage),
    None for the others, as Megatron-LM passes them to the interleaved schedule."""
    out = []
    for chunk in model_chunks:
        vp = get_attr_wrapped_model(chunk, "vp_stage", allow_none=True)
        reads = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp) or \
            parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp)
        out.append(iter(loader) if loader is not None and reads else None)
    return out


@dataclass(frozen=True)
class BatchSpec:
    """Shapes and dtypes of a micro-batch, so TP ranks without data can receive it."""

    micro_batch_size: int
    seq_length: int
    attention_mask: bool
    """The dataset creates an attention mask (local layer spec) rather than the kernel (TE)."""
    span_types: bool
    """Span types travel with the batch (per-span losses)."""

    def keys(self, first_stage: bool, last_stage: bool) -> list[str]:
        """Keys a pipeline stage needs: inputs on the first, targets on the last."""
        keys = []
        if first_stage:
            keys += ["tokens", "position_ids"]
        if last_stage:
            keys += ["labels", "loss_mask"] + (["span_types"] if self.span_types else [])
        return keys + (["attention_mask"] if self.attention_mask else [])

    def empty(self, key: str, device: Any) -> Any:
        """A receive buffer for ``key``."""
        b, s = self.micro_batch_size, self.seq_length
        if key == "attention_mask":
            return torch.empty((b, 1, s, s), dtype=torch.bool, device=device)
        dtype = torch.float32 if key == "loss_mask" else torch.int64  # as GPTDataset / ReflectionGPTDataset
        return torch.empty((b, s), dtype=dtype, device=device)


def get_batch(data_iterator: Iterator | None, spec: BatchSpec, device: Any, vp_stage: int | None = None) -> dict:
    """This rank's micro-batch: TP rank 0 reads it and broadcasts to its TP group; CP slices the sequence.

    Middle pipeline stages get an empty dict (their input comes from the previous stage; on CPU, with the local
    spec, the causal mask: ``train/cpu.py``).
    """
    first = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    last = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    if not (first or last):
        return middle_stage_batch(spec.seq_length, spec.attention_mask, device)
    keys = spec.keys(first, last)
    if parallel_state.get_tensor_model_parallel_rank() == 0:
        raw = next(data_iterator)
        batch = {k: raw[k].to(device, non_blocking=True) for k in keys}
    else:
        batch = {k: spec.empty(k, device) for k in keys}
    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        src = parallel_state.get_tensor_model_parallel_src_rank()
        group = parallel_state.get_tensor_model_parallel_group()
        for key in keys:
            dist.broadcast(batch[key], src, group=group)
    if parallel_state.get_context_parallel_world_size() == 1:
        return batch
    # The CP group is named explicitly: megatron-core >= 0.18 slices over the default (world) group when it
    # is None, and added a required is_hybrid_cp argument.
    kwargs: dict[str, Any] = {"cp_group": parallel_state.get_context_parallel_group()}
    if "is_hybrid_cp" in inspect.signature(get_batch_on_this_cp_rank).parameters:
        kwargs["is_hybrid_cp"] = False
    return get_batch_on_this_cp_rank(batch, **kwargs)
