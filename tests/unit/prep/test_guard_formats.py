"""Guard answer parsers (Qwen3Guard-Gen, Llama Guard 3), message building and context windows."""

from __future__ import annotations

import pytest
from guard_server import guard_answer
from hypothesis import given
from hypothesis import strategies as st

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.label.labelers.guard_formats import (
    DEFAULT_EMPTY_CONTEXT,
    GUARD_FORMATS,
    GuardParseError,
    document_contexts,
    moderation_messages,
    parse_llamaguard3,
    parse_qwen3guard,
)

# Spelled out from the model cards, independently of the module's tables.
QWEN_CATEGORIES = [
    "Violent",
    "Non-violent Illegal Acts",
    "Sexual Content or Sexual Acts",
    "PII",
    "Suicide & Self-Harm",
    "Unethical Acts",
    "Politically Sensitive Topics",
    "Copyright Violation",
    "Jailbreak",
]
MLCOMMONS = [
    "Violent Crimes",
    "Non-Violent Crimes",
    "Sex-Related Crimes",
    "Child Sexual Exploitation",
    "Defamation",
    "Specialized Advice",
    "Privacy",
    "Intellectual Property",
    "Indiscriminate Weapons",
    "Hate",
    "Suicide & Self-Harm",
    "Sexual Content",
    "Elections",
    "Code Interpreter Abuse",
]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Safety: Safe\nCategories: None\nRefusal: Yes", SegmentLabel(Label.safe)),
        ("Safety: Safe\nCategories: None", SegmentLabel(Label.safe)),
        ("Safety: Unsafe\nCategories: Violent", SegmentLabel(Label.unsafe, ("Violent",))),
        (
            "\n  Safety: Unsafe\n\nCategories: PII, Violent\nRefusal: No\n",
            SegmentLabel(Label.unsafe, ("PII", "Violent")),
        ),
        (
            "Safety: Controversial\nCategories: Politically Sensitive Topics\nRefusal: No",
            SegmentLabel(Label.controversial, ("Politically Sensitive Topics",)),
        ),
        ("Safety: Unsafe\nCategories: None\nRefusal: No", SegmentLabel(Label.unsafe)),
    ],
)
def test_qwen3guard_good(answer, expected):
    assert parse_qwen3guard(answer) == expected


@pytest.mark.parametrize("category", QWEN_CATEGORIES)
def test_qwen3guard_every_category(category):
    assert parse_qwen3guard(f"Safety: Unsafe\nCategories: {category}") == SegmentLabel(Label.unsafe, (category,))


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "Safe",
        "I'm sorry, I cannot help with that.",
        "Safety: unsafe\nCategories: Violent",  # wrong case
        "Safety: Dangerous\nCategories: Violent",
        "Safety: Unsafe",  # no categories line
        "Categories: None\nSafety: Safe",  # wrong order
        "Safety: Unsafe\nCategories: Violence",  # unknown category
        "Safety: Unsafe\nCategories: Violent, Violent",
        "Safety: Unsafe\nCategories: Violent,",
        "Safety: Unsafe\nCategories: None, Violent",
        "Safety: Safe\nCategories: Violent",  # safe with a category
        "Safety: Unsafe\nCategories: Violent\nRefusal: Maybe",
        "Safety: Unsafe\nCategories: Violent\nExplanation: it is violent",
        "Safety: Unsafe\nSafety: Safe\nCategories: None",
        "Safety: Unsafe\nCategories: Violent\nRefusal: No\nRefusal: No",
    ],
)
def test_qwen3guard_bad(answer):
    with pytest.raises(GuardParseError):
        parse_qwen3guard(answer)


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("safe", SegmentLabel(Label.safe)),
        ("\n\nsafe\n", SegmentLabel(Label.safe)),
        ("unsafe\nS1", SegmentLabel(Label.unsafe, ("Violent Crimes",))),
        ("unsafe\nS1,S10", SegmentLabel(Label.unsafe, ("Violent Crimes", "Hate"))),
        ("\n\nunsafe\nS2, S14", SegmentLabel(Label.unsafe, ("Non-Violent Crimes", "Code Interpreter Abuse"))),
    ],
)
def test_llamaguard3_good(answer, expected):
    assert parse_llamaguard3(answer) == expected


@pytest.mark.parametrize("code", range(1, 15))
def test_llamaguard3_codes_map_to_mlcommons(code):
    assert parse_llamaguard3(f"unsafe\nS{code}") == SegmentLabel(Label.unsafe, (MLCOMMONS[code - 1],))


@pytest.mark.parametrize(
    "answer",
    ["", "Safe", "SAFE", "unsafe", "unsafe\nS15", "unsafe\nS0", "unsafe\nS1\nS2", "safe\nS1", "unsafe\nViolent Crimes",
     "unsafe\nS1,S1", "unsafe\nS1,", "The content is safe.", "safe safe"],
)  # fmt: skip
def test_llamaguard3_bad(answer):
    with pytest.raises(GuardParseError):
        parse_llamaguard3(answer)


def test_messages_are_response_moderation():
    assert moderation_messages("Before. ", "The segment.") == [
        {"role": "user", "content": "Before. "},
        {"role": "assistant", "content": "The segment."},
    ]
    for empty in ("", "  \n"):
        assert moderation_messages(empty, "First.")[0] == {"role": "user", "content": DEFAULT_EMPTY_CONTEXT}
    assert moderation_messages("", "First.", "START")[0]["content"] == "START"


@given(st.lists(st.text(max_size=30), max_size=8), st.integers(min_value=0, max_value=60))
def test_document_contexts_match_brute_force(segments, max_chars):
    expected = [("".join(segments[:i])[-max_chars:] if max_chars else "") for i in range(len(segments))]
    assert document_contexts(segments, max_chars) == expected


def test_registry_and_server_answers_round_trip():
    assert set(GUARD_FORMATS.names()) == {"qwen3guard", "llamaguard3"}
    with pytest.raises(SRPError, match="known: llamaguard3, qwen3guard"):
        GUARD_FORMATS.get("llamaguard2")
    # The test server's answers (used by the labeler tests) are well-formed for both parsers.
    seg = "a [pii] and [violent] b"
    assert GUARD_FORMATS.get("qwen3guard").parse(guard_answer("qwen3guard", seg)) == SegmentLabel(
        Label.unsafe, ("Violent", "PII")
    )
    assert GUARD_FORMATS.get("llamaguard3").parse(guard_answer("llamaguard3", seg)) == SegmentLabel(
        Label.unsafe, ("Violent Crimes", "Privacy")
    )
