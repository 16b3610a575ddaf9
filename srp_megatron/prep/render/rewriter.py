"""Rewrites of unsafe segments by a chat model behind an OpenAI-compatible endpoint (render arm ``rewrite``).

The model sees the preceding document text and the segment and must answer with exactly one
``<rewrite>...</rewrite>`` block (text outside it, e.g. a reasoning preamble, is ignored). An answer
without exactly one non-empty block, one containing a forbidden string (reflection markers: a rewrite
must never forge a reflection), one far longer than the segment or one cut off at ``max_tokens`` is
malformed and retried under the endpoint's retry policy; after the retries the item's rewrite is ``None``
and the caller drops it (counted). The rewrite keeps the segment's leading and trailing whitespace, so
it drops into the document in the segment's place.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from srp_megatron.llm.endpoint import AnswerError, EndpointClient, EndpointConfig, RequestFailure

DEFAULT_SYSTEM_PROMPT = (
    "You rewrite one passage of a web document so that it is safe, staying faithful to the document's topic, "
    "language, tone and style. Remove or neutralise harmful content (instructions or encouragement for violence, "
    "crime or self-harm, personal data, hateful or explicit sexual content) and keep everything else. Answer "
    "with the rewritten passage only, between <rewrite> and </rewrite>."
)
DEFAULT_USER_TEMPLATE = (
    "Document text before the passage:\n<context>\n{context}\n</context>\n\n"
    "Passage to rewrite:\n<passage>\n{segment}\n</passage>"
)
DEFAULT_EMPTY_CONTEXT = "(none: the passage starts the document)"
_BLOCK = re.compile(r"<rewrite>(.*?)</rewrite>", re.DOTALL)


@dataclass
class OpenAIRewriterConfig(EndpointConfig):
    """Endpoint, prompt and answer checks of the rewriter."""

    model: str = "Qwen/Qwen3-8B"
    """Chat model name as the endpoint serves it."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """System message: the rewriting instruction (must ask for one ``<rewrite>`` block)."""
    user_template: str = DEFAULT_USER_TEMPLATE
    """User message with the placeholders ``{context}`` and ``{segment}``."""
    empty_context: str = DEFAULT_EMPTY_CONTEXT
    """Stands in for ``{context}`` when the segment starts the document."""
    context_chars: int = 2000
    """Characters of preceding document text sent as ``{context}`` (cut at the left); 0 sends none."""
    max_tokens: int = 1024
    """Answer length limit; an answer cut off at this limit counts as malformed."""
    temperature: float = 0.0
    """Sampling temperature."""
    max_length_ratio: float = 3.0
    """A rewrite longer than this many times the segment (or 3x50 characters for short ones) is rejected."""
    forbidden: list[str] = field(default_factory=lambda: ["<think>", "</think>", "<|srp_think|>", "<|srp_/think|>"])
    """Strings a rewrite must not contain (reflection markers of both templates)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.user_template.format(context="", segment="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"user_template has a bad placeholder ({exc!r}): use only {{context}} and {{segment}} "
                "(write literal braces as {{{{ and }}}})"
            ) from None
        if "{segment}" not in self.user_template:
            raise ValueError("user_template must contain {segment}")
        for name in ("max_tokens", "temperature", "context_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.max_length_ratio <= 0:
            raise ValueError(f"max_length_ratio={self.max_length_ratio} must be > 0 (default 3.0)")


class OpenAIRewriter:
    """Rewrites unsafe segments in context, concurrently and with retries; usable from worker processes."""

    def __init__(self, config: OpenAIRewriterConfig):
        self.config = config
        self.endpoint = EndpointClient(config)
        self.counters: collections.Counter[str] = collections.Counter()

    @property
    def identity(self) -> str:
        """``openai-rewriter:<model>``, for render metadata."""
        return f"openai-rewriter:{self.config.model}"

    def messages(self, context: str, segment: str) -> list[dict]:
        """The chat messages for one rewrite (the caller limits the context's length)."""
        cfg = self.config
        user = cfg.user_template.format(context=context if context.strip() else cfg.empty_context, segment=segment)
        return [{"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": user}]

    def parse(self, answer: str, segment: str) -> str:
        """The rewrite in ``answer`` with ``segment``'s outer whitespace; raises :class:`AnswerError` if malformed."""
        blocks = _BLOCK.findall(answer)
        if len(blocks) != 1:
            raise AnswerError(f"expected one <rewrite> block, found {len(blocks)} in {answer[:200]!r}")
        text = blocks[0].strip()
        if not text:
            raise AnswerError("empty rewrite")
        bad = [s for s in self.config.forbidden if s in text]
        if bad:
            raise AnswerError(f"rewrite contains forbidden {bad[0]!r}")
        limit = self.config.max_length_ratio * max(len(segment.strip()), 50)
        if len(text) > limit:
            raise AnswerError(f"rewrite of {len(text)} characters exceeds {int(limit)} for the segment")
        lead = segment[: len(segment) - len(segment.lstrip())]
        trail = segment[len(segment.rstrip()) :]
        return lead + text + trail

    def rewrite_batch(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """Rewrite each (preceding context, unsafe segment) item; ``None`` where it failed after retries."""
        coros = [
            self.endpoint.request(
                self.messages(context, segment),
                lambda answer, segment=segment: self.parse(answer, segment),
                self.config.max_tokens,
                self.config.temperature,
            )
            for context, segment in items
        ]
        results = self.endpoint.run(coros)
        self.counters["rewrites"] += len(results)
        for r in results:
            if isinstance(r, RequestFailure):
                self.counters[f"rewrites_failed_{r.kind}"] += 1
        return [None if isinstance(r, RequestFailure) else r for r in results]

    def stats(self) -> dict[str, int]:
        """Counters of this process: rewrites, ``rewrites_failed_<kind>``, requests, retries."""
        return dict(self.counters + self.endpoint.counters)

    def close(self) -> None:
        """Close the HTTP client of this process."""
        self.endpoint.close()
