"""The ``srp render`` stage (usage: ``srp render --help``): a labels directory -> a Megatron ``.bin/.idx``
dataset with per-token span types (format: ``srp_megatron.formats.rendered``).

Documents stream from the labels directory in batches; the arm lays each out as text pieces and reflections
(``arms.py``), all text pieces of a batch are tokenized in one call and the reflections come from the template's
cache (``templates.py``). Files are written under a ``.partial`` name and moved into place when every input
segment and document is accounted for (written or counted as dropped); ``PREFIX.json`` goes last.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
from tqdm import tqdm

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, LabelledDocument, iter_labelled_documents, read_manifest
from srp_megatron.formats.rendered import (
    DATA_SUFFIXES,
    SPAN_DTYPE,
    TOKENIZER_SUFFIX,
    RenderedDatasetWriter,
    RenderMetadata,
    SpanType,
)
from srp_megatron.prep.render.arms import ARMS, Arm, TextPiece
from srp_megatron.prep.render.inputs import ExpectedCounts, expected_counts, select_units
from srp_megatron.prep.render.templates import ReflectionTemplate, TemplateConfig, TemplateKind
from srp_megatron.prep.tokenizer import Tokenizer, TokenizerConfig, TokenizerKind
from srp_megatron.registry import RegistryConfig

logger = logging.getLogger(__name__)

#: Suffix of the files being written (renamed into place when the render is complete).
PARTIAL_SUFFIX = ".partial"
MEGATRON_METADATA = "tokenizer_metadata.json"


@dataclass
class RenderConfig(RegistryConfig):
    """Root config of ``srp render``. Arms with options have a section named after them (``filter:``,
    ``rewrite:``), typed by the config class they registered with (``section(name)``)."""

    REGISTRY = ARMS

    labels_dir: str = ""
    """Labels directory written by ``srp label`` (``segments-*.parquet`` + ``manifest.json``)."""
    out: str = ""
    """Output prefix: writes ``PREFIX.bin/.idx``, ``PREFIX_spans.bin/.idx``, ``PREFIX.json``; ``{shard}`` in it
    becomes the shard index as 5 digits (``data/srp_{shard}`` -> ``data/srp_00003``)."""
    arm: str = "srp"
    """Experiment arm: ``srp``, ``raw``, ``filter``, ``rewrite``, ``tag`` (registry ``ARMS``)."""
    template: TemplateConfig = field(default_factory=TemplateConfig)
    """Reflection template (``paper`` or ``special``) and the controversial mapping."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """Tokenizer directory (Hugging Face or megatron-core) and EOD token."""
    batch_docs: int = 256
    """Documents tokenized together in one batch call (bounds memory; larger is slightly faster)."""
    overwrite: bool = False
    """Replace an existing dataset at ``out``; otherwise an existing one is an error."""
    allow_incomplete: bool = False
    """Render a labels directory whose manifest says labelling is not complete."""
    num_shards: int = 1
    """Tasks of an array job sharing the render, each writing its own prefix (label unit u goes to shard
    u % num_shards); 1 renders the whole labels directory."""
    shard_index: int = 0
    """This task's shard, 0 <= shard_index < num_shards (e.g. ``$SLURM_ARRAY_TASK_ID``)."""
    progress: bool = True
    """Show a progress bar (documents/s, tokens/s) on stderr."""

    def __post_init__(self) -> None:
        if not self.labels_dir:
            raise ValueError("labels_dir is empty: give the labels directory (LABELS_DIR)")
        if not self.out:
            raise ValueError("out is empty: give the output prefix (--out PREFIX)")
        if not self.tokenizer.path:
            raise ValueError("tokenizer.path is empty: give the tokenizer directory (--tokenizer PATH)")
        if self.arm not in ARMS:
            raise ValueError(f"arm={self.arm!r} is unknown: use one of {', '.join(ARMS.names())}")
        if self.batch_docs < 1:
            raise ValueError(f"batch_docs={self.batch_docs} must be >= 1 (e.g. 256)")
        if self.num_shards < 1:
            raise ValueError(f"num_shards={self.num_shards} must be >= 1 (1: no sharding)")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"shard_index={self.shard_index}: must be in [0, num_shards={self.num_shards}) (give --shard-index)"
            )

    @property
    def prefix(self) -> str:
        """The output prefix: ``out`` with ``{shard}`` replaced by the 5-digit shard index."""
        return self.out.replace("{shard}", f"{self.shard_index:05d}")


@dataclass
class _Totals:
    """Running counts of what was read and written."""

    documents_in: int = 0
    segments_in: int = 0
    documents: int = 0
    reflections: int = 0
    labels: Counter = field(default_factory=Counter)
    """Label histogram of the segments written."""
    span_tokens: np.ndarray = field(default_factory=lambda: np.zeros(len(SpanType), dtype=np.int64))

    @property
    def segments(self) -> int:
        """Segments written."""
        return sum(self.labels.values())


def _batches(docs: Iterator[LabelledDocument], size: int) -> Iterator[list[LabelledDocument]]:
    """Consecutive lists of ``size`` documents (the last may be shorter)."""
    while batch := list(islice(docs, size)):
        yield batch


def _check_output(cfg: RenderConfig) -> None:
    """Refuse to replace an existing dataset unless ``overwrite``."""
    existing = [p for s in (*DATA_SUFFIXES, ".json", TOKENIZER_SUFFIX) if os.path.exists(p := cfg.prefix + s)]
    if existing and not cfg.overwrite:
        raise SRPError(f"output '{existing[0]}' exists: choose another --out or set overwrite=true")


def _prepare_tokenizer(cfg: RenderConfig) -> tuple[Tokenizer, ReflectionTemplate, dict]:
    """Load the tokenizer, build the template (extending the tokenizer for ``special``), return its identity."""
    try:
        tokenizer = Tokenizer(cfg.tokenizer)
    except ValueError as exc:
        raise SRPError(f"tokenizer: {exc}") from None
    template = ReflectionTemplate(cfg.template, tokenizer)
    if cfg.template.kind != TemplateKind.special:
        return tokenizer, template, tokenizer.identity
    tmp_dir = cfg.prefix + PARTIAL_SUFFIX + TOKENIZER_SUFFIX
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tokenizer.save(tmp_dir)
    if tokenizer.kind == TokenizerKind.megatron:
        # The source's metadata, not a fresh write_metadata(): its default model_type differs across
        # megatron-core versions ("default" in 0.16, "default-text" later), a copy loads wherever the source did.
        shutil.copy(os.path.join(cfg.tokenizer.path, MEGATRON_METADATA), tmp_dir)
    # The identity is that of the saved tokenizer, as the dataset will load it for its consistency check.
    reloaded = Tokenizer(TokenizerConfig(path=tmp_dir, kind=tokenizer.kind, eod_token=cfg.tokenizer.eod_token))
    identity = {**reloaded.identity, "path": os.path.abspath(cfg.prefix + TOKENIZER_SUFFIX)}
    return tokenizer, template, identity


def _render_batch(
    docs: Sequence[LabelledDocument],
    arm: Arm,
    template: ReflectionTemplate,
    tokenizer: Tokenizer,
    writer: RenderedDatasetWriter,
    totals: _Totals,
) -> None:
    """Lay out a batch, tokenize all its text pieces in one call, write each document."""
    arm.prepare(docs)
    layouts = []
    texts: list[str] = []
    for doc in docs:
        totals.documents_in += 1
        totals.segments_in += len(doc.segments)
        pieces = arm.layout(doc)
        if pieces is not None:
            layouts.append(pieces)
            texts.extend(p.text for p in pieces if type(p) is TextPiece)
    encoded = iter(tokenizer.encode_batch(texts))
    # The whole batch goes into flat lists and becomes two arrays at once: per-document numpy calls cost
    # more than the tokenization of short documents.
    flat: list[int] = []
    run_spans: list[int] = []
    run_lengths: list[int] = []
    doc_ends: list[int] = []
    labels: list[Label] = []
    for pieces in layouts:
        for p in pieces:
            if type(p) is TextPiece:
                ids = next(encoded)
                flat += ids
                run_spans.append(p.span)
                run_lengths.append(len(ids))
                labels.append(p.label)
            else:
                for ids, span in template.pieces(p.label, p.space_after):
                    flat += ids
                    run_spans.append(span)
                    run_lengths.append(len(ids))
                totals.reflections += 1
        flat.append(tokenizer.eod)
        run_spans.append(SpanType.text)
        run_lengths.append(1)
        doc_ends.append(len(flat))
    tokens = np.array(flat, dtype=writer.token_dtype)
    spans = np.repeat(np.array(run_spans, dtype=SPAN_DTYPE), run_lengths)
    start = 0
    for end in doc_ends:
        writer.add_document(tokens[start:end], spans[start:end])
        start = end
    totals.documents += len(doc_ends)
    totals.labels.update(labels)
    totals.span_tokens += np.bincount(spans, minlength=len(SpanType))


def _write(
    cfg: RenderConfig, arm: Arm, template: ReflectionTemplate, tokenizer: Tokenizer, units: list[int],
    total: int | None,
) -> _Totals:
    """Stream the selected units of the labels directory through the arm into the partial dataset files."""
    totals = _Totals()
    writer = RenderedDatasetWriter(cfg.prefix + PARTIAL_SUFFIX, tokenizer.vocab_size)
    start = time.monotonic()
    with tqdm(total=total, unit="doc", desc="render", disable=not cfg.progress, dynamic_ncols=True) as bar:
        for batch in _batches(iter_labelled_documents(cfg.labels_dir, units=units), cfg.batch_docs):
            _render_batch(batch, arm, template, tokenizer, writer, totals)
            bar.update(len(batch))
            bar.set_postfix_str(f"{writer.tokens / max(time.monotonic() - start, 1e-9):,.0f} tok/s", refresh=False)
    writer.finalize()
    return totals


def _check_counts(cfg: RenderConfig, expected: ExpectedCounts | None, totals: _Totals, arm: Arm) -> None:
    """Every input segment and document is either written or counted as dropped."""
    dropped_segments = sum(v for k, v in arm.dropped.items() if k.startswith("segments_"))
    dropped_docs = sum(v for k, v in arm.dropped.items() if k.startswith("documents_"))
    if totals.segments_in != totals.segments + dropped_segments:
        raise RuntimeError(f"segment accounting: {totals.segments_in} in != {totals.segments} + {dict(arm.dropped)}")
    if totals.documents_in != totals.documents + dropped_docs:
        raise RuntimeError(
            f"document accounting: {totals.documents_in} in != {totals.documents} + {dict(arm.dropped)}"
        )
    if totals.documents == 0:
        raise SRPError(
            f"arm {cfg.arm} left no documents of {totals.documents_in} in '{cfg.labels_dir}' "
            f"(dropped: {dict(arm.dropped)}): nothing was written"
        )
    if expected is not None and expected.segments != totals.segments_in:
        raise SRPError(
            f"{expected.where}: {expected.segments} segments listed, but the Parquet files hold "
            f"{totals.segments_in}: the labels directory is damaged; nothing was written"
        )


def _publish(cfg: RenderConfig, meta: RenderMetadata, special: bool) -> None:
    """Move the partial files into place; PREFIX.json goes last, so only a finished render looks valid."""
    partial = cfg.prefix + PARTIAL_SUFFIX
    if os.path.exists(cfg.prefix + ".json"):
        os.remove(cfg.prefix + ".json")  # an interrupted overwrite must not pair old metadata with new data
    for suffix in DATA_SUFFIXES:
        os.replace(partial + suffix, cfg.prefix + suffix)
    # A tokenizer left by an earlier special render would not belong to this dataset.
    shutil.rmtree(cfg.prefix + TOKENIZER_SUFFIX, ignore_errors=True)
    if special:
        os.replace(partial + TOKENIZER_SUFFIX, cfg.prefix + TOKENIZER_SUFFIX)
    meta.save(cfg.prefix)


def _remove_partial(prefix: str) -> None:
    partial = prefix + PARTIAL_SUFFIX
    for suffix in DATA_SUFFIXES:
        if os.path.exists(partial + suffix):
            os.remove(partial + suffix)
    shutil.rmtree(partial + TOKENIZER_SUFFIX, ignore_errors=True)


def render(cfg: RenderConfig) -> RenderMetadata:
    """Render ``cfg.labels_dir`` into the dataset ``cfg.prefix``; returns what ``PREFIX.json`` records."""
    manifest = read_manifest(cfg.labels_dir, cfg.allow_incomplete)
    _check_output(cfg)
    units = select_units(cfg.labels_dir, manifest, cfg.num_shards, cfg.shard_index)
    expected = expected_counts(cfg.labels_dir, manifest, units, cfg.num_shards)
    special = cfg.template.kind == TemplateKind.special
    try:
        tokenizer, template, identity = _prepare_tokenizer(cfg)
        arm = ARMS.get(cfg.arm)(template, cfg.section(cfg.arm))
        try:
            totals = _write(cfg, arm, template, tokenizer, units, expected.docs_ok if expected else None)
        finally:
            arm.close()
        _check_counts(cfg, expected, totals, arm)
        meta = _metadata(cfg, arm, template, identity, totals, units)
        _publish(cfg, meta, special)
    except BaseException:
        _remove_partial(cfg.prefix)
        raise
    logger.info(
        "rendered %d documents, %d tokens, %d reflections (arm %s, template %s) -> %s; dropped %s",
        meta.documents,
        meta.tokens,
        meta.reflections,
        meta.arm,
        meta.template,
        cfg.prefix,
        dict(meta.dropped) or "none",
    )
    return meta


def _metadata(
    cfg: RenderConfig, arm: Arm, template: ReflectionTemplate, identity: dict, totals: _Totals, units: list[int]
) -> RenderMetadata:
    options = {"arm": arm.options(), "template": template.options(), "eod_token": cfg.tokenizer.eod_token}
    if cfg.num_shards > 1:  # unsharded metadata stays as it always was
        options["shard"] = {"num_shards": cfg.num_shards, "shard_index": cfg.shard_index, "units": units}
    return RenderMetadata(
        arm=cfg.arm,
        template=cfg.template.kind.value,
        tokenizer=identity,
        documents=totals.documents,
        tokens=int(totals.span_tokens.sum()),
        reflections=totals.reflections,
        segments=totals.segments,
        labels={lab.value: n for lab, n in sorted(totals.labels.items())},
        span_tokens={s.name: int(totals.span_tokens[s]) for s in SpanType},
        dropped=dict(sorted(arm.dropped.items())),
        reflection_token_ids=list(template.reflection_token_ids),
        options=options,
        source=os.path.abspath(cfg.labels_dir),
        documents_in=totals.documents_in,
        segments_in=totals.segments_in,
        arm_counts=dict(sorted(arm.counts.items())),
    )
