"""The rendered-dataset format: the contract between ``srp render`` and ``ReflectionGPTDataset``.

A rendered dataset ``PREFIX`` is three things:

- ``PREFIX.bin/.idx``: token ids, a megatron-core ``IndexedDataset`` (one sequence per document,
  EOD appended), exactly what Megatron-LM's ``preprocess_data.py --append-eod`` writes;
- ``PREFIX_spans.bin/.idx``: an ``IndexedDataset`` of ``uint8`` span-type codes (:class:`SpanType`),
  one per token, with identical sequence lengths and document indices;
- ``PREFIX.json``: :class:`RenderMetadata` (arm, template, tokenizer identity, counts), written last;

and, for the ``special`` template, the extended tokenizer ``PREFIX_tokenizer/``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from array import array
from dataclasses import dataclass, field

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from srp_megatron.formats.atomic import write_json_atomic


class SpanType(enum.IntEnum):
    """Role of a token in a rendered corpus (stored as ``uint8``)."""

    text = 0
    """Corpus text of a safe segment, and the EOD token."""
    reflection = 1
    """Content of a reflection: the verdict and categories (``Safe``, ``Unsafe: Violent``)."""
    reflection_marker = 2
    """The reflection's delimiters (``<think>``, ``</think>``, or the dedicated special tokens)."""
    unsafe_text = 3
    """Corpus text of a segment labelled unsafe (or controversial under the strict mapping)."""

    @classmethod
    def from_name(cls, name: str) -> SpanType:
        """Parse a lower-case span-type name (``text``, ``reflection``, ``reflection_marker``, ``unsafe_text``)."""
        try:
            return cls[name.lower()]
        except KeyError:
            known = ", ".join(m.name for m in cls)
            raise ValueError(f"unknown span type '{name}' (known: {known})") from None


SPAN_DTYPE = np.uint8
SPANS_SUFFIX = "_spans"
FORMAT_VERSION = 1
#: Files of a rendered dataset, as suffixes of PREFIX (PREFIX.json is written last, separately).
DATA_SUFFIXES = (".bin", ".idx", "_spans.bin", "_spans.idx")
#: The extended tokenizer of a ``special``-template dataset: ``PREFIX_tokenizer/``.
TOKENIZER_SUFFIX = "_tokenizer"


def dtype_for_vocab(vocab_size: int) -> type:
    """The index dtype megatron's ``preprocess_data.py`` picks for a vocabulary size."""
    return np.uint16 if vocab_size < 65500 else np.int32


def spans_prefix(prefix: str) -> str:
    """Path prefix of the span-type dataset that belongs to the token dataset ``prefix``."""
    return prefix + SPANS_SUFFIX


def metadata_path(prefix: str) -> str:
    """Path of the ``PREFIX.json`` metadata file."""
    return prefix + ".json"


@dataclass
class RenderMetadata:
    """Contents of ``PREFIX.json``."""

    arm: str
    template: str
    tokenizer: dict
    """Tokenizer identity: ``kind``, ``path``, ``sha256`` (content hash), ``vocab_size``, ``eod``."""
    documents: int = 0
    tokens: int = 0
    reflections: int = 0
    segments: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    """Segment label histogram (``safe``/``controversial``/``unsafe``) of the segments written."""
    span_tokens: dict[str, int] = field(default_factory=dict)
    """Tokens per span type name."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Segments or documents left out by the arm, by reason."""
    reflection_token_ids: list[int] = field(default_factory=list)
    """Ids of the dedicated reflection tokens (``special`` template), else empty."""
    options: dict = field(default_factory=dict)
    """Arm and template options the dataset was rendered with."""
    source: str = ""
    """Labels directory the dataset was rendered from."""
    documents_in: int = 0
    """Documents read from the labels directory (``documents`` written + documents counted in ``dropped``)."""
    segments_in: int = 0
    """Segments read (``segments`` written + segments counted in ``dropped``)."""
    arm_counts: dict[str, int] = field(default_factory=dict)
    """Other outcomes of the arm, e.g. ``segments_rewritten``."""
    format_version: int = FORMAT_VERSION

    def save(self, prefix: str) -> None:
        """Write ``PREFIX.json`` atomically."""
        write_json_atomic(dataclasses.asdict(self), metadata_path(prefix), ensure_ascii=True)

    @classmethod
    def load(cls, prefix: str) -> RenderMetadata:
        """Read ``PREFIX.json``; a missing file or unknown key names the file."""
        path = metadata_path(prefix)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"rendered-dataset metadata '{path}' not found (was '{prefix}' made by srp render?)"
            )
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}")
        return cls(**data)


def _compact_index(builder) -> None:
    """Keep an ``IndexedDatasetBuilder``'s per-document index in 8-byte arrays instead of lists of Python ints.

    The index is the only render state that grows with the corpus: as lists it costs ~72 bytes per document
    and builder, as ``array('q')`` 16. The builder only appends, extends, iterates and converts them with
    ``numpy.array``, which arrays support (megatron-core 0.16-0.19); other types are left alone.
    """
    if isinstance(builder.sequence_lengths, list) and isinstance(builder.document_indices, list):
        builder.sequence_lengths = array("q", builder.sequence_lengths)
        builder.document_indices = array("q", builder.document_indices)


class RenderedDatasetWriter:
    """Writes tokens and span types of documents into the two ``IndexedDataset`` files of ``PREFIX``."""

    def __init__(self, prefix: str, vocab_size: int):
        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        self.prefix = prefix
        self.token_dtype = dtype_for_vocab(vocab_size)
        self._tokens = IndexedDatasetBuilder(prefix + ".bin", dtype=self.token_dtype)
        self._spans = IndexedDatasetBuilder(spans_prefix(prefix) + ".bin", dtype=SPAN_DTYPE)
        for builder in (self._tokens, self._spans):
            _compact_index(builder)
        self.documents = 0
        self.tokens = 0

    def add_document(self, tokens: np.ndarray, spans: np.ndarray) -> None:
        """Append one document (EOD already included in ``tokens``)."""
        if len(tokens) != len(spans):
            raise ValueError(f"document {self.documents}: {len(tokens)} tokens but {len(spans)} span types")
        n = len(tokens)
        self._tokens.add_document(tokens, [n])
        self._spans.add_document(spans, [n])
        self.documents += 1
        self.tokens += n

    def finalize(self) -> None:
        """Write both ``.idx`` files."""
        self._tokens.finalize(self.prefix + ".idx")
        self._spans.finalize(spans_prefix(self.prefix) + ".idx")
