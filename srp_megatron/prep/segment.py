"""Sentence segmenter: cuts a document into segments of at most N words at sentence boundaries.

Rules (from the authors' data code, made configurable):

- sentences end after a match of ``boundary_regex`` (default ``[.?!。？！\\n]+\\s*``: sentence punctuation or
  newlines plus the whitespace after them), so trailing whitespace stays with the sentence it follows;
- a word is a run of non-whitespace characters, except that every CJK character (Han, kana) counts as one
  word on its own (Chinese and Japanese are written without spaces); CJK punctuation counts as nothing;
- sentences are packed greedily into segments of at most ``max_words`` words; a sentence longer than that
  is hard-split before its ``max_words + 1``-th word (the tail opens the next segment);
- the segments concatenate back to the document text exactly (nothing is dropped or normalised).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Han (incl. extensions A-G, compatibility ideographs), radicals, hiragana, katakana. Hangul is left out:
# Korean separates words with spaces, so whitespace words already fit it.
_CJK = "\u2e80-\u2fdf\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
# CJK symbols/punctuation and full-width forms: not words, and not part of a neighbouring word.
_CJK_PUNCT = "\u3000-\u303f\uff00-\uffef"
_CJK_RE = re.compile(f"[{_CJK}{_CJK_PUNCT}]")
#: One word: a CJK character, or a run of other non-space characters.
_WORD_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}{_CJK_PUNCT}]+")


@dataclass
class SegmenterConfig:
    """How documents are cut into segments (one reflection follows each segment)."""

    max_words: int = 100
    """Upper bound on words per segment (CJK characters count one each); the paper's authors use 100."""
    boundary_regex: str = r"[.?!。？！\n]+\s*"
    """Python regex matching a sentence end (the segment may be cut right after a match); the authors' rule."""

    def __post_init__(self):
        if self.max_words < 1:
            raise ValueError(f"segmenter.max_words={self.max_words}: must be >= 1 (the paper uses 100)")
        try:
            rx = re.compile(self.boundary_regex)
        except re.error as exc:
            raise ValueError(f"segmenter.boundary_regex={self.boundary_regex!r} is not a valid regex: {exc}") from None
        if rx.fullmatch("") is not None:
            raise ValueError(
                f"segmenter.boundary_regex={self.boundary_regex!r} matches the empty string: make it match at least "
                "one character, e.g. '[.?!\\n]+\\s*'"
            )


def count_words(text: str) -> int:
    """Words in ``text``: whitespace-separated runs, with every CJK character counted as one word."""
    if _CJK_RE.search(text) is None:
        return len(text.split())  # same count as _WORD_RE when no CJK is present, at C speed
    return sum(1 for _ in _WORD_RE.finditer(text))


def _count_plain(text: str) -> int:
    return len(text.split())


class Segmenter:
    """Splits text into sentence-aligned segments of at most ``max_words`` words."""

    def __init__(self, config: SegmenterConfig):
        self.config = config
        self.max_words = config.max_words
        # '[...]+' -> '[...][...]*' (same language): a leading plain class lets re skip ahead at C speed (2x here)
        self._boundary = re.compile(re.sub(r"^(\[(?:\\.|[^\]\\])+\])\+", r"\1\1*", config.boundary_regex))

    def sentences(self, text: str) -> list[str]:
        """Sentences of ``text`` with their end punctuation and trailing whitespace (they concatenate to it)."""
        bounds = self._bounds(text)
        return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]

    def _bounds(self, text: str) -> list[int]:
        """0, the end offset of every sentence, len(text) (strictly increasing)."""
        bounds = [0]
        for m in self._boundary.finditer(text):
            if m.end() > bounds[-1]:
                bounds.append(m.end())
        if bounds[-1] < len(text):
            bounds.append(len(text))
        return bounds

    def split(self, text: str) -> list[str]:
        """Segments of ``text``: concatenated they equal ``text``; each has at most ``max_words`` words."""
        limit = self.max_words
        count = count_words if _CJK_RE.search(text) else _count_plain  # one CJK test per document
        segments: list[str] = []
        start, words, bounds = 0, 0, self._bounds(text)
        for a, b in zip(bounds, bounds[1:], strict=False):
            n = count(text[a:b])
            if words + n <= limit:
                words += n
                continue
            if a > start:
                segments.append(text[start:a])
            start, words = a, n
            if n > limit:
                *full, tail = self._hard_split(text[a:b])
                segments.extend(full)
                start, words = b - len(tail), count(tail)
        if start < len(text):
            segments.append(text[start:])
        return segments

    def _hard_split(self, sentence: str) -> list[str]:
        """Cut an over-long sentence before every ``max_words``-th word boundary (whitespace stays left)."""
        cuts = [m.start() for i, m in enumerate(_WORD_RE.finditer(sentence)) if i and i % self.max_words == 0]
        bounds = [0, *cuts, len(sentence)]
        return [sentence[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
