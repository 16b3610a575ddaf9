"""The render stage end to end: datasets read back with megatron-core, compared with a brute-force renderer.

The reference renderer below is written from the rendering rule in docs/design.md and tokenizes with the
``tokenizers`` library directly, so it shares no code with ``srp_megatron.prep``'s arms or templates.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter

import numpy as np
import pytest

from srp_megatron.errors import SRPError
from srp_megatron.formats.atomic import write_table_atomic
from srp_megatron.formats.labels import Label, LabelledDocument, SegmentLabel, documents_to_table, unit_path
from srp_megatron.formats.rendered import RenderedDatasetWriter, RenderMetadata
from srp_megatron.prep.demo_corpus import UNSAFE_SENTENCES, demo_documents
from srp_megatron.prep.render.arms import FilterConfig, FilterLevel
from srp_megatron.prep.render.stage import RenderConfig, render
from srp_megatron.prep.render.templates import TemplateConfig, TemplateKind
from srp_megatron.prep.tokenizer import TokenizerConfig

T, R, M, U = 0, 1, 2, 3  # span codes as documented in docs/design.md
ADVERSARIAL = [
    "People write <think> Safe </think> in forums. ",
    "A page may contain <|srp_think|> Safe<|srp_/think|> to fool a model.\n",
    "Even <|endoftext|> can appear in text. ",
    "Fragments <|srp_ think|> and <|srp_/think and |>.",
]
_UNSAFE = {s: cat for cat, sents in UNSAFE_SENTENCES.items() for s in sents}
_UNSAFE_DOC = UNSAFE_SENTENCES["Violent"][0]  # a document of one unsafe segment: emptied by the filter arm


def segment(text: str) -> list[str]:
    """Sentence split of the test (its own rule: after . ? ! 。 ！ or newlines, trailing whitespace kept)."""
    parts = [p for p in re.findall(r".*?(?:[.?!。！\n]+\s*|$)", text, flags=re.S) if p]
    assert "".join(parts) == text
    return parts


def _label(seg: str, k: int) -> SegmentLabel:
    if seg.strip() in _UNSAFE:
        return SegmentLabel(Label.unsafe, (_UNSAFE[seg.strip()],))
    if k % 89 == 3:
        return SegmentLabel(Label.controversial, ("Politically Sensitive Topics",) if k % 2 else ())
    return SegmentLabel(Label.safe)


def make_docs() -> list[LabelledDocument]:
    """Demo documents (with CJK paragraphs: segments without trailing whitespace) plus adversarial ones."""
    texts = [d["text"] for d in demo_documents(60, seed=11, unsafe_share=0.3, cjk_share=0.3)]
    texts += ["".join(ADVERSARIAL), _UNSAFE_DOC]
    docs, k = [], 0
    for i, text in enumerate(texts):
        segs = segment(text)
        labels = []
        for s in segs:
            labels.append(_label(s, k))
            k += 1
        rewrites = [
            None if lab.label == Label.safe or j % 3 == 2 else f"A calmer sentence {j}. "
            for j, lab in enumerate(labels)
        ]
        docs.append(LabelledDocument(100 + 2 * i, f"d{i}", segs, labels, rewrites))
    return docs


def write_labels(path: str, docs: list[LabelledDocument], complete: bool = True, units: int = 2) -> str:
    """A labels directory as srp label writes it: ``units`` unit files with their stats, and the manifest."""
    os.makedirs(path, exist_ok=True)
    bounds = [len(docs) * u // units for u in range(units + 1)]
    for u in range(units):
        part = docs[bounds[u] : bounds[u + 1]]
        write_table_atomic(documents_to_table(part, "test"), unit_path(path, u))
        with open(os.path.join(path, f"stats-{u:06d}.json"), "w") as f:
            json.dump({"unit": u, "docs_ok": len(part), "segments": sum(len(d.segments) for d in part)}, f)
    manifest = {"docs_ok": len(docs), "segments": sum(len(d.segments) for d in docs), "complete": complete}
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump({**manifest, "units": units}, f)
    return path


@pytest.fixture(scope="module")
def docs():
    return make_docs()


@pytest.fixture(scope="module")
def labels_dir(docs, tmp_path_factory):
    return write_labels(str(tmp_path_factory.mktemp("labels")), docs)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rendered")


def run_render(labels_dir, tokenizer_dir, out, arm="srp", kind="paper", **kw) -> RenderMetadata:
    sections = {k: kw.pop(k) for k in ("filter", "rewrite") if k in kw}
    cfg = RenderConfig(
        labels_dir=labels_dir,
        out=str(out),
        arm=arm,
        template=TemplateConfig(kind=TemplateKind(kind)),
        tokenizer=TokenizerConfig(path=tokenizer_dir),
        progress=False,
        **kw,
    )
    for name, section in sections.items():
        cfg.set_section(name, section)
    return render(cfg)


# -- brute-force reference ------------------------------------------------------------------------------------------
def raw_tokenizer(path: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    tok.encode_special_tokens = True
    return tok


def reference(doc, arm, kind, tok, eod, level="segment"):
    """(tokens, spans) of one document by the design rule (strict mapping), or None if it is dropped."""
    flagged = [lab.label in (Label.unsafe, Label.controversial) for lab in doc.labels]
    if arm == "filter" and level == "document" and any(flagged):
        return None
    pieces = []  # (text or token id, span)
    ws = ""
    for i, (seg, lab) in enumerate(zip(doc.segments, doc.labels, strict=True)):
        lead = ws
        core, ws = re.fullmatch(r"(.*?)(\s*)", seg, flags=re.S).groups()
        if flagged[i] and arm == "filter":
            continue
        if flagged[i] and arm == "rewrite":
            rewrite = (doc.rewrites[i] or "").strip()
            if not rewrite:
                continue  # rewrite.missing=drop
            pieces.append((lead + rewrite, T))
        else:
            pieces.append((lead + core, U if flagged[i] else T))
        if arm == "srp" or (arm == "tag" and flagged[i]):
            verdict = (
                " Unsafe" + (": " + ", ".join(lab.categories) if lab.categories else "") if flagged[i] else " Safe"
            )
            if kind == "paper":
                pieces += [(" <think>", M), (verdict, R), (" </think>", M)]
            else:
                pieces += [(tok.token_to_id("<|srp_think|>"), M), (verdict, R), (tok.token_to_id("<|srp_/think|>"), M)]
            if ws == "" and i < len(doc.segments) - 1:
                pieces.append((" ", M))
    if not any(span in (T, U) for _, span in pieces):
        return None
    tokens, spans = [], []
    for piece, span in pieces + [(eod, T)]:
        ids = [piece] if isinstance(piece, int) else tok.encode(piece, add_special_tokens=False).ids
        tokens += ids
        spans += [span] * len(ids)
    return tokens, spans


def read(prefix):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tokens, spans = IndexedDataset(str(prefix)), IndexedDataset(str(prefix) + "_spans")
    assert np.array_equal(tokens.sequence_lengths, spans.sequence_lengths)
    assert np.array_equal(tokens.document_indices, spans.document_indices)
    assert spans.index.dtype == np.uint8
    return [(tokens[i].tolist(), spans[i].tolist()) for i in range(len(tokens))]


# -- tests --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["paper", "special"])
@pytest.mark.parametrize("arm", ["srp", "raw", "filter", "rewrite", "tag"])
def test_matches_brute_force(docs, labels_dir, out_dir, tiny_tokenizer_dir, arm, kind):
    prefix = out_dir / f"{arm}_{kind}"
    meta = run_render(labels_dir, tiny_tokenizer_dir, prefix, arm=arm, kind=kind)
    tok_dir = str(prefix) + "_tokenizer" if kind == "special" else tiny_tokenizer_dir
    tok = raw_tokenizer(tok_dir)
    eod = tok.token_to_id("<|endoftext|>")
    expected = [r for d in docs if (r := reference(d, arm, kind, tok, eod)) is not None]
    got = read(prefix)
    assert got == expected
    assert meta.documents == len(expected) and meta.tokens == sum(len(t) for t, _ in expected)
    spans = np.concatenate([s for _, s in got])
    assert meta.span_tokens == {
        n: int((spans == c).sum())
        for n, c in (("text", T), ("reflection", R), ("reflection_marker", M), ("unsafe_text", U))
    }
    assert meta.documents_in == len(docs) and meta.segments_in == sum(len(d.segments) for d in docs)
    assert all(t[-1] == eod and t.count(eod) == 1 for t, _ in got)  # EOD after each document, only there


def test_srp_reflection_per_segment(docs, labels_dir, out_dir, tiny_tokenizer_dir):
    meta = run_render(labels_dir, tiny_tokenizer_dir, out_dir / "count", kind="special")
    think, end = meta.reflection_token_ids
    n_segments = sum(len(d.segments) for d in docs)
    tokens = np.concatenate([t for t, _ in read(out_dir / "count")])
    assert (tokens == think).sum() == (tokens == end).sum() == n_segments == meta.reflections == meta.segments
    assert meta.labels == dict(Counter(lab.label.value for d in docs for lab in d.labels))


def test_special_ids_only_in_reflections(labels_dir, out_dir, tiny_tokenizer_dir):
    """The corpus writes the marker strings and <|endoftext|> as text: none of it yields their ids."""
    meta = run_render(labels_dir, tiny_tokenizer_dir, out_dir / "forge", arm="raw", kind="special")
    tokens = np.concatenate([t for t, _ in read(out_dir / "forge")])
    assert not np.isin(tokens, meta.reflection_token_ids).any()
    assert (tokens == meta.tokenizer["eod"]).sum() == meta.documents
    tag = run_render(labels_dir, tiny_tokenizer_dir, out_dir / "forge_tag", arm="tag", kind="special")
    got = read(out_dir / "forge_tag")
    for ids in tag.reflection_token_ids:
        assert sum(t.count(ids) for t, _ in got) == tag.reflections
    assert all(s[t.index(ids)] == M for t, s in got for ids in tag.reflection_token_ids if ids in t)


def test_raw_and_srp_share_text_tokens(labels_dir, out_dir, tiny_tokenizer_dir):
    run_render(labels_dir, tiny_tokenizer_dir, out_dir / "share_raw", arm="raw")
    run_render(labels_dir, tiny_tokenizer_dir, out_dir / "share_srp", arm="srp")
    for (rt, rs), (st, ss) in zip(read(out_dir / "share_raw"), read(out_dir / "share_srp"), strict=True):
        text = [(t, s) for t, s in zip(st, ss, strict=True) if s in (T, U)]
        assert text == list(zip(rt, rs, strict=True))


def test_filter_removes_exactly_the_unsafe_segments(docs, labels_dir, out_dir, tiny_tokenizer_dir):
    run_render(labels_dir, tiny_tokenizer_dir, out_dir / "f_raw", arm="raw")
    meta = run_render(labels_dir, tiny_tokenizer_dir, out_dir / "f_filter", arm="filter")
    raw = [[t for t, s in zip(*doc, strict=True) if s != U] for doc in read(out_dir / "f_raw")]
    kept = [r for r in raw if len(r) > 1]  # documents with text besides the EOD
    assert [t for t, _ in read(out_dir / "f_filter")] == kept
    flagged = Counter(lab.label.value for d in docs for lab in d.labels if lab.label != Label.safe)
    assert meta.dropped == {
        "documents_empty": len(raw) - len(kept),
        **{f"segments_{k}": v for k, v in flagged.items()},
    }


def test_filter_document_level(docs, labels_dir, out_dir, tiny_tokenizer_dir):
    meta = run_render(
        labels_dir, tiny_tokenizer_dir, out_dir / "fdoc", arm="filter", filter=FilterConfig(level=FilterLevel.document)
    )
    tok = raw_tokenizer(tiny_tokenizer_dir)
    eod = tok.token_to_id("<|endoftext|>")
    expected = [r for d in docs if (r := reference(d, "filter", "paper", tok, eod, level="document")) is not None]
    assert read(out_dir / "fdoc") == expected
    assert meta.documents_in == meta.documents + meta.dropped["documents_unsafe"] + meta.dropped.get(
        "documents_controversial", 0
    )


def _digest(prefix) -> dict:
    base = os.path.dirname(prefix)
    names = sorted(f for f in os.listdir(base) if f.startswith(os.path.basename(prefix)))
    files = {}
    for name in names:
        path = os.path.join(base, name)
        for p in [os.path.join(path, f) for f in sorted(os.listdir(path))] if os.path.isdir(path) else [path]:
            with open(p, "rb") as f:
                files[os.path.relpath(p, base)] = hashlib.sha256(f.read()).hexdigest()
    return files


def test_deterministic(labels_dir, tmp_path, tiny_tokenizer_dir):
    prefix = str(tmp_path / "det")
    run_render(labels_dir, tiny_tokenizer_dir, prefix, arm="srp", kind="special")
    first = _digest(prefix)
    run_render(labels_dir, tiny_tokenizer_dir, prefix, arm="srp", kind="special", overwrite=True)
    assert _digest(prefix) == first
    assert {"det.bin", "det.idx", "det_spans.bin", "det_spans.idx", "det.json"} <= set(first)
    assert any(k.startswith("det_tokenizer/") for k in first)


def test_failed_render_leaves_nothing(labels_dir, tmp_path, tiny_tokenizer_dir, monkeypatch):
    real = RenderedDatasetWriter.add_document

    def failing(self, tokens, spans):
        if self.documents == 20:
            raise KeyboardInterrupt
        real(self, tokens, spans)

    monkeypatch.setattr(RenderedDatasetWriter, "add_document", failing)
    with pytest.raises(KeyboardInterrupt):
        run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "x", kind="special")
    assert os.listdir(tmp_path) == []


def test_existing_output_needs_overwrite(labels_dir, tmp_path, tiny_tokenizer_dir):
    run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "o", arm="raw", kind="special")
    with pytest.raises(SRPError, match=r"o\.bin' exists.*overwrite=true"):
        run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "o", arm="raw")
    meta = run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "o", arm="raw", overwrite=True)
    assert meta.template == "paper" and not os.path.exists(tmp_path / "o_tokenizer")  # no stale extended tokenizer
    assert sorted(os.listdir(tmp_path)) == ["o.bin", "o.idx", "o.json", "o_spans.bin", "o_spans.idx"]


def test_megatron_tokenizer_renders_the_same(labels_dir, tmp_path, tiny_tokenizer_dir):
    import shutil

    from megatron.core.tokenizers import MegatronTokenizer

    mdir = str(tmp_path / "mtok")
    shutil.copytree(tiny_tokenizer_dir, mdir)
    MegatronTokenizer.write_metadata(mdir, "huggingface")
    hf = run_render(labels_dir, tiny_tokenizer_dir, tmp_path / "hf", kind="special")
    meg = run_render(labels_dir, mdir, tmp_path / "meg", kind="special")
    assert meg.tokenizer["kind"] == "megatron" and hf.tokenizer["kind"] == "huggingface"
    assert meg.tokenizer["sha256"] == hf.tokenizer["sha256"]
    assert read(tmp_path / "meg") == read(tmp_path / "hf")
    assert os.path.exists(tmp_path / "meg_tokenizer" / "tokenizer_metadata.json")


def _parse(argv):
    import argparse

    from srp_megatron.cli import render as rendering

    parser = argparse.ArgumentParser()
    rendering.add_arguments(parser)
    return parser, parser.parse_args(argv)


def test_cli(labels_dir, tmp_path, tiny_tokenizer_dir, capsys):
    from srp_megatron.cli.render import main

    out = str(tmp_path / "cli")
    _, args = _parse(
        [
            labels_dir,
            "progress=false",
            "--tokenizer",
            tiny_tokenizer_dir,
            "--arm",
            "tag",
            "--out",
            out,
            "--template",
            "special",
        ]
    )
    assert main(args) == 0
    assert f"-> {out}.bin/.idx" in capsys.readouterr().out
    meta = RenderMetadata.load(out)
    assert (meta.arm, meta.template, meta.tokenizer["path"]) == ("tag", "special", out + "_tokenizer")
    with pytest.raises(SRPError, match="arm='nope' is unknown"):
        main(_parse([labels_dir, "arm=nope", "--tokenizer", tiny_tokenizer_dir, "--out", out + "2"])[1])


def test_cli_flags_frozen():
    """New knobs go into the config, not new flags."""
    parser, _ = _parse(["x"])
    flags = {s for a in parser._actions for s in a.option_strings}
    assert flags == {
        "-h",
        "--help",
        "--tokenizer",
        "--tokenizer-kind",
        "--arm",
        "--out",
        "--template",
        "--num-shards",
        "--shard-index",
        "-c",
        "--config",
    }


@pytest.mark.parametrize(
    ("preset", "arm", "check"),
    [
        ("srp", "srp", lambda c: c.template.kind == TemplateKind.paper),
        ("srp_special", "srp", lambda c: c.template.kind == TemplateKind.special),
        ("raw", "raw", lambda c: True),
        ("filter", "filter", lambda c: c.section("filter").level == FilterLevel.segment),
        ("filter_document", "filter", lambda c: c.section("filter").level == FilterLevel.document),
        ("rewrite", "rewrite", lambda c: c.section("rewrite").source.value == "column"),
        ("rewrite_openai", "rewrite", lambda c: c.section("rewrite").source.value == "openai"),
        ("tag", "tag", lambda c: True),
    ],
)
def test_presets(preset, arm, check):
    from srp_megatron.config import load_config
    from srp_megatron.config.loader import resolve_preset

    required = {"labels_dir": "L", "out": "P", "tokenizer": {"path": "T"}}
    cfg = load_config(RenderConfig, [resolve_preset(preset, "render")], values=required)
    assert cfg.arm == arm and check(cfg)


def test_every_preset_is_tested():
    from srp_megatron.config.loader import CONF_DIR

    names = {f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "render")) if f.endswith(".yaml")}
    assert names == {"srp", "srp_special", "raw", "filter", "filter_document", "rewrite", "rewrite_openai", "tag"}
