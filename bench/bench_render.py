"""``srp render`` speed and memory, each measured side by side in one run.

1. Throughput, one core: plain tokenization of the demo corpus (whole documents through the same
   tokenizer's ``encode_batch``, as Megatron-LM's ``preprocess_data.py`` does; texts already in memory)
   vs ``render --arm srp`` of the same documents (reading the Parquet labels directory, laying out
   pieces, tokenizing, writing ``.bin/.idx`` and span types). Interleaved repetitions; the ratio of the
   best corpus MB/s of each side (the median is printed too). Target: >= 0.8.
2. Peak memory: the peak RSS of a render subprocess on a small and on a large labels directory
   (default 3 GB of text, ``--quick`` 300 MB) generated on the fly. Target: < 2 GB for both.

The tokenizer is a 32k byte-level BPE trained here (no downloads) on demo text plus a seeded
Zipf-distributed pseudo-word text, so that it has a realistic vocabulary size.

    .venv/bin/python bench/bench_render.py [--quick] [--part throughput|memory|all] [--work DIR]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import os

# One core for the Rust tokenizer and no fork-parallelism warnings: set before tokenizers is imported.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

TARGET_RATIO = 0.8
MEMORY_LIMIT_MB = 2048
UNIT_DOCS = 4000  # documents per Parquet unit, like a labels directory written by srp label


def lexicon_text(num_bytes: int, seed: int = 0, words: int = 80000) -> list[str]:
    """Seeded pseudo-English: Zipf-distributed words built from syllables (tokenizer training only)."""
    rng = np.random.default_rng(seed)
    cons = list("bcdfghjklmnprstvwz") + ["ch", "sh", "th", "st", "tr", "pl", "gr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
    syllables = np.array([c + v for c in cons for v in vowels] + [c + v + "n" for c in cons for v in vowels[:5]])
    lexicon = ["".join(syllables[rng.integers(0, len(syllables), k)]) for k in rng.integers(1, 5, words)]
    p = 1.0 / np.arange(1, words + 1)
    p /= p.sum()
    out, n = [], 0
    while n < num_bytes:
        line = " ".join(lexicon[i] for i in rng.choice(words, 2000, p=p)) + ".\n"
        out.append(line)
        n += len(line)
    return out


def build_tokenizer(work: str) -> str:
    """A 32k byte-level BPE tokenizer directory (cached in ``work``)."""
    from srp_megatron.prep.demo_corpus import demo_documents
    from srp_megatron.prep.tokenizer import train_bpe_tokenizer

    path = os.path.join(work, "tokenizer32k")
    if not os.path.exists(os.path.join(path, "tokenizer.json")):
        texts = [d["text"] for d in demo_documents(1500, seed=99)] + lexicon_text(4_000_000)
        train_bpe_tokenizer(texts, path, vocab_size=32768)
    return path


def labelled_documents(num_bytes: int, seed: int):
    """Demo documents of about ``num_bytes`` of text, segmented (100 words) and keyword-labelled."""
    from srp_megatron.prep.demo_corpus import UNSAFE_SENTENCES, demo_documents
    from srp_megatron.prep.label.base import Label, SegmentLabel
    from srp_megatron.prep.segment import Segmenter, SegmenterConfig
    from srp_megatron.prep.segments_io import LabelledDocument

    unsafe = [(s, cat) for cat, sents in UNSAFE_SENTENCES.items() for s in sents]
    segmenter = Segmenter(SegmenterConfig())
    docs, size = [], 0
    for i, row in enumerate(demo_documents(10**9, seed=seed, unsafe_share=0.2, cjk_share=0.02)):
        segments = segmenter.split(row["text"])
        labels = []
        for seg in segments:
            cats = tuple(sorted({cat for s, cat in unsafe if s in seg}))
            labels.append(SegmentLabel(Label.UNSAFE, cats) if cats else SegmentLabel(Label.SAFE))
        docs.append(LabelledDocument(i, row["id"], segments, labels, [None] * len(segments)))
        size += len(row["text"].encode())
        if size >= num_bytes:
            return docs, size
    raise AssertionError("unreachable")


def write_labels(path: str, docs, copies: int = 1) -> None:
    """A labels directory holding ``copies`` copies of ``docs`` (distinct doc_index), no manifest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from srp_megatron.prep.segments_io import documents_to_table, unit_path, write_table_atomic

    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    tables = [documents_to_table(docs[i : i + UNIT_DOCS], "keyword") for i in range(0, len(docs), UNIT_DOCS)]
    unit = 0
    for copy in range(copies):
        for table in tables:
            index = pc.add(table.column("doc_index"), pa.scalar(copy * len(docs), pa.int64()))
            write_table_atomic(table.set_column(0, table.schema.field(0), index), unit_path(path, unit))
            unit += 1


def render_once(labels_dir: str, tokenizer_dir: str, prefix: str):
    """Run the render stage (arm srp, paper template) and return its metadata."""
    from srp_megatron.prep.rendering import RenderConfig, render
    from srp_megatron.prep.tokenizer import TokenizerConfig

    cfg = RenderConfig(
        labels_dir=labels_dir,
        out=prefix,
        arm="srp",
        tokenizer=TokenizerConfig(path=tokenizer_dir),
        overwrite=True,
        progress=False,
    )
    return render(cfg)


def throughput(args, work: str, tokenizer_dir: str) -> bool:
    """Part 1: plain tokenization vs render, interleaved; returns whether the target is met."""
    import logging

    from srp_megatron.prep.tokenizer import load_tokenizer

    logging.getLogger("srp_megatron").setLevel(logging.ERROR)  # no per-render summary lines in the table
    num_bytes = 4_000_000 if args.quick else 24_000_000
    reps = 3 if args.quick else 5
    docs, size = labelled_documents(num_bytes, seed=1)
    texts = ["".join(d.segments) for d in docs]
    labels_dir = os.path.join(work, "labels_speed")
    write_labels(labels_dir, docs)
    prefix = os.path.join(work, "speed")
    render_once(labels_dir, tokenizer_dir, prefix)  # warm-up: imports, page cache
    plain_s, render_s = [], []
    plain_tokens = render_tokens = 0
    for _ in range(reps):
        start = time.perf_counter()
        tok = load_tokenizer(tokenizer_dir)  # both sides load the tokenizer, as a preprocessing job does
        plain_tokens = sum(len(ids) for i in range(0, len(texts), 256) for ids in tok.encode_batch(texts[i : i + 256]))
        plain_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        render_tokens = render_once(labels_dir, tokenizer_dir, prefix).tokens
        render_s.append(time.perf_counter() - start)
    mb = size / 1e6
    # Best of the interleaved repetitions: the least disturbed by other processes on a shared machine.
    plain, rendered = min(plain_s), min(render_s)
    ratio = plain / rendered
    print(
        f"\nthroughput, 1 core: {len(docs)} documents, {mb:.1f} MB of text, tokenizer vocab {tok.vocab_size}; "
        f"best of {reps} interleaved repetitions (both sides include loading the tokenizer)"
    )
    print(f"{'':24s}{'best s':>8s}{'median s':>10s}{'MB/s':>8s}{'tokens':>11s}{'tokens/s':>11s}")
    for name, times, tokens in (
        ("plain encode_batch", plain_s, plain_tokens),
        ("srp render (arm srp)", render_s, render_tokens),
    ):
        best = min(times)
        print(
            f"{name:24s}{best:8.2f}{statistics.median(times):10.2f}{mb / best:8.2f}{tokens:11d}{tokens / best:11,.0f}"
        )
    print(
        f"ratio render/plain (corpus MB/s, best): {ratio:.3f}  target >= {TARGET_RATIO}  "
        f"(median: {statistics.median(plain_s) / statistics.median(render_s):.3f}; per repetition: "
        f"{', '.join(f'{p / r:.2f}' for p, r in zip(plain_s, render_s, strict=True))})"
    )
    return ratio >= TARGET_RATIO


def _child(labels_dir: str, tokenizer_dir: str, prefix: str) -> None:
    """Subprocess body of the memory part: render, then report peak RSS as JSON."""
    import resource

    start = time.perf_counter()
    meta = render_once(labels_dir, tokenizer_dir, prefix)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "peak_mb": peak_mb,
                "documents": meta.documents,
                "tokens": meta.tokens,
                "seconds": time.perf_counter() - start,
            }
        )
    )


def memory(args, work: str, tokenizer_dir: str) -> bool:
    """Part 2: peak RSS of a render subprocess on a small and a large labels directory."""
    large_bytes = 300_000_000 if args.quick else int(args.large_gb * 1e9)
    docs, size = labelled_documents(30_000_000, seed=2)
    rows = []
    for name, copies in (("small", 1), ("large", max(1, round(large_bytes / size)))):
        labels_dir = os.path.join(work, f"labels_{name}")
        write_labels(labels_dir, docs, copies)
        out = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                labels_dir,
                tokenizer_dir,
                os.path.join(work, f"mem_{name}"),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append((name, size * copies / 1e9, json.loads(out.stdout.strip().splitlines()[-1])))
        for suffix in (".bin", ".idx", ".json", "_spans.bin", "_spans.idx"):
            os.remove(os.path.join(work, f"mem_{name}{suffix}"))  # keep disk use down
        shutil.rmtree(labels_dir)
    print(f"\npeak memory of a render subprocess (limit {MEMORY_LIMIT_MB} MB)")
    print(f"{'corpus':8s}{'text GB':>9s}{'documents':>12s}{'tokens':>14s}{'s':>8s}{'peak RSS MB':>13s}")
    for name, gb, r in rows:
        print(f"{name:8s}{gb:9.2f}{r['documents']:12d}{r['tokens']:14d}{r['seconds']:8.1f}{r['peak_mb']:13.0f}")
    (_, _, small), (_, _, large) = rows
    growth = (large["peak_mb"] - small["peak_mb"]) * 2**20 / max(large["documents"] - small["documents"], 1)
    print(
        f"growth small -> large: {large['peak_mb'] - small['peak_mb']:.0f} MB ({growth:.0f} bytes per extra document)"
    )
    return all(r["peak_mb"] < MEMORY_LIMIT_MB for _, _, r in rows)


def main() -> int:
    """Run the selected parts and print their tables."""
    warnings.filterwarnings("ignore", category=UserWarning)  # megatron-core's "TE/Apex not installed" notices
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, fewer repetitions, 300 MB memory run")
    parser.add_argument("--part", choices=["throughput", "memory", "all"], default="all")
    parser.add_argument("--large-gb", type=float, default=3.0, help="text size of the large memory run (GB)")
    parser.add_argument("--work", default="bench_out/render", help="scratch directory")
    parser.add_argument("--child", nargs=3, metavar=("LABELS", "TOKENIZER", "PREFIX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    tokenizer_dir = build_tokenizer(work)
    ok = True
    if args.part in ("throughput", "all"):
        ok &= throughput(args, work, tokenizer_dir)
    if args.part in ("memory", "all"):
        ok &= memory(args, work, tokenizer_dir)
    print("\nPASS" if ok else "\nFAIL: a target was missed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
