"""``srp label`` targets: keyword labelling speed per core, and peak memory independent of corpus size.

1. Keyword throughput: the demo corpus is segmented once, then ``KeywordLabeler.label_documents`` is timed
   in one process over batches of 64 documents (best of 3 passes), in CPU time of this process, so that other
   work on the machine does not count. Target: >= 20 MB/s of UTF-8 text per core. The segmenter's and the
   combined speed are printed for information.
2. Peak memory: ``srp label --labeler keyword`` runs as a subprocess on a small corpus and then on a
   corpus of several GB generated on the fly (demo documents repeated with fresh ids, in 256 MB JSONL
   files); the peak RSS of each run comes from ``getrusage(RUSAGE_CHILDREN).ru_maxrss``. Target: the big
   run stays under 2 GB (the ratio big/small shows memory does not grow with the corpus).

Exit status 1 if a target is missed.

    .venv/bin/python bench/bench_label.py [--quick] [--big-gb 3] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

KEYWORD_TARGET_MBS = 20.0
RSS_LIMIT_MB = 2048.0
FILE_BYTES = 256 * 1024 * 1024
# The command module, as `srp label` calls it (the spawn-safe __main__ guard is not needed: workers=1).
SCRIPT = (
    "import argparse, sys\n"
    "from srp_megatron.cli import label as labeling\n"
    "p = argparse.ArgumentParser(); labeling.add_arguments(p)\n"
    "sys.exit(labeling.main(p.parse_args()))\n"
)


def keyword_throughput(num_docs: int) -> dict[str, float]:
    """MB/s of the keyword labeler alone, of the segmenter, and of both, in this process."""
    from srp_megatron.prep.demo_corpus import demo_documents
    from srp_megatron.prep.label.labelers.base import SegmentedDocument
    from srp_megatron.prep.label.labelers.keyword import KeywordLabeler, KeywordLabelerConfig
    from srp_megatron.prep.segment import Segmenter, SegmenterConfig

    rows = list(demo_documents(num_docs, seed=1, unsafe_share=0.2, cjk_share=0.05))
    mb = sum(len(r["text"].encode()) for r in rows) / 1e6
    segmenter, labeler = Segmenter(SegmenterConfig()), KeywordLabeler(KeywordLabelerConfig())
    docs = [SegmentedDocument(r["id"], segmenter.split(r["text"])) for r in rows]
    batches = [docs[i : i + 64] for i in range(0, len(docs), 64)]
    best = {"label": float("inf"), "segment": float("inf")}
    for _ in range(3):
        t0 = time.process_time()
        for batch in batches:
            labeler.label_documents(batch)
        t1 = time.process_time()
        for r in rows:
            segmenter.split(r["text"])
        t2 = time.process_time()
        best["label"] = min(best["label"], t1 - t0)
        best["segment"] = min(best["segment"], t2 - t1)
    return {"mb": mb, "label": mb / best["label"], "segment": mb / best["segment"],
            "both": mb / (best["label"] + best["segment"])}


def write_corpus(directory: str, total_bytes: int, seed: int) -> int:
    """Write >= ``total_bytes`` of demo JSONL (distinct ids, 2,000 distinct texts) and return the bytes written."""
    from srp_megatron.prep.demo_corpus import demo_documents

    # each line: '{"id": "big-<n>", ' + the rest of the row's JSON, so only the id is formatted per line
    tails = [json.dumps({k: v for k, v in r.items() if k != "id"}, ensure_ascii=False)[1:].encode() + b"\n"
             for r in demo_documents(2000, seed=seed, unsafe_share=0.2, cjk_share=0.05)]
    written, n, part = 0, 0, 0
    os.makedirs(directory, exist_ok=True)
    while written < total_bytes:
        with open(os.path.join(directory, f"part-{part:04d}.jsonl"), "wb") as f:
            size = 0
            while size < FILE_BYTES and written + size < total_bytes:
                chunk = b"".join(b'{"id": "big-%010d", ' % (n + i) + tails[(n + i) % len(tails)] for i in range(4096))
                f.write(chunk)
                size += len(chunk)
                n += 4096
        written += size
        part += 1
    return written


def label_peak_rss(corpus: str, out: str) -> tuple[float, float, dict]:
    """Run ``srp label`` in a subprocess; return (peak RSS of all children so far in MB, seconds, manifest)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", SCRIPT, corpus, "--out", out, "--labeler", "keyword", "--no-progress"],
                   check=True, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, seconds, manifest


def main() -> int:
    """Run both measurements, print the table, return 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller corpora (300 MB big corpus)")
    parser.add_argument("--big-gb", type=float, default=None, help="size of the big corpus (default 3, quick 0.3)")
    parser.add_argument("--tmpdir", default=None, help="where to write the corpora (needs ~1.4x --big-gb free)")
    args = parser.parse_args()
    big_gb = args.big_gb or (0.3 if args.quick else 3.0)

    kw = keyword_throughput(3000 if args.quick else 20000)
    ok_speed = kw["label"] >= KEYWORD_TARGET_MBS
    print(f"keyword labelling, one process, demo corpus ({kw['mb']:.1f} MB of text), per CPU second")
    print(f"  {'step':<28} {'MB/s':>8} {'target':>8} {'ratio':>7}")
    print(f"  {'label_documents':<28} {kw['label']:8.1f} {KEYWORD_TARGET_MBS:8.1f} "
          f"{kw['label'] / KEYWORD_TARGET_MBS:6.2f}x  {'ok' if ok_speed else 'MISSED'}")
    print(f"  {'segmenter (info)':<28} {kw['segment']:8.1f}")
    print(f"  {'segment + label (info)':<28} {kw['both']:8.1f}")

    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="bench_label_") as tmp:
        small_bytes = write_corpus(os.path.join(tmp, "small"), 20 * 1024 * 1024, seed=1)
        big_bytes = write_corpus(os.path.join(tmp, "big"), int(big_gb * 1024**3), seed=2)
        small_rss, small_s, _ = label_peak_rss(os.path.join(tmp, "small"), os.path.join(tmp, "small_out"))
        big_rss, big_s, manifest = label_peak_rss(os.path.join(tmp, "big"), os.path.join(tmp, "big_out"))
    ok_mem = big_rss < RSS_LIMIT_MB and manifest["complete"]
    print("\npeak RSS of `srp label --labeler keyword` (one process)")
    print(f"  {'corpus':<28} {'input':>9} {'docs':>10} {'time s':>8} {'MB/s':>6} {'peak RSS':>10}")
    for name, size, docs, secs, rss in (("small", small_bytes, None, small_s, small_rss),
                                        ("big", big_bytes, manifest["docs_in"], big_s, big_rss)):
        docs_txt = f"{docs:,}" if docs is not None else "-"
        print(f"  {name:<28} {size / 1e6:7.0f}MB {docs_txt:>10} {secs:8.1f} {size / 1e6 / secs:6.1f} {rss:8.0f}MB")
    print(f"  big/small peak RSS ratio: {big_rss / small_rss:.2f} (limit for big: {RSS_LIMIT_MB:.0f} MB) "
          f"{'ok' if ok_mem else 'MISSED'}")
    return 0 if ok_speed and ok_mem else 1


if __name__ == "__main__":
    sys.exit(main())
