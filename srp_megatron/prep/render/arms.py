"""Render arms: what each experiment arm does to a labelled document before tokenization.

Every arm follows the same rendering rule (docs/design.md): segment ``i`` is split into ``core_i`` and
its trailing whitespace ``ws_i``; its text piece is ``ws_{i-1} + core_i``; a reflection goes right after
``core_i``. Arms only choose which pieces to keep, what text replaces a piece, and after which segments
a reflection goes, so every arm shares the same text tokens.

- ``srp``: a reflection after every segment (the paper).
- ``raw``: no reflections.
- ``filter``: drop segments (or whole documents) whose label is in ``filter.drop``.
- ``rewrite``: replace the text of segments whose label is in ``rewrite.replace`` by a rewrite.
- ``tag``: reflections only after segments rendered as not safe (prior work's harmfulness tags).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, LabelledDocument, SegmentLabel
from srp_megatron.formats.rendered import SpanType
from srp_megatron.prep.render.rewriter import OpenAIRewriterConfig
from srp_megatron.prep.render.templates import ReflectionTemplate, effective_label
from srp_megatron.registry import Registry


class FilterLevel(enum.StrEnum):
    """What the ``filter`` arm drops."""

    segment = "segment"
    document = "document"


class RewriteSource(enum.StrEnum):
    """Where the ``rewrite`` arm gets rewrites."""

    column = "column"
    openai = "openai"


class MissingRewrite(enum.StrEnum):
    """What the ``rewrite`` arm does with a segment that has no rewrite."""

    drop = "drop"
    keep = "keep"
    error = "error"


def _default_flagged() -> list[Label]:
    return [Label.unsafe, Label.controversial]


@dataclass
class FilterConfig:
    """Options of the ``filter`` arm."""

    level: FilterLevel = FilterLevel.segment
    """``segment`` drops the flagged segments (a document left empty is dropped); ``document`` drops every
    document that has a flagged segment."""
    drop: list[Label] = field(default_factory=_default_flagged)
    """Labels whose segments are flagged."""

    def __post_init__(self) -> None:
        if not self.drop:
            raise ValueError("filter.drop is empty: the filter arm would equal raw; list labels, e.g. [unsafe]")


@dataclass
class RewriteConfig:
    """Options of the ``rewrite`` arm."""

    source: RewriteSource = RewriteSource.column
    """``column``: the ``rewrite`` column of the labels directory; ``openai``: a rewriter model over an
    OpenAI-compatible endpoint (``rewrite.openai``)."""
    replace: list[Label] = field(default_factory=_default_flagged)
    """Labels whose segments are replaced by their rewrite."""
    missing: MissingRewrite = MissingRewrite.drop
    """A flagged segment without a rewrite (null, empty, or the rewriter failed): ``drop`` it, ``keep`` the
    original text, or stop with an ``error``. Counted either way."""
    openai: OpenAIRewriterConfig = field(default_factory=OpenAIRewriterConfig)
    """Rewriter endpoint, model, prompt and context length (``source=openai`` only)."""

    def __post_init__(self) -> None:
        if not self.replace:
            raise ValueError("rewrite.replace is empty: list the labels to rewrite, e.g. [unsafe, controversial]")


class TextPiece(NamedTuple):
    """Corpus text (``ws_{i-1} + core_i`` or a rewrite) with its span type and segment label."""

    text: str
    span: SpanType
    label: Label


class ReflectionPiece(NamedTuple):
    """A reflection on a segment; ``space_after`` when the segment has no trailing whitespace."""

    label: SegmentLabel
    space_after: bool


Piece = TextPiece | ReflectionPiece


def split_segment(segment: str) -> tuple[str, str]:
    """``(core, trailing whitespace)`` of a segment."""
    core = segment.rstrip()
    return core, segment[len(core) :]


class Arm(ABC):
    """Turns a labelled document into pieces; subclasses register in ``ARMS`` (with their config class, if any).

    ``config`` is the arm's own section of the render config (None for arms without options). Drops are
    counted in ``dropped`` (``segments_<reason>``, ``documents_<reason>``), other outcomes in ``counts``.
    """

    name: ClassVar[str]

    def __init__(self, template: ReflectionTemplate, config: Any):
        self.template = template
        self.config = config
        self.dropped: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._text_span = {
            lab: SpanType.unsafe_text if template.is_unsafe_text(lab) else SpanType.text for lab in Label
        }

    def prepare(self, docs: Sequence[LabelledDocument]) -> None:  # noqa: B027 (optional hook)
        """Called with each batch of documents before ``layout`` (e.g. to request rewrites in bulk)."""

    @abstractmethod
    def layout(self, doc: LabelledDocument) -> list[Piece] | None:
        """The document's pieces in order, or None when the whole document is dropped."""

    def options(self) -> dict:
        """Arm options to record in ``PREFIX.json``."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release clients."""

    def _lay_out(
        self,
        doc: LabelledDocument,
        reflect: Callable[[SegmentLabel], bool],
        keep: Sequence[bool] | None = None,
        replace: dict[int, str] | None = None,
    ) -> list[Piece] | None:
        """Apply the rendering rule; ``keep`` masks segments, ``replace`` maps index -> new core text."""
        pieces: list[Piece] = []
        prev_ws = ""
        last = len(doc.segments) - 1
        for i, (segment, label) in enumerate(zip(doc.segments, doc.labels, strict=True)):
            core, ws = split_segment(segment)
            if keep is None or keep[i]:
                if replace and i in replace:
                    pieces.append(TextPiece(prev_ws + replace[i], SpanType.text, label.label))
                else:
                    pieces.append(TextPiece(prev_ws + core, self._text_span[label.label], label.label))
                if reflect(label):
                    pieces.append(ReflectionPiece(label, not ws and i < last))
            prev_ws = ws
        if not pieces:
            self.dropped["documents_empty"] += 1
            return None
        return pieces


#: Most severe first: a dropped document is counted under its most severe flagged label.
_SEVERITY = (Label.unsafe, Label.controversial, Label.safe)

#: name -> Arm subclass, constructed as ``cls(template, its config section)``.
ARMS: Registry[type[Arm]] = Registry("arm", entry_point_group="srp_megatron.arms")


@ARMS.register("srp")
class SRPArm(Arm):
    """A reflection after every segment (the paper)."""

    name = "srp"

    def layout(self, doc: LabelledDocument) -> list[Piece] | None:
        """Every segment, each followed by its reflection."""
        return self._lay_out(doc, reflect=lambda label: True)


@ARMS.register("raw")
class RawArm(Arm):
    """The corpus as it is, no reflections."""

    name = "raw"

    def layout(self, doc: LabelledDocument) -> list[Piece] | None:
        """Every segment, no reflection."""
        return self._lay_out(doc, reflect=lambda label: False)


@ARMS.register("tag")
class TagArm(Arm):
    """Reflections only after segments rendered as not safe, like harmfulness tags."""

    name = "tag"

    def layout(self, doc: LabelledDocument) -> list[Piece] | None:
        """Every segment; a reflection after those whose rendered verdict is not ``Safe``."""
        mode = self.template.config.controversial
        return self._lay_out(doc, reflect=lambda label: effective_label(label.label, mode) != Label.safe)


@ARMS.register("filter", config=FilterConfig)
class FilterArm(Arm):
    """Drops flagged segments or documents (the data-filtering baseline)."""

    name = "filter"

    def layout(self, doc: LabelledDocument) -> list[Piece] | None:
        """The unflagged segments, or None for a dropped document."""
        cfg: FilterConfig = self.config
        drop = set(cfg.drop)
        keep = [label.label not in drop for label in doc.labels]
        if all(keep):
            return self._lay_out(doc, reflect=lambda label: False)
        if cfg.level == FilterLevel.document:
            flagged = {label.label for label in doc.labels} & drop
            worst = next(lab for lab in _SEVERITY if lab in flagged)
            self.dropped[f"documents_{worst.value}"] += 1
            self.dropped["segments_in_dropped_documents"] += len(doc.segments)
            return None
        for label, kept in zip(doc.labels, keep, strict=True):
            if not kept:
                self.dropped[f"segments_{label.label.value}"] += 1
        return self._lay_out(doc, reflect=lambda label: False, keep=keep)

    def options(self) -> dict:
        """Filter level and dropped labels."""
        return {"level": self.config.level.value, "drop": [lab.value for lab in self.config.drop]}


@ARMS.register("rewrite", config=RewriteConfig)
class RewriteArm(Arm):
    """Replaces flagged segments by rewrites (the data-rewriting baseline); rewritten text is ``text``."""

    name = "rewrite"

    def __init__(self, template: ReflectionTemplate, config: Any):
        super().__init__(template, config)
        self.rewrite: RewriteConfig = config
        self._replace = set(self.rewrite.replace)
        self._rewriter = None
        self._batch: dict[tuple[int, int], str | None] = {}
        if self.rewrite.source == RewriteSource.openai:
            from srp_megatron.prep.render.rewriter import OpenAIRewriter

            self._rewriter = OpenAIRewriter(self.rewrite.openai)

    def prepare(self, docs: Sequence[LabelledDocument]) -> None:  # noqa: B027 (optional hook)
        """Ask the rewriter for every flagged segment of the batch in one call."""
        if self._rewriter is None:
            return
        keys, requests = [], []
        n = self.rewrite.openai.context_chars
        for doc in docs:
            for i, label in enumerate(doc.labels):
                if label.label in self._replace:
                    context = _tail("".join(doc.segments[:i]), n)
                    keys.append((doc.doc_index, i))
                    requests.append((context, split_segment(doc.segments[i])[0]))
        self._batch = dict(zip(keys, self._rewriter.rewrite_batch(requests) if requests else [], strict=True))

    def _rewrite_of(self, doc: LabelledDocument, i: int) -> str | None:
        text = self._batch.get((doc.doc_index, i)) if self._rewriter is not None else doc.rewrites[i]
        text = text.strip() if text is not None else ""
        return text or None

    def layout(self, doc: LabelledDocument) -> list[Piece] | None:
        """Flagged segments replaced by their rewrite; a missing rewrite per ``rewrite.missing``."""
        keep = [True] * len(doc.segments)
        replace: dict[int, str] = {}
        for i, label in enumerate(doc.labels):
            if label.label not in self._replace:
                continue
            text = self._rewrite_of(doc, i)
            if text is not None:
                replace[i] = text
                self.counts["segments_rewritten"] += 1
            elif self.rewrite.missing == MissingRewrite.error:
                raise SRPError(
                    f"document {doc.doc_id!r} segment {i} ({label.label.value}) has no rewrite "
                    f"(rewrite.source={self.rewrite.source.value}); set rewrite.missing=drop or keep to go on"
                )
            elif self.rewrite.missing == MissingRewrite.drop:
                keep[i] = False
                self.dropped["segments_rewrite_missing"] += 1
            else:
                self.counts["segments_rewrite_missing_kept"] += 1
        return self._lay_out(doc, reflect=lambda label: False, keep=keep, replace=replace)

    def options(self) -> dict:
        """Rewrite source, labels and missing policy (and the rewriter's model, never its key)."""
        opts = {
            "source": self.rewrite.source.value,
            "replace": [lab.value for lab in self.rewrite.replace],
            "missing": self.rewrite.missing.value,
        }
        if self._rewriter is not None:
            opts["rewriter"] = self._rewriter.identity
            opts["context_chars"] = self.rewrite.openai.context_chars
        return opts

    def close(self) -> None:
        """Close the rewriter's client; its request counters join ``counts``."""
        if self._rewriter is not None:
            self.counts.update({f"rewriter_{k}": v for k, v in self._rewriter.stats().items()})
            self._rewriter.close()


def _tail(text: str, n: int) -> str:
    """The last ``n`` characters of ``text`` ("" for n == 0)."""
    return text[-n:] if n > 0 else ""
