"""Segment documents and label every segment, resumably: ``srp label INPUT... --out DIR --labeler NAME``.

The input stream (files sorted, records in order) is cut into units of ``docs_per_unit`` records. Each unit
becomes ``DIR/segments-NNNNNN.parquet`` plus ``DIR/stats-NNNNNN.json``, both written atomically, so a run
killed at any moment and rerun with the same arguments skips the finished units and ends with a directory
byte-identical to an uninterrupted run. ``--num-shards N --shard-index K`` labels only units ``u % N == K``
(an array job: every task scans the stream, cheaply skipping other units); the last task to finish writes
``manifest.json`` with ``complete: true``. ``--workers W`` labels batches in W processes; the labeler's
counters (``Labeler.stats()``) come back with each batch and are kept per unit (``units.py``).

Bad records are skipped and counted by reason (``--strict``: stop at the first, naming file and line).
The progress bar shows docs/s and tokens/s, tokens estimated as characters / 4.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``srp label``."""
    parser.add_argument("items", nargs="*", metavar="INPUT | key=value",
                        help="input files, directories or globs; config overrides like reader.max_doc_chars=1000")
    parser.add_argument("--out", help="labels directory (reruns resume in it)")
    parser.add_argument("--labeler", help="labeler name: keyword, openai, hf-classifier, oracle, or one a plugin "
                        "registers (an unknown name lists them)")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="config file, or a preset name from conf/label/ (repeatable; later wins)")
    parser.add_argument("--text-field", help="field holding the text (default: text)")
    parser.add_argument("--segment-words", type=int, help="max words per segment (default: 100)")
    parser.add_argument("--docs-per-unit", type=int, help="records per unit of work (default: 5000)")
    parser.add_argument("--workers", type=int, help="labelling processes (default: 1)")
    parser.add_argument("--num-shards", type=int, help="tasks of an array job (default: 1)")
    parser.add_argument("--shard-index", type=int, help="this task's shard, e.g. $SLURM_ARRAY_TASK_ID")
    parser.add_argument("--strict", action="store_true", default=None, help="stop at the first bad record")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def main(args: argparse.Namespace) -> int:
    """Run ``srp label``."""
    from srp_megatron.config import load_config, resolve_preset
    from srp_megatron.prep.label.stage import LabelConfig, run_label

    inputs = [i for i in args.items if "=" not in i or os.path.exists(i)]
    overrides = [i for i in args.items if i not in inputs]
    values = {k: getattr(args, k) for k in
              ("out", "labeler", "docs_per_unit", "workers", "num_shards", "shard_index", "strict", "progress")}
    values["inputs"] = inputs or None
    if args.text_field is not None:
        values["reader"] = {"text_field": args.text_field}
    if args.segment_words is not None:
        values["segmenter"] = {"max_words": args.segment_words}
    run_label(load_config(LabelConfig, [resolve_preset(p, "label") for p in args.config], overrides, values))
    return 0
