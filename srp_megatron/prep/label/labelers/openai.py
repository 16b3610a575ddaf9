"""The ``openai`` labeler: a guard model (Qwen3Guard-Gen, Llama Guard 3) behind an OpenAI-compatible endpoint.

Every segment of every document in a batch becomes one response-moderation request (the preceding text of
its document as the user turn, the segment as the assistant turn); requests run concurrently, bounded by
``concurrency``, and come back in order. A document whose segments cannot all be labelled becomes a
:class:`LabelFailure` (``label_error``: unparseable answers, ``label_timeout``, ``label_http_error``),
never a silent "safe".
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from srp_megatron.formats.labels import SegmentLabel
from srp_megatron.llm.endpoint import EndpointClient, EndpointConfig, RequestFailure
from srp_megatron.prep.label.labelers.base import LABELERS, Labeler, LabelFailure, SegmentedDocument
from srp_megatron.prep.label.labelers.guard_formats import (
    DEFAULT_EMPTY_CONTEXT,
    GUARD_FORMATS,
    GuardFormat,
    document_contexts,
)

#: request failure kind -> document skip reason (counted in the labels manifest).
FAILURE_REASONS = {"parse": "label_error", "timeout": "label_timeout", "http": "label_http_error"}


@dataclass
class OpenAILabelerConfig(EndpointConfig):
    """Endpoint, guard format, context and request policy of the ``openai`` labeler."""

    #: Settings a resumed ``srp label`` may change: where the server is and how hard it is driven, not what it
    #: answers (``timeout`` and ``max_retries`` stay: they decide which documents fail).
    runtime_fields: ClassVar[tuple[str, ...]] = (
        "base_url", "api_key_env", "concurrency", "backoff_initial", "backoff_max"
    )

    model: str = "Qwen/Qwen3Guard-Gen-8B"
    """Guard model name as the endpoint serves it."""
    format: GuardFormat = GuardFormat.qwen3guard
    """Answer format: ``qwen3guard`` (Qwen3Guard-Gen) or ``llamaguard3`` (Llama Guard 3)."""
    context_chars: int = 2000
    """Characters of preceding document text sent with each segment (cut at the left); 0 sends none."""
    empty_context: str = DEFAULT_EMPTY_CONTEXT
    """User turn sent for the first segment of a document, which has no preceding text."""
    max_tokens: int = 64
    """Answer length limit; an answer cut off at this limit counts as malformed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.context_chars < 0:
            raise ValueError(f"context_chars={self.context_chars} must be >= 0 (0 sends no context)")
        if not self.empty_context.strip():
            raise ValueError("empty_context is blank: give a short placeholder such as the default")
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens={self.max_tokens} is too small for a guard answer: use >= 8 (default 64)")


@LABELERS.register("openai", config=OpenAILabelerConfig)
class OpenAILabeler(Labeler):
    """Labels segments in context with a guard model served over an OpenAI-compatible endpoint."""

    def __init__(self, config: OpenAILabelerConfig):
        self.config = config
        self.spec = GUARD_FORMATS.get(GuardFormat(config.format).value)
        self.endpoint = EndpointClient(config)
        self.counters: collections.Counter[str] = collections.Counter()

    @property
    def identity(self) -> str:
        """``openai:<format>:<model>``."""
        return f"openai:{self.spec.name}:{self.config.model}"

    def label_documents(self, docs: Sequence[SegmentedDocument]) -> list[list[SegmentLabel] | LabelFailure]:
        """Label all segments of all ``docs`` concurrently; one entry per document, in order."""
        cfg = self.config
        coros = []
        for doc in docs:
            contexts = document_contexts(doc.segments, cfg.context_chars)
            for context, segment in zip(contexts, doc.segments, strict=True):
                messages = self.spec.build_messages(context, segment, cfg.empty_context)
                coros.append(self.endpoint.request(messages, self.spec.parse, cfg.max_tokens, temperature=0.0))
        results = self.endpoint.run(coros)
        out: list[list[SegmentLabel] | LabelFailure] = []
        start = 0
        for doc in docs:
            doc_results = results[start : start + len(doc.segments)]
            start += len(doc.segments)
            self.counters["documents"] += 1
            self.counters["segments"] += len(doc_results)
            failed = [(i, r) for i, r in enumerate(doc_results) if isinstance(r, RequestFailure)]
            if failed:
                i, first = failed[0]
                reason = FAILURE_REASONS[first.kind]
                self.counters[f"documents_{reason}"] += 1
                out.append(LabelFailure(reason, f"{doc.doc_id} segment {i} ({len(failed)} failed): {first.detail}"))
            else:
                out.append(list(doc_results))
        return out

    def stats(self) -> dict[str, int]:
        """Counters of this process: documents, segments, requests, ``retried_<kind>``, ``failed_<kind>``."""
        return dict(self.counters + self.endpoint.counters)

    def close(self) -> None:
        """Close the HTTP client of this process."""
        self.endpoint.close()
