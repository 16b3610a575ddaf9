"""The render stage: a labels directory -> a Megatron ``.bin/.idx`` dataset with per-token span types.

Usage::

    srp render LABELS_DIR --tokenizer PATH --arm srp --out PREFIX [--template paper|special]
    srp render LABELS_DIR --config filter_document --tokenizer PATH --out PREFIX filter.drop=[unsafe]
    srp render LABELS_DIR --tokenizer PATH --out data/srp_{shard} --num-shards 16 --shard-index $SLURM_ARRAY_TASK_ID

Writes ``PREFIX.bin/.idx`` (tokens, EOD after each document), ``PREFIX_spans.bin/.idx`` (a span type per
token: 0 text, 1 reflection, 2 reflection_marker, 3 unsafe_text), ``PREFIX.json`` (arm, template,
tokenizer identity, counts) and, for the ``special`` template, the extended tokenizer ``PREFIX_tokenizer/``.
Presets: ``conf/render/*.yaml``; any option can be set as ``key=value``. With ``--num-shards N --shard-index I``
the task renders only the label units ``u % N == I`` (memory grows with the documents of one prefix).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``srp render``."""
    parser.add_argument("labels_dir", metavar="LABELS_DIR", help="labels directory written by srp label")
    parser.add_argument("--tokenizer", metavar="PATH", help="tokenizer directory (Hugging Face or megatron-core)")
    parser.add_argument("--tokenizer-kind", help="auto (default), hf or megatron")
    parser.add_argument("--arm", help="experiment arm: srp (default), raw, filter, rewrite, tag, or one a plugin "
                        "registers")
    parser.add_argument("--out", metavar="PREFIX", help="output prefix: PREFIX.bin/.idx, PREFIX_spans.*, PREFIX.json; "
                        "{shard} in it becomes the 5-digit shard index")
    parser.add_argument("--template", help="reflection template: paper (default) or special")
    parser.add_argument("--num-shards", type=int, help="tasks of an array job, one prefix each (default: 1)")
    parser.add_argument("--shard-index", type=int, help="this task's shard, e.g. $SLURM_ARRAY_TASK_ID")
    parser.add_argument("-c", "--config", action="append", default=[], metavar="YAML",
                        help="preset in conf/render (e.g. filter_document) or a YAML file; repeatable, later wins")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. filter.level=document")


def main(args: argparse.Namespace) -> int:
    """Entry point of ``srp render``."""
    from srp_megatron.config import load_config, resolve_preset
    from srp_megatron.formats.rendered import spans_prefix
    from srp_megatron.prep.render.stage import RenderConfig, render

    values: dict = {k: getattr(args, k) for k in ("labels_dir", "out", "arm", "num_shards", "shard_index")}
    tokenizer = {"path": args.tokenizer, "kind": args.tokenizer_kind}
    values["tokenizer"] = {k: v for k, v in tokenizer.items() if v is not None} or None
    values["template"] = {"kind": args.template} if args.template else None
    paths = [resolve_preset(p, "render") for p in args.config]
    cfg = load_config(RenderConfig, paths, args.overrides, values)
    meta = render(cfg)
    print(
        f"srp render: {meta.documents} documents, {meta.tokens} tokens, {meta.reflections} reflections "
        f"-> {cfg.prefix}.bin/.idx, {spans_prefix(cfg.prefix)}.bin/.idx, {cfg.prefix}.json"
    )
    return 0
