"""The ``srp`` command line: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from srp_megatron import __version__
from srp_megatron.errors import SRPError

# name -> (module, one-line help). Each module defines add_arguments(parser) and main(args) -> int and
# keeps heavy imports (torch, megatron) inside functions, so `srp --help` stays fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "label": (
        "srp_megatron.prep.label.stage",
        "Segment documents (JSONL/Parquet) and label every segment safe/controversial/unsafe.",
    ),
    "render": (
        "srp_megatron.prep.render.stage",
        "Render a labels directory into a Megatron .bin/.idx dataset for one arm (srp, raw, filter, ...).",
    ),
    "demo": (
        "srp_megatron.demo",
        "Run the main job end to end on a small corpus generated on the fly (CPU only).",
    ),
    "pretrain": (
        "srp_megatron.train.driver",
        "Pretrain a megatron-core GPTModel on rendered datasets (CPU, or torchrun on GPUs).",
    ),
    "plan": (
        "srp_megatron.train.plan",
        "Estimate parameters, memory per GPU and tokens/s of a pretraining config on N GPUs.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand attached."""
    parser = argparse.ArgumentParser(
        prog="srp",
        description="Safety Reflection Pretraining for Megatron-Core. Pipeline: label -> render -> pretrain.",
    )
    parser.add_argument("--version", action="version", version=f"srp-megatron {__version__}")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default: INFO).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text + "\n\n" + (module.__doc__ or "").strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        # The positional list that takes key=value overrides, so they may also follow the flags.
        lists = [a.dest for a in p._actions if not a.option_strings and a.nargs == "*"]
        p.set_defaults(_main=module.main, _overrides_dest=lists[-1] if lists else None)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``srp`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    dest = getattr(args, "_overrides_dest", None)
    unknown = [e for e in extra if dest is None or "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        setattr(args, dest, [*(getattr(args, dest) or []), *extra])
    # megatron-core warns at import when TE/Apex are absent; on CPU that is expected, and the driver says so once.
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._main(args) or 0)
    except SRPError as exc:
        print(f"srp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"srp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"srp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
