"""Render arms on small hand-made documents, against hand-written renderings."""

from __future__ import annotations

import pytest

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, LabelledDocument, SegmentLabel
from srp_megatron.formats.rendered import SpanType
from srp_megatron.prep.render import rewriter as rewriter_module
from srp_megatron.prep.render.arms import (
    ARMS,
    FilterConfig,
    FilterLevel,
    MissingRewrite,
    ReflectionPiece,
    RewriteConfig,
    RewriteSource,
    TextPiece,
    split_segment,
)
from srp_megatron.prep.render.templates import ControversialMode, ReflectionTemplate, TemplateConfig, TemplateKind
from srp_megatron.prep.tokenizer import load_tokenizer

T, U = SpanType.text, SpanType.unsafe_text
SEGMENTS = ["Alpha one. ", "Bomb making here. ", "Gray zone.\n\n", "Last bit."]
LABELS = [
    SegmentLabel(Label.safe),
    SegmentLabel(Label.unsafe, ("Violent",)),
    SegmentLabel(Label.controversial),
    SegmentLabel(Label.safe),
]


def _doc(segments=SEGMENTS, labels=LABELS, rewrites=None) -> LabelledDocument:
    return LabelledDocument(7, "doc-7", list(segments), list(labels), list(rewrites or [None] * len(segments)))


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return load_tokenizer(tiny_tokenizer_dir)


def _arm(tokenizer, name, mode=ControversialMode.strict, kind=TemplateKind.paper, **sections):
    template = ReflectionTemplate(TemplateConfig(kind=kind, controversial=mode), tokenizer)
    defaults = {"filter": FilterConfig(), "rewrite": RewriteConfig()}
    return ARMS.get(name)(template, sections.get(name, defaults.get(name)))


def _render(arm, doc) -> tuple[str, list[tuple[str, SpanType]]]:
    """The rendered text and the (text, span) of each text piece."""
    pieces = arm.layout(doc)
    out, texts = [], []
    for p in pieces:
        if isinstance(p, TextPiece):
            out.append(p.text)
            texts.append((p.text, p.span))
        else:
            assert isinstance(p, ReflectionPiece)
            out.append(arm.template.text(p.label, p.space_after))
    return "".join(out), texts


def test_split_segment():
    assert split_segment("Gray zone.\n\n") == ("Gray zone.", "\n\n")
    assert split_segment("  lead kept ") == ("  lead kept", " ")
    assert split_segment("水循环。") == ("水循环。", "")
    assert split_segment(" \n") == ("", " \n")


def test_srp_strict(tokenizer):
    text, pieces = _render(_arm(tokenizer, "srp"), _doc())
    assert text == (
        "Alpha one. <think> Safe </think> Bomb making here. <think> Unsafe: Violent </think> "
        "Gray zone. <think> Unsafe </think>\n\nLast bit. <think> Safe </think>"
    )
    assert pieces == [("Alpha one.", T), (" Bomb making here.", U), (" Gray zone.", U), ("\n\nLast bit.", T)]


def test_srp_keep_and_loose(tokenizer):
    keep, pieces = _render(_arm(tokenizer, "srp", ControversialMode.keep), _doc())
    assert "Gray zone. <think> Controversial </think>\n\n" in keep
    assert pieces[2] == (" Gray zone.", T)
    loose, pieces = _render(_arm(tokenizer, "srp", ControversialMode.loose), _doc())
    assert "Gray zone. <think> Safe </think>\n\n" in loose
    assert pieces[2] == (" Gray zone.", T)


def test_srp_special_and_separator(tokenizer):
    doc = _doc(["水循环。", "植物！", "End."], [SegmentLabel(Label.safe)] * 3)
    text, pieces = _render(_arm(tokenizer, "srp", kind=TemplateKind.special), doc)
    assert text == (
        "水循环。<|srp_think|> Safe<|srp_/think|> 植物！<|srp_think|> Safe<|srp_/think|> "
        "End.<|srp_think|> Safe<|srp_/think|>"
    )
    assert [p for p, _ in pieces] == ["水循环。", "植物！", "End."]


def test_raw_is_the_text(tokenizer):
    text, pieces = _render(_arm(tokenizer, "raw"), _doc())
    assert text == "".join(SEGMENTS).rstrip()
    assert [s for _, s in pieces] == [T, U, U, T]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            ControversialMode.strict,
            "Alpha one. Bomb making here. <think> Unsafe: Violent </think> Gray zone. <think> Unsafe </think>"
            "\n\nLast bit.",
        ),
        (
            ControversialMode.loose,
            "Alpha one. Bomb making here. <think> Unsafe: Violent </think> Gray zone.\n\nLast bit.",
        ),
        (
            ControversialMode.keep,
            "Alpha one. Bomb making here. <think> Unsafe: Violent </think> Gray zone. "
            "<think> Controversial </think>\n\nLast bit.",
        ),
    ],
)
def test_tag(tokenizer, mode, expected):
    assert _render(_arm(tokenizer, "tag", mode), _doc())[0] == expected


def test_filter_segments(tokenizer):
    arm = _arm(tokenizer, "filter")
    text, pieces = _render(arm, _doc())
    assert text == "Alpha one.\n\nLast bit."
    assert pieces == [("Alpha one.", T), ("\n\nLast bit.", T)]
    assert arm.dropped == {"segments_unsafe": 1, "segments_controversial": 1}


def test_filter_only_unsafe_keeps_controversial_as_unsafe_text(tokenizer):
    arm = _arm(tokenizer, "filter", filter=FilterConfig(drop=[Label.unsafe]))
    text, pieces = _render(arm, _doc())
    assert text == "Alpha one. Gray zone.\n\nLast bit."
    assert pieces[1] == (" Gray zone.", U)


def test_filter_documents_and_empty(tokenizer):
    arm = _arm(tokenizer, "filter", filter=FilterConfig(level=FilterLevel.document))
    assert arm.layout(_doc()) is None
    assert arm.layout(_doc(labels=[SegmentLabel(Label.safe)] * 4)) is not None
    assert arm.dropped == {"documents_unsafe": 1, "segments_in_dropped_documents": 4}
    seg = _arm(tokenizer, "filter")
    assert seg.layout(_doc(SEGMENTS[1:3], LABELS[1:3])) is None
    assert seg.dropped == {"segments_unsafe": 1, "segments_controversial": 1, "documents_empty": 1}


@pytest.mark.parametrize(
    ("missing", "expected", "dropped", "counts"),
    [
        (
            MissingRewrite.drop,
            "Alpha one. Safer words.\n\nLast bit.",
            {"segments_rewrite_missing": 1},
            {"segments_rewritten": 1},
        ),
        (
            MissingRewrite.keep,
            "Alpha one. Safer words. Gray zone.\n\nLast bit.",
            {},
            {"segments_rewritten": 1, "segments_rewrite_missing_kept": 1},
        ),
    ],
)
def test_rewrite_column(tokenizer, missing, expected, dropped, counts):
    arm = _arm(tokenizer, "rewrite", rewrite=RewriteConfig(missing=missing))
    text, pieces = _render(arm, _doc(rewrites=[None, "  Safer words.  ", "   ", None]))
    assert text == expected
    assert pieces[1] == (" Safer words.", T)
    assert arm.dropped == dropped and arm.counts == counts


def test_rewrite_missing_error(tokenizer):
    arm = _arm(tokenizer, "rewrite", rewrite=RewriteConfig(missing=MissingRewrite.error))
    with pytest.raises(SRPError, match="'doc-7' segment 1 .*no rewrite"):
        arm.layout(_doc())


class _FakeRewriter:
    """Stands in for OpenAIRewriter: records requests, answers from a list."""

    answers: list = []
    requests: list = []

    def __init__(self, config):
        self.config = config
        self.identity = "fake"

    def rewrite_batch(self, items):
        type(self).requests.extend(items)
        return self.answers[: len(items)]

    def stats(self):
        return {"rewrites": len(self.requests)}

    def close(self):
        pass


def test_rewrite_openai_batches_requests(tokenizer, monkeypatch):
    monkeypatch.setattr(rewriter_module, "OpenAIRewriter", _FakeRewriter)
    monkeypatch.setattr(_FakeRewriter, "answers", ["Rewritten.", None])
    monkeypatch.setattr(_FakeRewriter, "requests", [])
    cfg = RewriteConfig(source=RewriteSource.openai)
    cfg.openai.context_chars = 14
    arm = _arm(tokenizer, "rewrite", rewrite=cfg)
    doc = _doc()
    arm.prepare([doc])
    assert _FakeRewriter.requests == [("Alpha one. ", "Bomb making here."), (" making here. ", "Gray zone.")]
    text, _ = _render(arm, doc)
    assert text == "Alpha one. Rewritten.\n\nLast bit."
    arm.close()
    assert arm.counts == {"segments_rewritten": 1, "rewriter_rewrites": 2}
    assert arm.options()["rewriter"] == "fake"


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (FilterConfig, {"drop": []}, "filter.drop is empty"),
        (RewriteConfig, {"replace": []}, "rewrite.replace is empty"),
    ],
)
def test_config_errors(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls(**kw)


def test_unknown_arm():
    with pytest.raises(SRPError, match="unknown arm 'nope'.*filter, raw, rewrite, srp, tag"):
        ARMS.get("nope")
