"""The keyword heuristic against the demo corpus and against a plain-regex reference implementation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.demo_corpus import UNSAFE_SENTENCES, demo_documents
from srp_megatron.prep.label.labelers.base import SegmentedDocument
from srp_megatron.prep.label.labelers.guard_formats import QWEN3GUARD_CATEGORIES
from srp_megatron.prep.label.labelers.keyword import BUILTIN_KEYWORDS, KeywordLabeler, KeywordLabelerConfig
from srp_megatron.prep.segment import Segmenter, SegmenterConfig

WORD = "a-z0-9\u0080-\U0010ffff"  # word characters: ASCII letters/digits and every non-ASCII character
SEP = f"[^{WORD}]+"


def reference_rules(spec):
    """(severity, category, compiled str regex) per entry, built independently of the module: each match is
    found at every start position (lookahead), bounded by non-word characters on both sides."""
    rules = []
    for category, lists in spec.items():
        for key, entries in lists.items():
            severity = Label.unsafe if key.startswith("unsafe") else Label.controversial
            for entry in entries:
                if key.endswith("_regex"):
                    body = entry.replace("0", "[0-9]")  # shape patterns: 0 stands for any digit
                else:
                    words = entry.split()
                    body = "(?:" + words[0] + ")"
                    for w in words[1:]:
                        body += f"(?:{SEP}(?:{w.rstrip('?')})){'?' if w.endswith('?') else ''}"
                    body += f"(?![{WORD}])"
                rules.append((severity, category, re.compile(f"(?<![{WORD}])(?=({body}))")))
    return rules


def reference_labels(segments, rules):
    text = "".join(segments)
    lowered = re.sub("[A-Z]", lambda m: m.group(0).lower(), text)  # ASCII only, like the labeler
    bounds, pos = [], 0
    for s in segments:
        bounds.append((pos, pos + len(s)))
        pos += len(s)
    hits = [set() for _ in segments]
    for i, (_, _, rx) in enumerate(rules):
        for m in rx.finditer(lowered):
            end = m.end(1)
            seg = next(k for k, (a, b) in enumerate(bounds) if a < end <= b)
            hits[seg].add(i)
    out = []
    for h in hits:
        if not h:
            out.append(SegmentLabel(Label.safe))
            continue
        unsafe = any(rules[i][0] == Label.unsafe for i in h)
        cats = sorted({rules[i][1] for i in h}, key=QWEN3GUARD_CATEGORIES.index)
        out.append(SegmentLabel(Label.unsafe if unsafe else Label.controversial, tuple(cats)))
    return out


PIECES = [
    "pipe", "Pipe", "bomb", "BOMBS", "bombé", "kill", "killing", "a", "my", "neighbour", "wife", "hide", "the",
    "body",
    "launder", "money", "social", "security", "number", "is", "078-05-1120", "4111 1111 1111 1111", "4111-1111",
    "suicide", "with", "pills", "without", "getting", "caught", "self", "harm", "café", "水", "torrent", "cocaine",
    "build", "homemade", "an", "explosive", "water", "cycle", "1998", "instructions", "for",
]
SEPARATORS = [" ", " ", " ", "-", ". ", ".\n\n", ",", "'", "é", "", "_", "\t"]


@st.composite
def segmented_texts(draw):
    n = draw(st.integers(1, 25))
    text = "".join(draw(st.sampled_from(PIECES)) + draw(st.sampled_from(SEPARATORS)) for _ in range(n))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=4))))
    bounds = [0, *[c for c in cuts if 0 < c < len(text)], len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=400, deadline=None)
@given(segmented_texts())
def test_matches_reference_implementation(segments):
    labeler = KeywordLabeler(KeywordLabelerConfig())
    assert labeler.label_segments(segments) == reference_labels(segments, reference_rules(BUILTIN_KEYWORDS))


def test_flags_every_demo_unsafe_sentence_with_its_category():
    labeler = KeywordLabeler(KeywordLabelerConfig())
    for category, sentences in UNSAFE_SENTENCES.items():
        for sentence in sentences:
            (label,) = labeler.label_segments([sentence])
            assert label.label == Label.unsafe and category in label.categories, sentence


def test_demo_corpus_safe_text_stays_safe_and_unsafe_docs_are_caught():
    labeler = KeywordLabeler(KeywordLabelerConfig())
    seg = Segmenter(SegmenterConfig())
    safe_docs = [SegmentedDocument(d["id"], seg.split(d["text"])) for d in demo_documents(300, 5, 0.0, 0.3)]
    assert all(lab == SegmentLabel(Label.safe) for labs in labeler.label_documents(safe_docs) for lab in labs)
    unsafe_text = [s for ss in UNSAFE_SENTENCES.values() for s in ss]
    for d in demo_documents(300, seed=6, unsafe_share=0.5):
        segments = seg.split(d["text"])
        labels = labeler.label_segments(segments)
        for s, lab in zip(segments, labels, strict=True):
            assert (lab.label == Label.unsafe) == any(u in s for u in unsafe_text), s


def test_context_phrase_across_segments_and_follow_segments():
    labeler = KeywordLabeler(KeywordLabelerConfig())
    segs = ["First he bought a pipe", " bomb kit. Then", " he went home.", " Later."]
    assert [lab.label for lab in labeler.label_segments(segs)] == [
        Label.safe, Label.unsafe, Label.safe, Label.safe
    ]
    follow = KeywordLabeler(KeywordLabelerConfig(follow_segments=1))
    got = follow.label_segments(segs)
    assert [lab.label for lab in got] == [Label.safe, Label.unsafe, Label.controversial, Label.safe]
    assert got[2].categories == ("Violent",)
    assert follow.identity == "keyword:builtin-v1:follow=1" and labeler.identity == "keyword:builtin-v1"
    # a match counts where its last character is, even when that is the only character in the segment
    assert [lab.label for lab in labeler.label_segments(["A pipe bom", "b", ". Fine"])] == [
        Label.safe, Label.unsafe, Label.safe
    ]


def test_patterns_file(tmp_path):
    path = tmp_path / "kw.yaml"
    path.write_text("Medication:\n  unsafe: ['double dose|doses']\n  controversial_regex: ['000 mg']\n")
    labeler = KeywordLabeler(KeywordLabelerConfig(patterns_file=str(path)))
    assert labeler.label_segments(["Take a Double-Dose now.", "Take 500 mg.", "Safe bomb."]) == [
        SegmentLabel(Label.unsafe, ("Medication",)),
        SegmentLabel(Label.controversial, ("Medication",)),
        SegmentLabel(Label.safe),
    ]
    assert labeler.identity.startswith("keyword:file-")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("V:\n  unsafe: ['Bomb']\n", "must be lower-case ASCII"),
        ("V:\n  unsafe: ['a? bomb']\n", "starts with an optional word"),
        ("V:\n  risky: ['bomb']\n", "unknown key 'risky'"),
        ("V:\n  unsafe_regex: ['[0-']\n", "invalid regex"),
        ("- bomb\n", "expected a mapping"),
    ],
)
def test_patterns_file_errors(tmp_path, text, match):
    path = tmp_path / "kw.yaml"
    path.write_text(text)
    with pytest.raises(SRPError, match=match):
        KeywordLabeler(KeywordLabelerConfig(patterns_file=str(path)))


def test_config_rule():
    with pytest.raises(ValueError, match=r"keyword\.follow_segments=-1"):
        KeywordLabelerConfig(follow_segments=-1)
