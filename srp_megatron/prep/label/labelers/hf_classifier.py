"""The ``hf-classifier`` labeler: a local Hugging Face sequence-classification model, batched, CPU or GPU.

Each segment is classified as the second text of a text pair whose first text is the preceding document
text; the context is truncated from the left (``only_first`` truncation, left side), so the segment is
always seen whole and the context nearest to it is kept. A segment that alone exceeds ``max_length``
is cut at the right with no context, and counted (``segments_truncated``).

Labels: the model's ``id2label`` names are matched (case-insensitively) against ``safe_labels``,
``controversial_labels`` and ``unsafe_labels``; any other name means unsafe with that name as the category.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from srp_megatron.config.device import Device
from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.label.labelers.base import LABELERS, Labeler, LabelFailure, SegmentedDocument
from srp_megatron.prep.label.labelers.guard_formats import document_contexts

logger = logging.getLogger(__name__)


class Precision(enum.StrEnum):
    """Weights and activations dtype."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class HFClassifierLabelerConfig:
    """Model directory, device, batching and label mapping of the ``hf-classifier`` labeler."""

    model_dir: str = ""
    """Local directory of a Hugging Face sequence-classification model and its tokenizer (never downloaded)."""
    device: Device = Device.auto
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda``."""
    precision: Precision = Precision.auto
    """``auto``: float32 on CPU, bfloat16 on CUDA (float16 where bfloat16 is unsupported)."""
    batch_size: int = 32
    """Segments per forward pass (sorted by length to limit padding)."""
    max_length: int = 512
    """Tokens per input (context + segment + special tokens); at most the model's positions."""
    context_chars: int = 2000
    """Characters of preceding document text given as context (cut at the left); 0 gives none."""
    safe_labels: list[str] = field(default_factory=lambda: ["safe"])
    """Model label names meaning safe (case-insensitive)."""
    controversial_labels: list[str] = field(default_factory=lambda: ["controversial"])
    """Model label names meaning controversial, with no category."""
    unsafe_labels: list[str] = field(default_factory=lambda: ["unsafe"])
    """Model label names meaning unsafe with no category; any other non-safe name is unsafe with itself as category."""
    unsafe_threshold: float | None = None
    """``None``: the most probable label wins. A number: flag a segment when the probability of all
    non-safe labels together reaches it, with the most probable non-safe label as the verdict."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        if self.context_chars < 0:
            raise ValueError(f"context_chars={self.context_chars} must be >= 0 (0 gives no context)")
        if self.unsafe_threshold is not None and not 0.0 < self.unsafe_threshold <= 1.0:
            raise ValueError(f"unsafe_threshold={self.unsafe_threshold} must be in (0, 1], or null for argmax")
        groups = {"safe_labels": self.safe_labels, "controversial_labels": self.controversial_labels}
        groups["unsafe_labels"] = self.unsafe_labels
        seen: dict[str, str] = {}
        for group, names in groups.items():
            for name in names:
                if name.lower() in seen:
                    raise ValueError(
                        f"label name {name!r} is in both {seen[name.lower()]} and {group}: keep it in one"
                    )
                seen[name.lower()] = group


@LABELERS.register("hf-classifier", config=HFClassifierLabelerConfig)
class HFClassifierLabeler(Labeler):
    """Labels segments in context with a local sequence classifier, in batches.

    The model is loaded lazily in the process that labels (and again after a fork), so the labeler can be
    built in a parent process and used in workers.
    """

    def __init__(self, config: HFClassifierLabelerConfig):
        if not config.model_dir:
            raise SRPError(
                "labeler hf-classifier: model_dir is empty: set hf_classifier.model_dir=DIR (a local model)"
            )
        if not os.path.isdir(config.model_dir):
            raise SRPError(f"labeler hf-classifier: model_dir '{config.model_dir}' is not a directory")
        self.config = config
        self.counters: collections.Counter[str] = collections.Counter()
        self._pid: int | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._verdicts: list[SegmentLabel] = []
        self._safe_ids: list[int] = []

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pid": None, "_model": None, "_tokenizer": None}

    @property
    def identity(self) -> str:
        """``hf-classifier:<model directory name>``."""
        return f"hf-classifier:{os.path.basename(os.path.normpath(self.config.model_dir))}"

    # -- loading -----------------------------------------------------------------------------------
    def _ensure_model(self) -> None:
        if self._model is not None and self._pid == os.getpid():
            return
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        cfg = self.config
        device = cfg.device.value if cfg.device != Device.auto else ("cuda" if torch.cuda.is_available() else "cpu")
        if device == "cuda" and not torch.cuda.is_available():
            raise SRPError("labeler hf-classifier: device=cuda but CUDA is not available (use device=auto or cpu)")
        dtype = _dtype(cfg.precision, device)
        try:
            tok = AutoTokenizer.from_pretrained(cfg.model_dir, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                cfg.model_dir, local_files_only=True, dtype=dtype
            )
        except (OSError, ValueError) as exc:
            raise SRPError(f"labeler hf-classifier: cannot load '{cfg.model_dir}': {exc}") from exc
        if model.config.problem_type == "multi_label_classification":
            raise SRPError(f"labeler hf-classifier: '{cfg.model_dir}' is multi-label; only single-label is supported")
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and cfg.max_length > limit:
            raise SRPError(f"labeler hf-classifier: max_length={cfg.max_length} exceeds the model's {limit} positions")
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise SRPError(f"labeler hf-classifier: the tokenizer in '{cfg.model_dir}' has no pad or EOS token")
            logger.warning("tokenizer of %s has no pad token: padding with EOS %r", cfg.model_dir, tok.eos_token)
            tok.pad_token = tok.eos_token
        if model.config.pad_token_id is None:  # sequence classifiers over decoders find the last token by it
            model.config.pad_token_id = tok.pad_token_id
        self._set_label_map(model.config.id2label)
        self._model = model.to(device).eval()
        self._tokenizer = tok
        self._pid = os.getpid()

    def _set_label_map(self, id2label: dict[int, str]) -> None:
        cfg = self.config
        safe = {n.lower() for n in cfg.safe_labels}
        controversial = {n.lower() for n in cfg.controversial_labels}
        unsafe = {n.lower() for n in cfg.unsafe_labels}
        verdicts = []
        for i in range(len(id2label)):
            name = id2label[i]
            if name.lower() in safe:
                verdicts.append(SegmentLabel(Label.safe))
            elif name.lower() in controversial:
                verdicts.append(SegmentLabel(Label.controversial))
            else:
                verdicts.append(SegmentLabel(Label.unsafe, () if name.lower() in unsafe else (name,)))
        self._safe_ids = [i for i, v in enumerate(verdicts) if v.label == Label.safe]
        if not self._safe_ids or len(self._safe_ids) == len(verdicts):
            raise SRPError(
                f"labeler hf-classifier: model labels {list(id2label.values())} vs safe_labels {cfg.safe_labels}: "
                "some but not all labels must be safe; set safe_labels to the model's safe label names"
            )
        self._verdicts = verdicts

    # -- labelling ---------------------------------------------------------------------------------
    def label_documents(self, docs: Sequence[SegmentedDocument]) -> list[list[SegmentLabel] | LabelFailure]:
        """Classify all segments of ``docs`` in batches; one list of labels per document, in order."""
        self._ensure_model()
        contexts: list[str] = []
        segments: list[str] = []
        for doc in docs:
            contexts += document_contexts(doc.segments, self.config.context_chars)
            segments += doc.segments
        probs = self.probabilities(contexts, segments)
        labels = [self._verdict(p) for p in probs]
        out: list[list[SegmentLabel] | LabelFailure] = []
        start = 0
        for doc in docs:
            out.append(labels[start : start + len(doc.segments)])
            start += len(doc.segments)
        self.counters["documents"] += len(docs)
        self.counters["segments"] += len(segments)
        return out

    def probabilities(self, contexts: Sequence[str], segments: Sequence[str]) -> Any:
        """Softmax class probabilities (numpy, ``[n, num_labels]``) of each (context, segment) pair."""
        import numpy as np
        import torch

        self._ensure_model()
        features = self._encode(contexts, segments)
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        probs = np.zeros((len(features), len(self._verdicts)), dtype=np.float32)
        bs = self.config.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                batch = self._tokenizer.pad([features[i] for i in idx], return_tensors="pt")
                batch = {k: v.to(self._model.device) for k, v in batch.items()}
                logits = self._model(**batch).logits.float()
                probs[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return probs

    def _encode(self, contexts: Sequence[str], segments: Sequence[str]) -> list[dict]:
        """Token ids per pair: context truncated at the left; over-long segments alone, cut at the right."""
        tok, max_length = self._tokenizer, self.config.max_length
        if not segments:
            return []
        seg_lens = [len(ids) for ids in tok(list(segments), add_special_tokens=False)["input_ids"]]
        special = tok.num_special_tokens_to_add(pair=True)
        fits = [n + special <= max_length for n in seg_lens]
        features: list[dict] = [{} for _ in segments]
        pair_idx = [i for i, ok in enumerate(fits) if ok]
        long_idx = [i for i, ok in enumerate(fits) if not ok]
        if pair_idx:
            tok.truncation_side = "left"
            enc = tok(
                [contexts[i] for i in pair_idx],
                [segments[i] for i in pair_idx],
                truncation="only_first",
                max_length=max_length,
            )
            for j, i in enumerate(pair_idx):
                features[i] = {k: v[j] for k, v in enc.items()}
        if long_idx:
            tok.truncation_side = "right"
            enc = tok([segments[i] for i in long_idx], truncation=True, max_length=max_length)
            for j, i in enumerate(long_idx):
                features[i] = {k: v[j] for k, v in enc.items()}
            self.counters["segments_truncated"] += len(long_idx)
        return features

    def _verdict(self, probs: Any) -> SegmentLabel:
        """Argmax label, or with ``unsafe_threshold`` the flag decision on the non-safe probability mass."""
        threshold = self.config.unsafe_threshold
        if threshold is None:
            return self._verdicts[int(probs.argmax())]
        flagged = 1.0 - float(probs[self._safe_ids].sum())
        if flagged < threshold:
            return self._verdicts[max(self._safe_ids, key=lambda i: probs[i])]
        unsafe_ids = [i for i in range(len(probs)) if i not in self._safe_ids]
        return self._verdicts[max(unsafe_ids, key=lambda i: probs[i])]

    def stats(self) -> dict[str, int]:
        """Counters of this process: documents, segments, segments_truncated."""
        return dict(self.counters)

    def close(self) -> None:
        """Drop the model (frees GPU memory)."""
        self._model = self._tokenizer = self._pid = None


def _dtype(precision: Precision, device: str) -> Any:
    """The torch dtype for a precision setting on a device."""
    import torch

    if precision == Precision.auto:
        if device == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, precision.value)
