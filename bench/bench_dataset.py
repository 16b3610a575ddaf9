"""``ReflectionGPTDataset.__getitem__`` throughput vs megatron-core's stock ``GPTDataset``, side by side.

Writes a render-like corpus (text runs, reflections with markers, unsafe text, EOD) with
``RenderedDatasetWriter``, builds both datasets' index caches, then loads both from the cache (memory
mapped, like training) and times ``__getitem__`` over the same random indices in interleaved
repetitions. The SRP dataset uses the ``reflection_context`` policy so the mask does real work.

Target: median per-repetition ratio SRP/stock >= 0.9 at sequence length 2048 with GPTDataset's
cached attention mask and position ids (exit status 1 if missed). The ``eod_mask_loss=True`` rows
show what happens when that reuse stops, for both datasets alike.

    .venv/bin/python bench/bench_dataset.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import warnings
from collections import OrderedDict

import numpy as np

TARGET = 0.9
VOCAB = 49152  # SmolLM2's vocabulary: uint16 tokens, as in the paper's setup
EOD = 0


class BenchTokenizer:
    """The attributes megatron's datasets read (no text is encoded here)."""

    eod = EOD
    pad = EOD
    vocab_size = VOCAB
    unique_identifiers = OrderedDict([("class", "BenchTokenizer"), ("vocab_size", VOCAB)])


def _document(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One document: ~100-token segments, each followed by a 5-8 token reflection; EOD last."""
    from srp_megatron.formats.rendered import SpanType

    tokens, spans = [], []
    for _ in range(int(rng.integers(1, 12))):
        n = int(rng.integers(60, 140))
        unsafe = rng.random() < 0.1
        tokens.append(rng.integers(1, VOCAB, n))
        spans.append(np.full(n, SpanType.unsafe_text if unsafe else SpanType.text))
        body = int(rng.integers(1, 4)) + (2 if unsafe else 0)
        tokens.append(rng.integers(1, VOCAB, body + 2))
        marker = [SpanType.reflection_marker]
        spans.append(np.array(marker + [SpanType.reflection] * body + marker))
    tokens.append(np.array([EOD]))
    spans.append(np.array([SpanType.text]))
    return np.concatenate(tokens).astype(np.uint16), np.concatenate(spans).astype(np.uint8)


def write_corpus(prefix: str, num_tokens: int, seed: int = 0) -> None:
    """Write ``prefix`` (tokens, spans, PREFIX.json) unless it exists."""
    from tqdm import tqdm

    from srp_megatron.formats.rendered import RenderedDatasetWriter, RenderMetadata

    if os.path.exists(prefix + ".json"):
        return
    rng = np.random.default_rng(seed)
    writer = RenderedDatasetWriter(prefix, VOCAB)
    with tqdm(total=num_tokens, unit="tok", desc="corpus") as bar:
        while writer.tokens < num_tokens:
            tokens, spans = _document(rng)
            writer.add_document(tokens, spans)
            bar.update(len(tokens))
    writer.finalize()
    tokenizer = {"kind": "bench", "path": "", "sha256": "", "vocab_size": VOCAB, "eod": EOD}
    RenderMetadata(arm="srp", template="paper", tokenizer=tokenizer, documents=writer.documents,
                   tokens=writer.tokens).save(prefix)


def build(cls, config):
    """The train split through megatron's builder (one epoch)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    return BlendedMegatronDatasetBuilder(cls, [None, None, None], lambda: True, config).build()[0]


def datasets(prefix: str, cache: str, seq: int, **options):
    """Stock and SRP datasets, both loaded from a cache built beforehand."""
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from srp_megatron.data.dataset import ReflectionGPTDataset, ReflectionGPTDatasetConfig

    common = dict(random_seed=1234, sequence_length=seq, blend=([prefix], None), split="100,0,0",
                  path_to_cache=cache, tokenizer=BenchTokenizer(), reset_position_ids=False,
                  reset_attention_mask=False, **options)
    pairs = ((GPTDataset, GPTDatasetConfig(**common)),
             (ReflectionGPTDataset, ReflectionGPTDatasetConfig(**common, loss_policy="reflection_context")))
    for cls, config in pairs:  # first build writes the index cache
        build(cls, config)
    return [build(cls, config) for cls, config in pairs]


def time_pair(stock, srp, indices: list[int], reps: int) -> tuple[float, float, float]:
    """Median samples/s of each and the median per-repetition ratio, interleaved."""
    for ds in (stock, srp):  # warm the page cache and GPTDataset's mask cache
        for i in indices:
            ds[i]
    rates = {"stock": [], "srp": []}
    gc.disable()
    try:
        for _ in range(reps):
            for name, ds in (("stock", stock), ("srp", srp)):
                t0 = time.process_time()  # CPU time: the machine is shared, wall time is mostly noise
                for i in indices:
                    ds[i]
                rates[name].append(len(indices) / (time.process_time() - t0))
    finally:
        gc.enable()
    ratios = [b / a for a, b in zip(rates["stock"], rates["srp"], strict=True)]
    return statistics.median(rates["stock"]), statistics.median(rates["srp"]), statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 1 when the ratio misses the target."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small corpus and few repetitions")
    parser.add_argument("--out", default="bench_out/dataset", help="corpus and index cache directory")
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.INFO)
    from srp_megatron.data.compat import mcore_version

    num_tokens, samples, reps = (3_000_000, 300, 15) if args.quick else (30_000_000, 500, 41)
    prefix = os.path.join(args.out, f"corpus_{num_tokens}")
    write_corpus(prefix, num_tokens)
    cache = os.path.join(args.out, "cache")
    print(f"megatron-core {mcore_version()}, {num_tokens:,} tokens, seq {args.seq}, "
          f"{samples} random samples x {reps} interleaved repetitions, policy reflection_context")
    print(f"{'configuration':44s} {'stock/s':>9s} {'srp/s':>9s} {'ratio':>6s}")
    rows = [("attention mask, masks cached (target)", {"eod_mask_loss": False}, samples, reps),
            ("no attention mask, cached", {"eod_mask_loss": False, "create_attention_mask": False}, samples, reps),
            ("eod_mask_loss=True: no reuse, dense mask", {"eod_mask_loss": True}, max(samples // 20, 20), 3)]
    ratio_target = None
    for label, options, n, r in rows:
        stock, srp = datasets(prefix, cache, args.seq, **options)
        indices = np.random.default_rng(0).integers(0, len(stock), n).tolist()
        a, b, ratio = time_pair(stock, srp, indices, r)
        print(f"{label:44s} {a:9.0f} {b:9.0f} {ratio:6.3f}")
        ratio_target = ratio if ratio_target is None else ratio_target
    ok = ratio_target >= TARGET
    print(f"ratio {ratio_target:.3f} (target >= {TARGET}): {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
