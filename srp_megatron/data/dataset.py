"""``ReflectionGPTDataset``: megatron-core's ``GPTDataset`` over rendered SRP datasets, plus the loss policy.

Samples are exactly ``GPTDataset``'s (same keys, dtypes, shapes, index caches and sample stream);
the only change is that ``loss_mask`` is multiplied by the loss policy's 0/1 value for the span type
of each *label* token. Span types come from ``PREFIX_spans.bin``, read at the same (document, offset,
length) windows as the tokens (see ``srp_megatron/prep/rendered.py`` for the format).

Which span type decides a position's loss: position ``t`` has input ``tokens[t] = text[t]`` and is
trained to predict ``labels[t] = text[t + 1]``, so the policy is looked up with the span type of
``text[t + 1]``. Masking ``reflection`` therefore removes the loss of predicting `` Safe`` while the
position whose input is `` </think>`` still learns the text that follows the reflection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.object_storage_utils import is_object_storage_path
from megatron.core.datasets.utils import Split
from megatron.core.utils import log_single_rank

from srp_megatron.data import compat
from srp_megatron.data.loss_policy import DEFAULT_POLICY, LossPolicy
from srp_megatron.errors import SRPError
from srp_megatron.formats.rendered import SPAN_DTYPE, RenderMetadata, SpanType, metadata_path, spans_prefix

logger = logging.getLogger(__name__)


@dataclass
class ReflectionGPTDatasetConfig(GPTDatasetConfig):
    """``GPTDatasetConfig`` for rendered SRP datasets (``blend`` prefixes written by ``srp render``)."""

    loss_policy: str | Mapping[str, Any] | LossPolicy = DEFAULT_POLICY
    """A preset name in ``conf/loss_policy/``, a YAML path, a mapping ``{span type: train|mask}``
    (optionally with ``preset: NAME`` as the base), or a ``LossPolicy``. Resolved to a ``LossPolicy``
    by ``__post_init__``."""

    return_span_types: bool = False
    """Also return ``span_types`` (int64 ``[seq]``, the span type of each label token) for per-span
    loss logging; Megatron-LM's and Megatron-Bridge's stock steps ignore the extra key."""

    check_tokenizer: bool = True
    """Check each prefix's ``PREFIX.json`` against ``tokenizer``: content hash and vocab size when the
    tokenizer exposes ``identity`` (srp's ``Tokenizer``), else vocab size and EOD id."""

    def __post_init__(self) -> None:
        # GPTDatasetConfig asserts these; say which field and how to fix it instead.
        for name in ("reset_position_ids", "reset_attention_mask", "eod_mask_loss"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is None: set it to True or False (GPTDatasetConfig has no default)")
        if self.tokenizer is None:
            raise ValueError("tokenizer is None: give the training tokenizer (with eod, pad, vocab_size)")
        if self.blend is None and not any(self.blend_per_split or ()):
            raise ValueError(
                "blend and blend_per_split are both None: ReflectionGPTDataset reads rendered prefixes, "
                "give blend=([prefix, ...], weights or None) or blend_per_split (mock data is not supported)"
            )
        if self.blend is not None and self.split is None:
            raise ValueError("split is None but blend is set: give train,valid,test weights, e.g. split='969,30,1'")
        super().__post_init__()
        self.loss_policy = LossPolicy.resolve(self.loss_policy)


class _SpanStream:
    """The span codes of ``PREFIX_spans.bin``, memory-mapped once and sliced at token windows."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._open()

    def _open(self) -> None:
        path = spans_prefix(self.prefix)
        # The .idx gives each document's pointer; for uint8 codes a byte pointer is an element offset.
        self._index = IndexedDataset(path, mmap=True)
        self._pointers = self._index.index.sequence_pointers
        self._lengths = self._index.sequence_lengths
        size = os.path.getsize(path + ".bin")
        # A plain ndarray view of the map: slicing it is several times cheaper than slicing a np.memmap.
        self._codes = np.memmap(path + ".bin", dtype=SPAN_DTYPE, mode="r").view(np.ndarray) if size else None

    def window(self, document: int, offset: int, length: int) -> np.ndarray:
        """Span codes of ``length`` tokens of ``document`` from ``offset`` (the token window)."""
        start = int(self._pointers[document]) + offset
        return self._codes[start : start + length]

    def __getstate__(self) -> dict:
        # Pickled into DataLoader workers: reopen the maps there instead of copying the data.
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.prefix = state["prefix"]
        self._open()


def _tokenizer_attr(tokenizer: Any, name: str) -> Any:
    try:
        return getattr(tokenizer, name, None)
    except NotImplementedError:  # megatron tokenizers raise it for ids they do not define
        return None


def _require_files(prefix: str, what: str) -> None:
    missing = [prefix + ext for ext in (".bin", ".idx") if not os.path.isfile(prefix + ext)]
    if missing:
        raise SRPError(f"{what}: {' and '.join(missing)} not found")


def _check_aligned(tokens: IndexedDataset, spans: IndexedDataset, prefix: str) -> None:
    where = f"'{spans_prefix(prefix)}.bin/.idx' does not match the tokens '{prefix}.bin/.idx'"
    if spans.index.dtype != SPAN_DTYPE:
        raise SRPError(f"{where}: span codes are {np.dtype(spans.index.dtype).name}, expected uint8")
    for name in ("sequence_lengths", "document_indices"):
        a, b = getattr(tokens, name), getattr(spans, name)
        if a.shape != b.shape:
            raise SRPError(f"{where}: {len(b)} {name} vs {len(a)} (re-render the prefix)")
        if not np.array_equal(a, b):
            first = int(np.flatnonzero(a != b)[0])
            raise SRPError(f"{where}: {name}[{first}] is {b[first]} vs {a[first]} (re-render the prefix)")
    expected = int(spans.index.sequence_pointers[-1] + spans.sequence_lengths[-1]) if len(spans) else 0
    size = os.path.getsize(spans_prefix(prefix) + ".bin")
    if size != expected:
        raise SRPError(f"{where}: '{spans_prefix(prefix)}.bin' has {size} bytes, its .idx needs {expected}")


def _check_tokenizer(prefix: str, tokenizer: Any) -> None:
    try:
        rendered = RenderMetadata.load(prefix).tokenizer
    except FileNotFoundError as exc:
        raise SRPError(f"{exc}; or set check_tokenizer=False") from None
    identity = _tokenizer_attr(tokenizer, "identity")
    ours = dict(identity) if identity else {"vocab_size": _tokenizer_attr(tokenizer, "vocab_size")}
    if not identity:
        ours["eod"] = _tokenizer_attr(tokenizer, "eod")
    keys = ("sha256", "vocab_size", "eod") if identity else ("vocab_size", "eod")
    diffs = [
        f"{k} {rendered.get(k)} vs {ours[k]}" for k in keys if ours.get(k) is not None and rendered.get(k) != ours[k]
    ]
    if diffs:
        raise SRPError(
            f"{metadata_path(prefix)}: the dataset was rendered with tokenizer '{rendered.get('path')}' but training "
            f"uses {ours.get('path', type(tokenizer).__name__)}: {'; '.join(diffs)}. Train with the tokenizer it was "
            "rendered with (the special template saves it as PREFIX_tokenizer/) or set check_tokenizer=False"
        )


def check_rendered_dataset(tokens: IndexedDataset, prefix: str, config: ReflectionGPTDatasetConfig) -> None:
    """Fail clearly unless ``prefix`` has an aligned span-type dataset (and, if asked, the same tokenizer).

    Compares only the memory-mapped ``.idx`` arrays and file sizes: no ``.bin`` is read.
    """
    _require_files(spans_prefix(prefix), f"span-type dataset of '{prefix}' (srp render writes it beside the tokens)")
    _check_aligned(tokens, IndexedDataset(spans_prefix(prefix), mmap=True), prefix)
    if config.check_tokenizer:
        _check_tokenizer(prefix, config.tokenizer)


class ReflectionGPTDataset(GPTDataset):
    """``GPTDataset`` whose ``loss_mask`` also applies the config's loss policy (see the module doc)."""

    def __init__(
        self,
        indexed_dataset: IndexedDataset,
        dataset_path: str | None,
        indexed_indices: np.ndarray,
        num_samples: int | None,
        index_split: Split,
        config: ReflectionGPTDatasetConfig,
    ) -> None:
        super().__init__(indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config)
        self._spans = _SpanStream(indexed_dataset.path_prefix)
        self._loss_table = config.loss_policy.table()
        self._policy_masks = not config.loss_policy.trains_all
        self._sample_spans: np.ndarray | None = None  # span codes the last query read, for __getitem__
        log_single_rank(
            logger, logging.INFO, f"{type(self).__name__} {index_split.name}: loss policy {config.loss_policy}"
        )

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: ReflectionGPTDatasetConfig) -> IndexedDataset:
        """``GPTDataset``'s token ``IndexedDataset``, after checking the span types and tokenizer."""
        if is_object_storage_path(dataset_path):
            raise SRPError(f"'{dataset_path}': rendered datasets on object storage are not supported, copy them")
        _require_files(dataset_path, f"rendered dataset '{dataset_path}'")
        tokens = GPTDataset.build_low_level_dataset(dataset_path, config)
        check_rendered_dataset(tokens, dataset_path, config)
        return tokens

    @staticmethod
    def _key_config_attributes() -> list[str]:
        # megatron names the index caches (document/sample/shuffle .npy, and blends' indices) after a
        # hash of these attributes, so the key only has to protect index files. The loss policy and
        # return_span_types change what __getitem__ computes from a sample, never which tokens form it:
        # they stay out, and every policy shares one index cache, hence one sample stream (which the
        # ablations want). add_extra_token_to_sequence and drop_last_partial_validation_sequence do
        # change the sample index, and megatron-core's GPTDataset leaves them out of its key: add them.
        return GPTDataset._key_config_attributes() + [
            "add_extra_token_to_sequence",
            "drop_last_partial_validation_sequence",
        ]

    def _map_deferred_indices(self) -> None:
        # defer_npy_index_mmap: the index files are mapped on first access, as GPTDataset's query does.
        self.shuffle_index = np.load(self.path_to_shuffle_index, mmap_mode="r")
        self.sample_index = np.load(self.path_to_sample_index, mmap_mode="r")
        self.document_index = np.load(self.path_to_document_index, mmap_mode="r")

    def _query_document_sample_shuffle_indices(self, idx: int) -> tuple:
        """GPTDataset's sample query (same windows, padding and return values), also reading span codes.

        Megatron's own ``GPTDataset`` subclasses override this method the same way; the span codes
        of the sample are left in ``self._sample_spans`` for ``__getitem__``.
        """
        if self.shuffle_index is None:
            self._map_deferred_indices()
        # Plain ndarray views of the (memory-mapped) index arrays: indexing a np.memmap costs several
        # times more than the read itself.
        sample = int(self.shuffle_index.view(np.ndarray)[idx])
        sample_index = self.sample_index.view(np.ndarray)
        beg, beg_offset = sample_index[sample].tolist()
        end, end_offset = sample_index[sample + 1].tolist()
        extra = int(self.config.add_extra_token_to_sequence)
        document_ids = self.document_index.view(np.ndarray)[beg : end + 1].tolist()
        token_parts, span_parts = [], []
        for i, document in enumerate(document_ids):
            offset = beg_offset if i == 0 else 0
            length = end_offset + extra - offset if i == len(document_ids) - 1 else None
            part = self.dataset.get(document, offset=offset, length=length)
            token_parts.append(part)
            span_parts.append(self._spans.window(document, offset, len(part)))
        document_lengths = [len(p) for p in token_parts]
        missing = self.config.sequence_length + extra - sum(document_lengths)
        if missing > 0:  # the last validation sample, when it is kept partial: pad it like GPTDataset
            token_parts.append(np.full(missing, self._pad_token_id, dtype=np.int64))
            span_parts.append(np.full(missing, SpanType.text, dtype=SPAN_DTYPE))  # pad labels get no loss
        self._sample_spans = np.concatenate(span_parts)
        text = np.concatenate(token_parts, dtype=np.int64)
        return compat.query_result(text, np.array(document_ids, dtype=np.int64), document_lengths)

    def __getitem__(self, idx: int | None) -> dict[str, torch.Tensor]:
        """``GPTDataset``'s sample with the policy folded into ``loss_mask`` (+ ``span_types`` if asked)."""
        first_cached = self.masks_and_position_ids_are_cacheable and not self.masks_and_position_ids_are_cached
        sample = super().__getitem__(idx)
        if first_cached:
            # GPTDataset caches the first sample's loss mask object, then zeroes that sample's padding in
            # it, so a padded first sample (a partial validation sample) would mask every later one. A
            # cacheable mask is all ones (no eod_mask_loss): keep that, and leave the returned one ours.
            self.cached_loss_mask = torch.ones_like(self.cached_loss_mask)
        spans = self._sample_spans
        if self.config.add_extra_token_to_sequence:
            label_spans = spans[1:]
        else:  # labels are the text shifted by one; the last label is padding and gets no loss
            label_spans = np.append(spans[1:], SPAN_DTYPE(SpanType.text))
        if idx is not None and self._policy_masks:
            self._apply_policy(sample["loss_mask"], label_spans, idx)
        if self.config.return_span_types:
            sample["span_types"] = torch.from_numpy(label_spans.astype(np.int64))
        return sample

    def _apply_policy(self, loss_mask: torch.Tensor, label_spans: np.ndarray, idx: int) -> None:
        """Multiply ``loss_mask`` in place by the policy's 0/1 value of each label's span type."""
        try:
            weights = self._loss_table.take(label_spans)
        except IndexError:
            raise SRPError(
                f"'{spans_prefix(self.dataset.path_prefix)}.bin': sample {idx} holds span code "
                f"{int(label_spans.max())}, outside 0-{len(SpanType) - 1}: the file is corrupt, re-render it"
            ) from None
        mask = loss_mask.numpy()
        np.multiply(mask, weights, out=mask)
