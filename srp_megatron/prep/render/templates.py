"""Reflection templates: how a segment's safety verdict is written into the corpus.

``paper``: plain text, as the SRP authors did (no new tokens)::

    " <think>" + " Safe" + " </think>"          " <think>" + " Unsafe: Violent, PII" + " </think>"

``special``: two dedicated special tokens added to the tokenizer (``<|srp_think|>``, ``<|srp_/think|>``)
around the same verdict text. Corpus text is encoded with special-token matching off, so no text
(a web page or a prompt that writes the markers) can produce these ids.

Token pieces are built once per distinct (verdict, categories) and reused, so a reflection costs no
tokenization while rendering.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.formats.rendered import SpanType

if TYPE_CHECKING:
    from srp_megatron.prep.tokenizer import Tokenizer

PAPER_OPEN = " <think>"
PAPER_CLOSE = " </think>"
#: Inserted after a reflection when the segment has no trailing whitespace of its own (CJK text,
#: hard-chunked sentences), so the next segment does not stick to the marker.
SEPARATOR = " "


class TemplateKind(enum.StrEnum):
    """How reflection markers are written."""

    paper = "paper"
    special = "special"


class ControversialMode(enum.StrEnum):
    """How a ``controversial`` label is rendered (and whether its text counts as unsafe)."""

    strict = "strict"
    """As ``Unsafe`` (the SRP authors' choice); its text is ``unsafe_text``."""
    loose = "loose"
    """As ``Safe``; its text is ``text``."""
    keep = "keep"
    """As ``Controversial``; its text is ``text``."""


@dataclass
class TemplateConfig:
    """Reflection template options."""

    kind: TemplateKind = TemplateKind.paper
    """``paper`` (plain-text ``<think>`` markers, tokenizer unchanged) or ``special`` (dedicated tokens)."""
    controversial: ControversialMode = ControversialMode.strict
    """``strict`` renders controversial as Unsafe, ``loose`` as Safe, ``keep`` as Controversial."""
    think_token: str = "<|srp_think|>"
    """Opening special token of the ``special`` template (added to the tokenizer)."""
    end_think_token: str = "<|srp_/think|>"
    """Closing special token of the ``special`` template (added to the tokenizer)."""

    def __post_init__(self) -> None:
        for name in ("think_token", "end_think_token"):
            value = getattr(self, name)
            if not value or value != value.strip():
                raise ValueError(
                    f"template.{name}={value!r}: must be non-empty, without surrounding whitespace "
                    "(e.g. '<|srp_think|>')"
                )
        if self.think_token == self.end_think_token:
            raise ValueError(
                f"template.think_token and template.end_think_token are both {self.think_token!r}: give two names"
            )


def effective_label(label: Label, mode: ControversialMode) -> Label:
    """The verdict a label is rendered as under the controversial mapping."""
    if label != Label.controversial or mode == ControversialMode.keep:
        return label
    return Label.unsafe if mode == ControversialMode.strict else Label.safe


def is_unsafe_text(label: Label, mode: ControversialMode) -> bool:
    """Whether the text of a segment with this label gets span type ``unsafe_text``."""
    return effective_label(label, mode) == Label.unsafe


def reflection_content(label: SegmentLabel, mode: ControversialMode) -> str:
    """The verdict text between the markers: ``" Safe"``, ``" Unsafe: Violent, PII"``, ``" Unsafe"``."""
    verdict = effective_label(label.label, mode)
    if verdict == Label.safe:
        return " Safe"
    word = "Unsafe" if verdict == Label.unsafe else "Controversial"
    return f" {word}: {', '.join(label.categories)}" if label.categories else f" {word}"


#: A reflection as token pieces: ((token ids, span type), ...), in order.
ReflectionPieces = tuple[tuple[tuple[int, ...], SpanType], ...]


class ReflectionTemplate:
    """Renders verdicts into token pieces with a per-verdict cache.

    For the ``special`` template the constructor adds the two marker tokens to ``tokenizer``
    (the caller saves the extended tokenizer beside the dataset).
    """

    def __init__(self, config: TemplateConfig, tokenizer: Tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        if config.kind == TemplateKind.special:
            special = tokenizer.special_token_ids()
            for name in ("think_token", "end_think_token"):
                existing = tokenizer.token_to_id(getattr(config, name))
                if existing is not None and existing not in special:
                    # Text could produce an ordinary token: the markers would be forgeable.
                    raise SRPError(
                        f"template.{name}={getattr(config, name)!r} is an ordinary token (id {existing}) of "
                        f"'{tokenizer.config.path}': choose a name that is not in the vocabulary"
                    )
            try:
                ids = tokenizer.add_special_tokens([config.think_token, config.end_think_token])
            except ValueError as exc:
                raise SRPError(f"template.kind=special: {exc}") from None
            self.reflection_token_ids = ids
            self.open_marker, self.close_marker = config.think_token, config.end_think_token
            self._open_ids, self._close_ids = (ids[0],), (ids[1],)
        else:
            self.reflection_token_ids = []
            self.open_marker, self.close_marker = PAPER_OPEN, PAPER_CLOSE
            self._open_ids = tuple(tokenizer.encode(PAPER_OPEN))
            self._close_ids = tuple(tokenizer.encode(PAPER_CLOSE))
        self._separator_ids = tuple(tokenizer.encode(SEPARATOR))
        self._cache: dict[tuple[Label, tuple[str, ...], bool], ReflectionPieces] = {}

    def text(self, label: SegmentLabel, space_after: bool = False) -> str:
        """The reflection as it reads in decoded text (for logs, docs and checks)."""
        sep = SEPARATOR if space_after else ""
        return self.open_marker + reflection_content(label, self.config.controversial) + self.close_marker + sep

    def pieces(self, label: SegmentLabel, space_after: bool) -> ReflectionPieces:
        """Token pieces of a reflection (markers, verdict, optional separator), tokenized once per verdict."""
        key = (label.label, label.categories, space_after)
        cached = self._cache.get(key)
        if cached is None:
            content = tuple(self.tokenizer.encode(reflection_content(label, self.config.controversial)))
            parts = [
                (self._open_ids, SpanType.reflection_marker),
                (content, SpanType.reflection),
                (self._close_ids, SpanType.reflection_marker),
            ]
            if space_after:
                parts.append((self._separator_ids, SpanType.reflection_marker))
            cached = self._cache[key] = tuple(parts)
        return cached

    def is_unsafe_text(self, label: Label) -> bool:
        """Whether text with this label is ``unsafe_text`` under this template's controversial mapping."""
        return is_unsafe_text(label, self.config.controversial)

    def options(self) -> dict:
        """What to record in ``PREFIX.json``."""
        opts = {"kind": self.config.kind.value, "controversial": self.config.controversial.value}
        opts["markers"] = [self.open_marker, self.close_marker]
        return opts
