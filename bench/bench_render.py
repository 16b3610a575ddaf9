"""``srp render`` speed and memory, each measured side by side in one run.

1. Throughput, one core: plain tokenization of the demo corpus (whole documents through the same
   tokenizer's ``encode_batch``, as Megatron-LM's ``preprocess_data.py`` does; texts already in memory)
   vs ``render --arm srp`` of the same documents (reading the Parquet labels directory, laying out
   pieces, tokenizing, writing ``.bin/.idx`` and span types). Interleaved repetitions; the ratio of the
   best corpus MB/s of each side (the median is printed too). Target: >= 0.8.
2. Peak memory: the peak RSS of a render subprocess on a small and on a large labels directory
   (default 3 GB of text, ``--quick`` 300 MB) generated on the fly; then on many one-sentence documents,
   where the per-document index megatron's builder keeps is what grows: two sizes (default 0.5M and 2M
   documents, ``--quick`` 0.1M and 0.4M) give bytes per document, and shard 0 of 4 of the larger one
   (``--num-shards 4``, as many documents as the smaller) shows that a shard's memory follows its own
   document count. Target: < 2 GB for every run.

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
    from srp_megatron.formats.labels import Label, LabelledDocument, SegmentLabel
    from srp_megatron.prep.demo_corpus import UNSAFE_SENTENCES, demo_documents
    from srp_megatron.prep.segment import Segmenter, SegmenterConfig

    unsafe = [(s, cat) for cat, sents in UNSAFE_SENTENCES.items() for s in sents]
    segmenter = Segmenter(SegmenterConfig())
    docs, size = [], 0
    for i, row in enumerate(demo_documents(10**9, seed=seed, unsafe_share=0.2, cjk_share=0.02)):
        segments = segmenter.split(row["text"])
        labels = []
        for seg in segments:
            cats = tuple(sorted({cat for s, cat in unsafe if s in seg}))
            labels.append(SegmentLabel(Label.unsafe, cats) if cats else SegmentLabel(Label.safe))
        docs.append(LabelledDocument(i, row["id"], segments, labels, [None] * len(segments)))
        size += len(row["text"].encode())
        if size >= num_bytes:
            return docs, size
    raise AssertionError("unreachable")


def write_labels(path: str, docs, copies: int = 1) -> None:
    """A labels directory holding ``copies`` copies of ``docs`` (distinct doc_index), no manifest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from srp_megatron.formats.atomic import write_table_atomic
    from srp_megatron.formats.labels import documents_to_table, unit_path

    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    tables = [documents_to_table(docs[i : i + UNIT_DOCS], "keyword") for i in range(0, len(docs), UNIT_DOCS)]
    unit = 0
    for copy in range(copies):
        for table in tables:
            index = pc.add(table.column("doc_index"), pa.scalar(copy * len(docs), pa.int64()))
            write_table_atomic(table.set_column(0, table.schema.field(0), index), unit_path(path, unit))
            unit += 1


def render_once(labels_dir: str, tokenizer_dir: str, prefix: str, num_shards: int = 1, shard_index: int = 0):
    """Run the render stage (arm srp, paper template) on one shard and return its metadata."""
    from srp_megatron.prep.render.stage import RenderConfig, render
    from srp_megatron.prep.tokenizer import TokenizerConfig

    cfg = RenderConfig(
        labels_dir=labels_dir,
        out=prefix,
        arm="srp",
        tokenizer=TokenizerConfig(path=tokenizer_dir),
        overwrite=True,
        progress=False,
        num_shards=num_shards,
        shard_index=shard_index,
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


def _child(labels_dir: str, tokenizer_dir: str, prefix: str, num_shards: str, shard_index: str) -> None:
    """Subprocess body of the memory part: render, then report peak RSS as JSON."""
    import resource

    start = time.perf_counter()
    meta = render_once(labels_dir, tokenizer_dir, prefix, int(num_shards), int(shard_index))
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


def _measure(work: str, name: str, labels_dir: str, tokenizer_dir: str, num_shards: int = 1) -> dict:
    """Peak RSS of a render subprocess (shard 0 of ``num_shards``); its outputs are removed."""
    prefix = os.path.join(work, f"mem_{name}")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", labels_dir, tokenizer_dir, prefix]
    cmd += [str(num_shards), "0"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    for suffix in (".bin", ".idx", ".json", "_spans.bin", "_spans.idx"):
        os.remove(prefix + suffix)  # keep disk use down
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_documents(n: int):
    """``n`` distinct one-sentence documents: the index, not the text, dominates what a render holds."""
    from srp_megatron.formats.labels import Label, LabelledDocument, SegmentLabel

    return [LabelledDocument(i, f"t{i}", [f"Tiny document {i} says hello. "], [SegmentLabel(Label.safe)], [None])
            for i in range(n)]  # fmt: skip


def memory(args, work: str, tokenizer_dir: str) -> bool:
    """Part 2: peak RSS of render subprocesses: text size, then document count, and one shard."""
    large_bytes = 300_000_000 if args.quick else int(args.large_gb * 1e9)
    docs, size = labelled_documents(30_000_000, seed=2)
    tiny_small = 100_000 if args.quick else 500_000
    tiny = tiny_documents(20_000)
    runs = [  # (corpus, documents, copies, shards)
        ("text small", docs, 1, 1),
        ("text large", docs, max(1, round(large_bytes / size)), 1),
        ("docs small", tiny, tiny_small // len(tiny), 1),
        ("docs large", tiny, 4 * tiny_small // len(tiny), 1),
        ("docs large", tiny, 4 * tiny_small // len(tiny), 4),
    ]
    rows, labels_dir, written = [], os.path.join(work, "labels_mem"), None
    for name, corpus, copies, shards in runs:
        if written != (name, copies):  # the shard run reuses the labels directory of the run before it
            write_labels(labels_dir, corpus, copies)
            written = (name, copies)
        rows.append((name, shards, _measure(work, name.replace(" ", "_"), labels_dir, tokenizer_dir, shards)))
    shutil.rmtree(labels_dir)
    print(f"\npeak memory of a render subprocess (limit {MEMORY_LIMIT_MB} MB)")
    print(f"{'corpus':12s}{'shard':>8s}{'documents':>12s}{'tokens':>14s}{'s':>8s}{'peak RSS MB':>13s}")
    for name, shards, r in rows:
        shard = f"0 of {shards}" if shards > 1 else "-"
        print(f"{name:12s}{shard:>8s}{r['documents']:12d}{r['tokens']:14d}{r['seconds']:8.1f}{r['peak_mb']:13.0f}")
    (_, _, text_small), (_, _, text_large), (_, _, small), (_, _, large), (_, _, shard) = rows
    print(f"text small -> large: {text_large['peak_mb'] - text_small['peak_mb']:+.0f} MB for "
          f"{text_large['documents'] - text_small['documents']} more documents")
    per_doc = (large["peak_mb"] - small["peak_mb"]) * 2**20 / (large["documents"] - small["documents"])
    print(f"docs small -> large: {per_doc:.0f} bytes per extra document", end="")
    if per_doc > 0:
        at_limit = small["documents"] + (MEMORY_LIMIT_MB - small["peak_mb"]) * 2**20 / per_doc
        print(f"; one prefix reaches {MEMORY_LIMIT_MB} MB near {at_limit / 1e6:.0f}M documents")
    else:
        print()
    print(f"shard 0 of 4 of docs large ({shard['documents']} documents): {shard['peak_mb']:.0f} MB, "
          f"docs small ({small['documents']} documents): {small['peak_mb']:.0f} MB")
    return all(r["peak_mb"] < MEMORY_LIMIT_MB for _, _, r in rows)


def main() -> int:
    """Run the selected parts and print their tables."""
    warnings.filterwarnings("ignore", category=UserWarning)  # megatron-core's "TE/Apex not installed" notices
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, fewer repetitions, 300 MB memory run")
    parser.add_argument("--part", choices=["throughput", "memory", "all"], default="all")
    parser.add_argument("--large-gb", type=float, default=3.0, help="text size of the large memory run (GB)")
    parser.add_argument("--work", default="bench_out/render", help="scratch directory")
    parser.add_argument("--child", nargs=5, metavar=("LABELS", "TOKENIZER", "PREFIX", "SHARDS", "INDEX"),
                        help=argparse.SUPPRESS)
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
