"""The ``srp label`` stage (usage: ``srp label --help``): read the input stream in units of work, segment and
label each unit's documents (in this process or a pool of workers) and write the unit files and the manifest.

A unit's results are written when the unit is complete (``units.py``; file names and manifest:
``srp_megatron.formats.labels``); a rerun with the same settings skips the units already written.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.util
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tqdm import tqdm

from srp_megatron.config import to_dict
from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import LabelledDocument, done_units, write_manifest
from srp_megatron.prep.documents import (
    BadRecord,
    Document,
    RawRecord,
    ReaderConfig,
    RecordStream,
    parse_record,
    unit_batches,
)
from srp_megatron.prep.label.labelers import LABELERS, Labeler, LabelFailure, SegmentedDocument
from srp_megatron.prep.label.labelers.oracle import OracleLabeler, Presegmented
from srp_megatron.prep.label.units import DocResult, UnitWriter
from srp_megatron.prep.segment import Segmenter, SegmenterConfig
from srp_megatron.registry import RegistryConfig, section_name

logger = logging.getLogger(__name__)


@dataclass
class LabelConfig(RegistryConfig):
    """Root config of ``srp label``. Each labeler's options are a section named after it (``openai:``,
    ``hf_classifier:``, '-' read as '_'), typed by the config class it registered with (``section(name)``)."""

    REGISTRY = LABELERS

    inputs: list[str] = field(default_factory=list)
    """JSONL (.jsonl, .jsonl.gz, .jsonl.zst, .json.gz) and Parquet files, directories of them, or globs."""
    out: str = ""
    """Labels directory to write (created; reruns resume in it)."""
    labeler: str = ""
    """Registered labeler: ``keyword`` (heuristic), ``openai``, ``hf-classifier``, ``oracle``."""
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    """Input fields and size limits."""
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    """Segment size and sentence boundary rule."""
    docs_per_unit: int = 5000
    """Records per unit of work (the resume granularity; a unit's segments are held in memory)."""
    batch_docs: int = 64
    """Documents per labeler call (and per task sent to a worker process)."""
    workers: int = 1
    """Labelling processes on this machine (1: label in the main process)."""
    num_shards: int = 1
    """Tasks of an array job sharing the work (unit u belongs to shard u % num_shards)."""
    shard_index: int = 0
    """This task's shard, 0 <= shard_index < num_shards."""
    strict: bool = False
    """Stop at the first bad record or failed file (naming file and line) instead of skipping and counting."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("inputs is empty: give input files or directories (srp label INPUT... --out DIR)")
        if not self.out:
            raise ValueError("out is empty: give the labels directory with --out DIR")
        if self.labeler not in LABELERS:
            raise ValueError(f"labeler={self.labeler!r}: give --labeler NAME, one of {', '.join(LABELERS.names())}"
                             " (each has a config section of its name, '-' read as '_')")
        for name in ("docs_per_unit", "batch_docs", "workers", "num_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be >= 1")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index={self.shard_index}: must be in [0, num_shards={self.num_shards})")


def build_labeler(cfg: LabelConfig) -> Labeler:
    """The configured labeler, constructed from its section of the config (None when it has no options)."""
    return LABELERS.get(cfg.labeler)(cfg.section(cfg.labeler))


def output_config(cfg: LabelConfig) -> dict:
    """The output-determining settings, stored and compared on resume: no workers, shard layout or a labeler
    section's ``runtime_fields`` (class attribute naming knobs, like concurrency, that keep labels). Sections
    hold no secrets (the openai labeler reads its key from an environment variable)."""
    full, options = to_dict(cfg), cfg.section(cfg.labeler)
    config = {k: full[k] for k in ("inputs", "labeler", "reader", "segmenter", "docs_per_unit")}
    if options is not None:
        runtime = getattr(options, "runtime_fields", ())  # a section's knobs that cannot change labels
        config[section_name(cfg.labeler)] = {k: v for k, v in to_dict(options).items() if k not in runtime}
    return config


class _Worker:
    """Parses, segments and labels batches of raw records (in the main process or a pool worker)."""

    def __init__(self, cfg: LabelConfig):
        self.reader = cfg.reader
        self.segmenter = Segmenter(cfg.segmenter)
        self.labeler = build_labeler(cfg)
        self.oracle = self.labeler if isinstance(self.labeler, OracleLabeler) else None

    def process(self, item: tuple[int, list[RawRecord]]) -> tuple[int, str, list[DocResult], dict[str, int]]:
        """``(unit, labeler identity, results in record order, labeler counters of the batch)`` for one batch."""
        unit, records = item
        results: list[DocResult] = []
        pending: list[tuple[DocResult, SegmentedDocument, list[str | None]]] = []
        before = self.labeler.stats()  # counters are per process: the batch's share travels with its results
        text_from_row = self.oracle.text_from_row if self.oracle else None
        for rec in records:
            doc = parse_record(rec, self.reader, text_from_row)
            if isinstance(doc, BadRecord):
                results.append(DocResult(doc.doc_index, doc.location, reason=doc.reason, detail=doc.detail))
                continue
            results.append(res := DocResult(doc.doc_index, doc.location, chars=len(doc.text)))
            split = self._split(doc)
            if isinstance(split, LabelFailure):
                res.reason, res.detail = split.reason, split.detail
            else:
                pending.append((res, SegmentedDocument(doc.doc_id, split[0], doc.row), split[1]))
        if pending:
            labels = self.labeler.label_documents([p[1] for p in pending])
            for (res, sdoc, rewrites), lab in zip(pending, labels, strict=True):  # one result per document
                if isinstance(lab, LabelFailure):
                    res.reason, res.detail = lab.reason, lab.detail
                elif len(lab) != len(sdoc.segments):
                    raise RuntimeError(f"{self.labeler.identity}: {len(lab)} labels, {len(sdoc.segments)} segments")
                else:
                    res.doc = LabelledDocument(res.doc_index, sdoc.doc_id, sdoc.segments, list(lab), rewrites)
        stats = {k: n - before.get(k, 0) for k, n in self.labeler.stats().items() if n != before.get(k, 0)}
        return unit, self.labeler.identity, results, stats

    def _split(self, doc: Document) -> tuple[list[str], list[str | None]] | LabelFailure:
        if self.oracle is not None:
            parsed = self.oracle.presegment(doc.row, doc.text)
            if parsed is not None:  # the row brings its own segmentation (or a reason it cannot)
                return (parsed.segments, parsed.rewrites) if isinstance(parsed, Presegmented) else parsed
        segments = self.segmenter.split(doc.text)
        return segments, [None] * len(segments)

    def close(self) -> None:
        """Release the labeler."""
        self.labeler.close()


_POOL_WORKER: _Worker | None = None  # one per pool process, built by _init_pool_worker


def _init_pool_worker(cfg: LabelConfig) -> None:
    global _POOL_WORKER
    _POOL_WORKER = _Worker(cfg)
    multiprocessing.util.Finalize(_POOL_WORKER, _POOL_WORKER.close, exitpriority=10)


def _pool_process(item: tuple[int, list[RawRecord]]) -> tuple[int, str, list[DocResult], dict[str, int]]:
    return _POOL_WORKER.process(item)


@contextlib.contextmanager
def _batch_labeller(cfg: LabelConfig) -> Iterator[Callable[[Iterator], Iterator]]:
    """A function mapping batches to results in order, in-process (workers=1) or over a process pool."""
    if cfg.workers == 1:
        worker = _Worker(cfg)
        try:
            yield lambda batches: map(worker.process, batches)
        finally:
            worker.close()
        return

    # spawn: safe with threads, CUDA and HTTP clients in the parent
    with multiprocessing.get_context("spawn").Pool(cfg.workers, _init_pool_worker, (cfg,)) as pool:

        def ordered(batches: Iterator) -> Iterator:
            """Results of ``batches`` in order."""
            window: deque = deque()  # at most 2 batches per worker in flight: memory stays bounded
            failure = None
            try:
                for batch in batches:
                    window.append(pool.apply_async(_pool_process, (batch,)))
                    if len(window) >= 2 * cfg.workers:
                        yield window.popleft().get()
            except SRPError as exc:  # --strict stopped at a bad file: results of the records before it first
                failure = exc
            while window:
                yield window.popleft().get()
            if failure is not None:
                raise failure

        yield ordered
        pool.close()
        pool.join()


def run_label(cfg: LabelConfig) -> dict:
    """Label this shard's unfinished units, then write ``manifest.json``; returns the manifest."""
    os.makedirs(cfg.out, exist_ok=True)
    config = output_config(cfg)
    done = set(done_units(cfg.out, config))
    stream = RecordStream(
        cfg.inputs, cfg.reader, cfg.docs_per_unit,
        lambda u: u % cfg.num_shards == cfg.shard_index and u not in done, cfg.strict,
    )
    writer = UnitWriter(cfg.out, config, cfg.strict)
    start, chars = time.monotonic(), 0
    with tqdm(desc="label", unit="doc", disable=not cfg.progress) as bar, _batch_labeller(cfg) as label:
        for unit, identity, results, labeler_stats in label(unit_batches(stream, cfg.docs_per_unit, cfg.batch_docs)):
            writer.add(unit, identity, results, labeler_stats)
            chars += sum(r.chars for r in results)
            bar.update(len(results))
            bar.set_postfix_str(f"{chars / 4 / max(time.monotonic() - start, 1e-9):,.0f} tok/s", refresh=False)
        writer.flush()
    manifest = write_manifest(cfg.out, config, stream.stats, cfg.docs_per_unit, cfg.labeler, cfg.shard_index,
                              cfg.num_shards)
    logger.info("%s: %d/%d units done; docs in %d, ok %d, skipped %s; segments %s", cfg.out, manifest["units_done"],
                manifest["units"], manifest["docs_in"], manifest["docs_ok"], manifest["docs_skipped"],
                manifest["labels"])
    return manifest
