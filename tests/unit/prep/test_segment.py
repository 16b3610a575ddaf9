"""Segmenter properties: round trip, size bound, sentence boundaries, CJK counted per character."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srp_megatron.prep.segment import Segmenter, SegmenterConfig, count_words


def reference_count(text: str) -> int:
    """Words counted character by character: a CJK ideograph/kana is one word; a run of other non-space,
    non-CJK-punctuation characters is one word. Written without the module's regexes."""

    def kind(ch: str) -> str:
        cp = ord(ch)
        if ch.isspace():
            return "space"
        cjk = (0x2E80, 0x2FDF), (0x3040, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), \
            (0xF900, 0xFAFF), (0x20000, 0x3134F)
        if any(a <= cp <= b for a, b in cjk):
            return "cjk"
        if 0x3000 <= cp <= 0x303F or 0xFF00 <= cp <= 0xFFEF:
            return "space"  # CJK punctuation separates and counts as nothing
        return "word"

    n, prev = 0, "space"
    for ch in text:
        k = kind(ch)
        if k == "cjk" or (k == "word" and prev != "word"):
            n += 1
        prev = k
    return n


TEXT = st.lists(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list(" \n\t.?!。？！水循环描述了地球植物ab\u3000ｈ") + ["。\n", ". ", "word "]),
    ),
    max_size=300,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.integers(1, 12))
def test_round_trip_and_bound(text, max_words):
    seg = Segmenter(SegmenterConfig(max_words=max_words))
    parts = seg.split(text)
    assert "".join(parts) == text
    assert all(parts), "no empty segments"
    assert all(reference_count(p) <= max_words for p in parts)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_count_words_matches_reference(text):
    assert count_words(text) == reference_count(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="abc xyz", min_size=1, max_size=30), min_size=1, max_size=12), st.integers(3, 20))
def test_cuts_fall_on_sentence_ends_unless_a_sentence_is_too_long(sentences, max_words):
    text = "".join(s.strip() + ". " for s in sentences)
    parts = Segmenter(SegmenterConfig(max_words=max_words)).split(text)
    for part in parts[:-1]:
        sentence_too_long = any(reference_count(s) > max_words for s in re.split(r"(?<=\. )", part) if s)
        if not part.endswith(". "):
            # a cut inside a sentence only happens when hard-splitting: the part is then exactly full
            assert reference_count(part.split(". ")[-1]) == max_words or sentence_too_long
    # greedy packing: a segment ending at a sentence end could not have taken the next sentence whole
    for a, b in zip(parts, parts[1:], strict=False):
        if a.endswith(". "):
            first = re.match(r".*?\. |.*", b).group(0)
            assert reference_count(a) + reference_count(first) > max_words


def test_cjk_counts_characters():
    text = "水循环描述了水在地球上的运动。植物通过光合作用制造养分！"
    assert count_words(text) == sum(1 for ch in text if unicodedata.category(ch) == "Lo")
    parts = Segmenter(SegmenterConfig(max_words=5)).split(text)
    assert "".join(parts) == text
    assert [count_words(p) for p in parts] == [5, 5, 4, 5, 5, 2]  # 14 + 12 characters, cut every 5, sentences kept
    assert parts[2].endswith("。")


def test_mixed_script_and_boundary_rule():
    seg = Segmenter(SegmenterConfig(max_words=4))
    assert seg.split("One two three. Four five! Six") == ["One two three. ", "Four five! Six"]
    assert seg.sentences("A.\n\nB? C") == ["A.\n\n", "B? ", "C"]
    custom = Segmenter(SegmenterConfig(max_words=100, boundary_regex=r";\s*"))
    assert custom.split("a; b. c") == ["a; b. c"]
    assert custom.sentences("a; b. c") == ["a; ", "b. c"]


def test_hard_split_keeps_whitespace_left():
    parts = Segmenter(SegmenterConfig(max_words=2)).split("a  b  c  d  e")
    assert parts == ["a  b  ", "c  d  ", "e"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_words": 0}, r"segmenter\.max_words=0"),
        ({"boundary_regex": "[."}, r"not a valid regex"),
        ({"boundary_regex": r"\s*"}, r"matches the empty string"),
    ],
)
def test_config_rules(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmenterConfig(**kwargs)
