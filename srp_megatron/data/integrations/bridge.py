"""Megatron-Bridge integration: a ``DatasetProvider`` that builds ``ReflectionGPTDataset`` splits.

Bridge routes its own ``GPTDatasetConfig`` (and subclasses) to the stock ``GPTDataset``, so SRP
plugs in through Bridge's custom-dataset protocol instead: a ``DatasetProvider`` dataclass whose
``build_datasets(context)`` gets the sample counts and tokenizer. Set it as ``ConfigContainer.dataset``;
Bridge's stock ``forward_step`` trains on the samples unchanged (it keeps ``tokens``, ``labels``,
``loss_mask``, ``position_ids`` and drops other keys). Without Megatron-Bridge installed, the class
derives from a local stand-in with the same dataloader fields, so it stays importable and usable.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from megatron.core.utils import log_single_rank

from srp_megatron.data.builder import BuildRanks, build_datasets
from srp_megatron.data.dataset import ReflectionGPTDatasetConfig
from srp_megatron.data.loss_policy import DEFAULT_POLICY, LossPolicy

logger = logging.getLogger(__name__)

try:  # Bridge 0.3-0.6 export it here (0.6 re-exports it from megatron.bridge.data.base)
    from megatron.bridge.training.config import DatasetProvider as _DatasetProviderBase

    HAVE_BRIDGE = True
except ModuleNotFoundError as exc:
    if not (exc.name or "").startswith("megatron.bridge"):
        raise  # Bridge is installed but one of its own dependencies is missing: say so
    HAVE_BRIDGE = False

    @dataclass(kw_only=True)
    class _DatasetProviderBase(ABC):  # type: ignore[no-redef]
        """Stand-in for Bridge's ``DatasetProvider``: its ``DataloaderConfig`` fields and protocol."""

        dataloader_type: str | None = "single"
        """``single`` (one pass), ``cyclic``, ``batch`` or ``external``, as in Bridge."""
        num_workers: int = 2
        """DataLoader worker processes."""
        data_sharding: bool = True
        """Shard the data across data-parallel ranks."""
        pin_memory: bool = True
        """Pin host memory in the DataLoader."""
        persistent_workers: bool = False
        """Keep DataLoader workers alive between epochs."""

        @abstractmethod
        def build_datasets(self, context: Any) -> tuple[Any, Any, Any]:
            """Train, valid and test datasets for ``context`` (sample counts, tokenizer)."""


@dataclass(kw_only=True)
class ReflectionGPTDatasetProvider(_DatasetProviderBase):
    """Bridge ``DatasetProvider`` for rendered SRP datasets; fields mirror ``ReflectionGPTDatasetConfig``."""

    seq_length: int
    """Sequence length (must equal the model's)."""
    blend: tuple[list[str], list[float] | None] | None = None
    """Rendered prefixes and optional weights, e.g. ``(["/data/srp_text_document"], None)``."""
    blend_per_split: list[tuple[list[str], list[float] | None] | None] | None = None
    """One blend per split (train, valid, test), instead of ``blend`` + ``split``."""
    split: str | None = None
    """Train,valid,test weights of ``blend``'s documents, e.g. ``969,30,1``."""
    random_seed: int = 1234
    """Seed of the document and sample shuffles."""
    path_to_cache: str | None = None
    """Directory of the index caches (default: beside each prefix)."""
    reset_position_ids: bool = False
    """Restart position ids after each EOD."""
    reset_attention_mask: bool = False
    """Stop attention across EOD (dense mask, per sample)."""
    eod_mask_loss: bool = False
    """No loss at positions whose input is EOD."""
    create_attention_mask: bool = True
    """Return a dense attention mask (Bridge reads this field to size its broadcast buffers)."""
    skip_getting_attention_mask_from_dataset: bool = True
    """Bridge's step ignores the dataset's mask and lets the attention backend build it."""
    mmap_bin_files: bool = True
    """Memory-map the token ``.bin`` files."""
    num_dataset_builder_threads: int = 1
    """Threads building the per-prefix indices."""
    mid_level_dataset_surplus: float = 0.005
    """Extra samples per prefix so a blend never runs short."""
    loss_policy: Any = DEFAULT_POLICY
    """Preset name, YAML path or mapping ``{span type: train|mask}`` (see ``conf/loss_policy``)."""
    return_span_types: bool = False
    """Also return ``span_types`` (Bridge's stock step drops it)."""
    check_tokenizer: bool = True
    """Compare each prefix's ``PREFIX.json`` tokenizer with the training tokenizer."""
    tokenizer: Any = None
    """Set by Bridge's setup (``cfg.dataset.tokenizer``); ``context.tokenizer`` takes precedence."""

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.seq_length <= 0:
            raise ValueError(f"seq_length is {self.seq_length}: give the model's sequence length (> 0)")
        if isinstance(self.loss_policy, (str, Mapping, LossPolicy)):
            LossPolicy.resolve(self.loss_policy)  # fail at config time, not after model setup
        else:
            raise ValueError(f"loss_policy {self.loss_policy!r}: give a preset name, a YAML path or a mapping")

    def dataset_config(self, tokenizer: Any):
        """The ``ReflectionGPTDatasetConfig`` these fields describe."""
        return ReflectionGPTDatasetConfig(
            random_seed=self.random_seed,
            sequence_length=self.seq_length,
            blend=self.blend,
            blend_per_split=self.blend_per_split,
            split=self.split,
            path_to_cache=self.path_to_cache,
            tokenizer=tokenizer,
            reset_position_ids=self.reset_position_ids,
            reset_attention_mask=self.reset_attention_mask,
            eod_mask_loss=self.eod_mask_loss,
            create_attention_mask=self.create_attention_mask,
            mmap_bin_files=self.mmap_bin_files,
            num_dataset_builder_threads=self.num_dataset_builder_threads,
            mid_level_dataset_surplus=self.mid_level_dataset_surplus,
            loss_policy=self.loss_policy,
            return_span_types=self.return_span_types,
            check_tokenizer=self.check_tokenizer,
        )

    def build_datasets(self, context: Any) -> tuple[Any, Any, Any]:
        """Bridge's protocol: train/valid/test splits for ``context``'s sample counts and tokenizer."""
        tokenizer = getattr(context, "tokenizer", None) or self.tokenizer
        config = self.dataset_config(tokenizer)
        sizes = [context.train_samples, context.valid_samples, context.test_samples]
        log_single_rank(logger, logging.INFO, f"building SRP datasets {sizes}, loss policy {config.loss_policy}")
        # Bridge builds its GPT datasets on every rank (each TP rank loads its own batches).
        return build_datasets(config, sizes, BuildRanks.every)
