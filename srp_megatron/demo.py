"""The demo behind ``srp demo`` (its steps: ``srp demo --help``): the real label, render and pretrain stages
called in-process on a generated corpus, and the summary table they produce."""

from __future__ import annotations

import json
import logging
import os

from srp_megatron.config import load_config
from srp_megatron.prep.demo_corpus import demo_documents
from srp_megatron.prep.label.stage import LabelConfig, run_label
from srp_megatron.prep.render.stage import RenderConfig, render
from srp_megatron.prep.tokenizer import train_bpe_tokenizer
from srp_megatron.train.config import load_pretrain_config
from srp_megatron.train.metrics import plot_losses, read_metrics
from srp_megatron.train.trainer import run_pretrain

logger = logging.getLogger(__name__)

#: (dataset name, arm, template) rendered by the demo.
DEMO_ARMS = [
    ("srp", "srp", "paper"),
    ("srp_special", "srp", "special"),
    ("raw", "raw", "paper"),
    ("filter", "filter", "paper"),
    ("tag", "tag", "paper"),
]


def _write_corpus(path: str, num_docs: int, seed: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in demo_documents(num_docs, seed=seed, cjk_share=0.05):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        # Bad input is skipped and counted by reason, never silently lost.
        f.write('{"id": "broken", "text": "unterminated\n')
        f.write(json.dumps({"id": "empty", "text": ""}) + "\n")
        f.write(json.dumps({"id": "no-text", "body": "wrong field"}) + "\n")


def _label(corpus: str, out: str) -> dict:
    cfg = load_config(
        LabelConfig, values={"inputs": [corpus], "out": out, "labeler": "keyword", "docs_per_unit": 1000}
    )
    return run_label(cfg)


def _render(labels: str, tokenizer: str, prefix: str, arm: str, template: str) -> dict:
    values = {
        "labels_dir": labels,
        "out": prefix,
        "arm": arm,
        "overwrite": True,
        "tokenizer": {"path": tokenizer},
        "template": {"kind": template},
    }
    meta = render(load_config(RenderConfig, values=values))
    return {
        "documents": meta.documents,
        "tokens": meta.tokens,
        "reflections": meta.reflections,
        "dropped": meta.dropped,
        "span_tokens": meta.span_tokens,
    }


def _pretrain(prefix: str, tokenizer: str, run_dir: str, iters: int) -> dict:
    overrides = [
        f"data.paths=[{prefix}]",
        f"data.tokenizer={tokenizer}",
        f"training.train_iters={iters}",
        f"training.eval_interval={iters}",
        f"logging.run_dir={run_dir}",
        "logging.log_interval=5",
    ]
    run_pretrain(load_pretrain_config("tiny-cpu", overrides))
    train = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    spans = {
        k.removeprefix("loss/").removesuffix("(nats)"): round(v, 3)
        for k, v in train[-1].items()
        if k.startswith("loss/") and k != "loss/total(nats)"
    }
    return {
        "iterations": train[-1]["step"],
        "first_loss": train[0]["loss/total(nats)"],
        "last_loss": train[-1]["loss/total(nats)"],
        "last_span_losses": spans,
        "plot": plot_losses(run_dir),
    }


def run_demo(out: str, docs: int = 3000, train_iters: int = 60, seed: int = 0) -> dict:
    """Run the demo in ``out``, print its summary table and return the summary (also saved as summary.json)."""
    os.makedirs(out, exist_ok=True)
    corpus = os.path.join(out, "corpus.jsonl")
    _write_corpus(corpus, docs, seed)
    tokenizer = train_bpe_tokenizer(
        (d["text"] for d in demo_documents(docs, seed=seed, cjk_share=0.05)),
        os.path.join(out, "tokenizer"),
        vocab_size=2048,
    )
    labels_dir = os.path.join(out, "labels")
    manifest = _label(corpus, labels_dir)
    summary: dict = {"label": {k: manifest[k] for k in ("docs_in", "docs_ok", "docs_skipped", "segments", "labels")}}
    summary["render"] = {
        name: _render(labels_dir, tokenizer, os.path.join(out, "data", name), arm, template)
        for name, arm, template in DEMO_ARMS
    }
    if train_iters > 0:
        summary["pretrain"] = _pretrain(os.path.join(out, "data", "srp"), tokenizer, os.path.join(out, "run"),
                                        train_iters)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
    _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    lab = summary["label"]
    print(
        f"\nlabel: {lab['docs_in']} records in, {lab['docs_ok']} ok, skipped {lab['docs_skipped']}; "
        f"{lab['segments']} segments, labels {lab['labels']}"
    )
    print(f"\n{'arm':<12}{'documents':>10}{'tokens':>10}{'reflections':>13}  dropped")
    for name, r in summary["render"].items():
        print(f"{name:<12}{r['documents']:>10}{r['tokens']:>10}{r['reflections']:>13}  {r['dropped'] or '-'}")
    if "pretrain" in summary:
        p = summary["pretrain"]
        print(
            f"\npretrain (tiny GPTModel, CPU): loss {p['first_loss']:.3f} -> {p['last_loss']:.3f} "
            f"over {p['iterations']} steps; last per-span losses {p['last_span_losses']}; plot {p['plot']}"
        )
