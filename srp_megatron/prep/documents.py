"""Input documents for ``srp label``: streamed JSONL (plain, .gz, .zst) and Parquet readers with bad-input counting.

The inputs form one *stream*: files in sorted order (directories expanded recursively), each file's records
in order. Every record (good or bad) gets ``doc_index``, its ordinal in the whole stream, so that units of
work and shards are fixed slices of the stream. The reader hands out :class:`RawRecord` (undecoded JSONL line
bytes or a Parquet row) only for the records the caller wants, skipping the others without parsing them;
:func:`parse_record` then turns a raw record into a :class:`Document` or a :class:`BadRecord` with a reason.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import logging
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from srp_megatron.errors import SRPError

logger = logging.getLogger(__name__)

#: File name endings read as input (others inside a directory are ignored).
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
_READ_CHUNK = 1 << 20


@dataclass
class ReaderConfig:
    """Which fields hold the text and id, and limits on record size."""

    text_field: str = "text"
    """Field (JSON key or Parquet column) holding the document text."""
    id_field: str = "id"
    """Field holding the document id; records without one get ``<file>:<line>``."""
    max_doc_chars: int = 1_000_000
    """Documents with longer text are skipped as ``too_large`` (bounds the memory of one unit of work)."""
    max_record_bytes: int = 16 * 1024 * 1024
    """JSONL lines longer than this are skipped as ``too_large`` without being held in memory."""
    parquet_batch_rows: int = 1024
    """Rows decoded at a time from a Parquet row group."""

    def __post_init__(self):
        for name in ("max_doc_chars", "max_record_bytes", "parquet_batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"reader.{name}={getattr(self, name)}: must be >= 1")
        if not self.text_field:
            raise ValueError("reader.text_field is empty: name the field holding the text (FineWeb: 'text')")


@dataclass
class RawRecord:
    """One record of the stream before decoding: JSONL line bytes or a Parquet row."""

    doc_index: int
    source: str
    line: int
    """1-based line number (JSONL) or row number (Parquet) in ``source``."""
    payload: bytes | dict | None
    reason: str | None = None
    """Set when the record is already known to be bad (``too_large`` line); ``payload`` is then None."""

    @property
    def location(self) -> str:
        """``file:line`` for messages and default ids."""
        return f"{self.source}:{self.line}"


@dataclass
class Document:
    """A good input document."""

    doc_index: int
    doc_id: str
    text: str
    row: dict
    """The record's other fields (the text field removed)."""
    location: str


@dataclass
class BadRecord:
    """A record that is skipped, with the reason it is counted under."""

    doc_index: int
    location: str
    reason: str
    detail: str = ""


@dataclass
class StreamStats:
    """What the reader saw: records, files, and unreadable or truncated files by reason."""

    records: int = 0
    files: int = 0
    blank_lines: int = 0
    files_skipped: Counter = field(default_factory=Counter)
    file_errors: list[dict] = field(default_factory=list)
    """One entry per failed file: ``file``, ``reason``, ``detail``, ``records_read`` (kept before the failure)."""


def parse_record(
    raw: RawRecord, config: ReaderConfig, text_from_row: Callable[[dict], str | None] | None = None
) -> Document | BadRecord:
    """Decode and check one record; ``text_from_row`` supplies the text of rows without a text field (oracle)."""

    def bad(reason: str, detail: str = "") -> BadRecord:
        """This record, skipped for ``reason``."""
        return BadRecord(raw.doc_index, raw.location, reason, detail)

    if raw.reason is not None:
        return bad(raw.reason)
    row = raw.payload
    if isinstance(row, bytes):
        try:
            row = json.loads(row.decode("utf-8"))
        except UnicodeDecodeError as exc:
            return bad("invalid_utf8", str(exc))
        except json.JSONDecodeError as exc:
            return bad("malformed_json", str(exc))
        if not isinstance(row, dict):
            return bad("not_an_object", f"the line holds a JSON {type(row).__name__}, not an object")
    text = row.pop(config.text_field, None)
    if text is None and text_from_row is not None:
        text = text_from_row(row)
    if text is None:
        return bad("missing_text", f"no field '{config.text_field}' (or it is null)")
    if not isinstance(text, str):
        return bad("non_string_text", f"field '{config.text_field}' is a {type(text).__name__}")
    if not text.strip():
        return bad("empty_text", f"field '{config.text_field}' is empty or whitespace")
    if len(text) > config.max_doc_chars:
        return bad("too_large", f"{len(text)} characters > reader.max_doc_chars={config.max_doc_chars}")
    doc_id = row.get(config.id_field)
    doc_id = str(doc_id) if isinstance(doc_id, str | int) and not isinstance(doc_id, bool) else raw.location
    try:  # JSON escapes can smuggle in lone surrogates, which no UTF-8 writer accepts
        text.encode("utf-8")
        doc_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        return bad("invalid_utf8", f"lone surrogate in the text or id: {exc}")
    return Document(raw.doc_index, doc_id, text, row, raw.location)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Input files in stream order: globs expanded, directories searched recursively, all sorted."""
    files: set[str] = set()
    for item in inputs:
        paths = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not paths:
            raise SRPError(f"input '{item}' matches no file")
        for path in paths:
            if os.path.isdir(path):
                found = [
                    os.path.join(root, name)
                    for root, _, names in os.walk(path)
                    for name in names
                    if name.endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)
                ]
                if not found:
                    suffixes = ", ".join(JSONL_SUFFIXES + PARQUET_SUFFIXES)
                    raise SRPError(f"input directory '{path}' has no input files ({suffixes})")
                files.update(found)
            elif os.path.exists(path):
                files.add(path)
            else:
                raise SRPError(f"input '{path}' does not exist")
    return sorted(files)


class _ZstdReader(io.RawIOBase):
    """Decompresses a (multi-frame) zstd file; a file that ends inside a frame raises ``EOFError``.

    zstandard's ``stream_reader`` stops silently at a truncated frame, which would lose data unnoticed.
    """

    def __init__(self, path: str):
        import zstandard

        self._file = open(path, "rb")  # noqa: SIM115 (closed in close())
        self._dctx = zstandard.ZstdDecompressor()
        self._frame = None
        self._out = memoryview(b"")

    def readable(self) -> bool:
        """Always readable."""
        return True

    def readinto(self, buf) -> int:
        """Fill ``buf`` with decompressed bytes; 0 at the end of the file."""
        while not self._out:
            data = self._file.read(_READ_CHUNK)
            if not data:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("zstd file ends inside a frame (truncated)")
                return 0
            self._out = memoryview(self._decompress(data))
        n = min(len(buf), len(self._out))
        buf[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        parts = []
        while data:
            if self._frame is None or self._frame.eof:
                self._frame = self._dctx.decompressobj()
            parts.append(self._frame.decompress(data))
            data = self._frame.unused_data if self._frame.eof else b""
        return b"".join(parts)

    def close(self) -> None:
        """Close the underlying file."""
        self._file.close()
        super().close()


def _open_binary(path: str) -> io.BufferedIOBase:
    """Open a JSONL file for reading lines of bytes, decompressing by suffix."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith((".zst", ".zstd")):
        return io.BufferedReader(_ZstdReader(path), _READ_CHUNK)
    return open(path, "rb")  # noqa: SIM115 (the caller closes it)


def _file_error_reason(exc: BaseException) -> str:
    """``unreadable`` (cannot open) or ``corrupt`` (decompression or format error, truncation)."""
    return "unreadable" if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) else "corrupt"


class RecordStream:
    """Iterates the raw records of the input stream that ``want_unit`` selects.

    ``want_unit(unit)`` decides per unit of ``docs_per_unit`` consecutive records; records of other units
    are counted but neither decoded nor returned (Parquet row groups without a wanted record are not read).
    After iteration :attr:`stats` holds the counts for the whole stream.
    """

    def __init__(
        self,
        inputs: list[str],
        config: ReaderConfig,
        docs_per_unit: int,
        want_unit: Callable[[int], bool],
        strict: bool = False,
    ):
        self.files = expand_inputs(inputs)
        self.config = config
        self.docs_per_unit = docs_per_unit
        self.want_unit = want_unit
        self.strict = strict
        self.stats = StreamStats()

    def __iter__(self) -> Iterator[RawRecord]:
        for path in self.files:
            self.stats.files += 1
            before = self.stats.records
            reader = self._parquet if path.endswith(PARQUET_SUFFIXES) else self._jsonl
            try:
                yield from reader(path)
            except (OSError, EOFError, ValueError, zlib.error) as exc:
                self._file_failed(path, exc, self.stats.records - before)

    def _file_failed(self, path: str, exc: BaseException, records_read: int) -> None:
        reason = _file_error_reason(exc)
        detail = f"{type(exc).__name__}: {exc}"
        if self.strict:
            raise SRPError(f"{path}: {reason} file after {records_read} records: {detail}") from exc
        logger.warning("skipping the rest of %s (%s after %d records): %s", path, reason, records_read, detail)
        self.stats.files_skipped[reason] += 1
        self.stats.file_errors.append({"file": path, "reason": reason, "detail": detail, "records_read": records_read})

    def _wanted(self, index: int) -> bool:
        return self.want_unit(index // self.docs_per_unit)

    def _jsonl(self, path: str) -> Iterator[RawRecord]:
        limit = self.config.max_record_bytes
        with _open_binary(path) as f:
            line_no = 0
            while True:
                line = f.readline(limit + 1)
                if not line:
                    return
                line_no += 1
                oversized = len(line) > limit and not line.endswith(b"\n")
                if oversized:
                    while (rest := f.readline(_READ_CHUNK)) and not rest.endswith(b"\n"):
                        pass  # drain the rest of the enormous line without keeping it
                elif not line.strip():
                    self.stats.blank_lines += 1
                    continue
                index = self.stats.records
                self.stats.records += 1
                if self._wanted(index):
                    if oversized:
                        yield RawRecord(index, path, line_no, None, "too_large")
                    else:
                        yield RawRecord(index, path, line_no, line)

    def _parquet(self, path: str) -> Iterator[RawRecord]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(path) as pf:
            file_start = self.stats.records
            for group in range(pf.metadata.num_row_groups):
                start, rows = self.stats.records, pf.metadata.row_group(group).num_rows
                end = start + rows
                units = range(start // self.docs_per_unit, (end - 1) // self.docs_per_unit + 1)
                if rows and any(self.want_unit(u) for u in units):
                    yield from self._row_group(pf, group, path, file_start, end)
                self.stats.records = end

    def _row_group(self, pf, group: int, path: str, file_start: int, end: int) -> Iterator[RawRecord]:
        """Rows of one row group; if it cannot be decoded, its remaining rows become ``corrupt`` records.

        The row count comes from the footer, so every shard numbers the stream alike whether or not it
        decodes this group.
        """
        try:
            for batch in pf.iter_batches(self.config.parquet_batch_rows, row_groups=[group]):
                for row in batch.to_pylist():
                    index = self.stats.records
                    self.stats.records += 1
                    if self._wanted(index):
                        yield RawRecord(index, path, index - file_start + 1, row)
        except (OSError, ValueError) as exc:
            detail = f"row group {group}: {type(exc).__name__}: {exc}"
            if self.strict:
                raise SRPError(f"{path}:{self.stats.records - file_start + 1}: corrupt {detail}") from exc
            logger.warning("%s: skipping the rest of %s", path, detail)
            for index in range(self.stats.records, end):
                if self._wanted(index):
                    yield RawRecord(index, path, index - file_start + 1, None, "corrupt")


def unit_batches(records: Iterable[RawRecord], docs_per_unit: int, batch_docs: int) -> Iterator[tuple[int, list]]:
    """``(unit, records)``: consecutive records of one unit of work, at most ``batch_docs`` at a time."""
    batch: list[RawRecord] = []
    unit = -1
    try:
        for rec in records:
            u = rec.doc_index // docs_per_unit
            if batch and (u != unit or len(batch) >= batch_docs):
                yield unit, batch
                batch = []
            unit = u
            batch.append(rec)
    except SRPError:  # --strict stopped at a bad file: the records before it come first (one may fail earlier)
        if batch:
            yield unit, batch
        raise
    if batch:
        yield unit, batch
