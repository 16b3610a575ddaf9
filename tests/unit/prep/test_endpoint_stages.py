"""Both endpoint-backed stages end to end through the ``srp`` command, against the local protocol server.

``srp label --labeler openai --workers 2`` labels a corpus whose sentences carry the server's trigger words
(guard_server.py answers with the rule-based verdict, and garbage for sentences marked ``[garbage]``);
``srp render --arm rewrite rewrite.source=openai`` then rewrites the flagged segments through the same kind
of server. Expected labels, rewrites and counters are written out here from the corpus, not taken from
the code under test.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from guard_server import GuardServer, answer, garbage
from test_rendering import raw_tokenizer, read, reference

from srp_megatron.cli import main
from srp_megatron.formats.labels import Label, SegmentLabel, iter_labelled_documents, unit_path
from srp_megatron.formats.rendered import RenderMetadata

# What each trigger word means for a Qwen3Guard-format guard (written independently of the server's table).
VERDICTS = {
    "": SegmentLabel(Label.safe),
    "[violent]": SegmentLabel(Label.unsafe, ("Violent",)),
    "[pii]": SegmentLabel(Label.unsafe, ("PII",)),
    "[controversial]": SegmentLabel(Label.controversial, ("Politically Sensitive Topics",)),
}
RETRIES = 1
FAST = [f"max_retries={RETRIES}", "backoff_initial=0.001", "backoff_max=0.002", "timeout=10"]


def sentence(d: int, k: int, mark: str) -> str:
    """Six words, so that with --segment-words 8 every sentence is one segment."""
    return f"Doc {d} sentence {k} says {mark or 'nothing'}."


def make_corpus() -> list[list[str]]:
    """Per document, the mark of each sentence: cycles through the verdicts; every fifth document has garbage."""
    marks = list(VERDICTS)
    return [
        ["[garbage]" if d % 5 == 4 and k == 1 else marks[(d + k) % 4 if k else 0] for k in range(2 + d % 3)]
        if d % 7 != 6 else ["[controversial]", "[pii]", "[violent]"]
        for d in range(20)
    ]  # fmt: skip


def guard(req):
    """Rule-based guard answers, garbage (never a verdict) for the [garbage] sentences."""
    return garbage("I am not sure about this one.") if "[garbage]" in req.segment else answer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    marks = make_corpus()
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    with open(path, "w") as f:
        for d, doc in enumerate(marks):
            f.write(json.dumps({"id": f"d{d}", "text": " ".join(sentence(d, k, m) for k, m in enumerate(doc))}) + "\n")
    return str(path), marks


def label_argv(corpus_path: str, out: str, url: str) -> list[str]:
    return ["label", corpus_path, "--out", out, "--labeler", "openai", "--workers", "2", "--docs-per-unit", "6",
            "--segment-words", "8", "--no-progress", "batch_docs=3", f"openai.base_url={url}", "openai.model=guard",
            *(f"openai.{o}" for o in FAST)]  # fmt: skip


@pytest.fixture(scope="module")
def labelled(corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("labels") / "labels")
    with GuardServer("qwen3guard", guard) as server:
        assert main(label_argv(corpus[0], out, server.url)) == 0
        requests = len(server.requests)
    return out, requests


def dir_bytes(path) -> dict[str, bytes]:
    return {name: open(os.path.join(path, name), "rb").read() for name in sorted(os.listdir(path))}


def test_label_openai_workers(corpus, labelled):
    _, marks = corpus
    out, requests = labelled
    good = [d for d, doc in enumerate(marks) if "[garbage]" not in doc]
    docs = list(iter_labelled_documents(out))
    assert [d.doc_id for d in docs] == [f"d{d}" for d in good]
    assert [d.labels for d in docs] == [[VERDICTS[m] for m in marks[d]] for d in good]
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    garbage_docs = len(marks) - len(good)
    assert manifest["complete"] and manifest["docs_skipped"] == {"label_error": garbage_docs}
    segments = sum(len(doc) for doc in marks)
    assert manifest["labeler_stats"] == {
        "documents": len(marks), "segments": segments, "requests": requests,
        "retried_parse": garbage_docs * RETRIES, "failed_parse": garbage_docs, "documents_label_error": garbage_docs,
    }  # fmt: skip
    assert requests == segments + garbage_docs * RETRIES  # as the server counted them
    units = [json.load(open(os.path.join(out, f"stats-{u:06d}.json")))["labeler_stats"] for u in range(4)]
    assert [u["documents"] for u in units] == [6, 6, 6, 2]


def test_label_rerun_after_losing_a_unit_file(corpus, labelled, tmp_path):
    import shutil

    out = str(tmp_path / "labels")
    shutil.copytree(labelled[0], out)
    os.remove(unit_path(out, 1))
    with GuardServer("qwen3guard", guard) as server:
        assert main(label_argv(corpus[0], out, server.url)) == 0
        relabelled = {r.segment for r in server.requests}
    assert relabelled == {sentence(d, k, m) + " " * (k < len(doc) - 1)
                          for d, doc in enumerate(corpus[1][6:12], 6) for k, m in enumerate(doc)}  # unit 1 only
    assert dir_bytes(out) == dir_bytes(labelled[0])


def passage(req) -> str:
    return re.search(r"<passage>\n(.*)\n</passage>", req.segment, re.DOTALL).group(1)


def rewriter(req):
    """A rewrite that names the passage's document and sentence; no usable answer for [pii] passages."""
    text = passage(req)
    if "[pii]" in text:
        return garbage("I won't rewrite personal data.")
    return garbage(f"Thinking...\n<rewrite>A calm line for {text.split(' says ')[0]}.</rewrite>")


def test_render_rewrite_openai(labelled, tiny_tokenizer_dir, tmp_path):
    out = str(tmp_path / "rewrite")
    with GuardServer(handler=rewriter) as server:
        argv = ["render", labelled[0], "--arm", "rewrite", "--tokenizer", tiny_tokenizer_dir, "--out", out,
                "progress=false", "rewrite.source=openai", f"rewrite.openai.base_url={server.url}",
                "rewrite.openai.model=writer", *(f"rewrite.openai.{o}" for o in FAST)]  # fmt: skip
        assert main(argv) == 0
        requests = len(server.requests)
    docs = list(iter_labelled_documents(labelled[0]))
    flagged = pii = 0
    for doc in docs:  # the rewrite each flagged segment must get (None: dropped)
        for i, (text, lab) in enumerate(zip(doc.segments, doc.labels, strict=True)):
            if lab.label != Label.safe:
                flagged += 1
                pii += "[pii]" in text
                doc.rewrites[i] = None if "[pii]" in text else f"A calm line for {text.split(' says ')[0]}."
    tok = raw_tokenizer(tiny_tokenizer_dir)
    eod = tok.token_to_id("<|endoftext|>")
    assert read(out) == [r for d in docs if (r := reference(d, "rewrite", "paper", tok, eod)) is not None]
    meta = RenderMetadata.load(out)
    assert meta.dropped.get("segments_rewrite_missing") == pii > 0
    assert requests == flagged + pii * RETRIES
    assert meta.arm_counts == {
        "segments_rewritten": flagged - pii, "rewriter_rewrites": flagged, "rewriter_requests": requests,
        "rewriter_rewrites_failed_parse": pii, "rewriter_retried_parse": pii * RETRIES, "rewriter_failed_parse": pii,
    }  # fmt: skip
    assert meta.options["arm"]["rewriter"] == "openai-rewriter:writer"
