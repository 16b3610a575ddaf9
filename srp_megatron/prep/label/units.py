"""The label stage's unit of work: the results of a slice of the input stream, written as one Parquet file
and one stats file (``srp_megatron.formats.labels`` names them; the stats file, written last, marks the unit done).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from srp_megatron.errors import SRPError
from srp_megatron.formats.atomic import write_json_atomic, write_table_atomic
from srp_megatron.formats.labels import LabelledDocument, documents_to_table, stats_path, unit_path


@dataclass
class DocResult:
    """Outcome for one record: a labelled document, or the reason it was skipped."""

    doc_index: int
    location: str
    doc: LabelledDocument | None = None
    reason: str = ""
    detail: str = ""
    chars: int = 0


class UnitWriter:
    """Collects the results of one unit and writes its Parquet file and stats when the unit is complete."""

    def __init__(self, labels_dir: str, config: dict, strict: bool = False):
        self.labels_dir, self.config, self.strict = labels_dir, config, strict
        self.unit, self.identity, self.docs, self.stats = -1, "", [], {}

    def add(self, unit: int, identity: str, results: list[DocResult], labeler_stats: dict[str, int]) -> None:
        """Add a batch's results and counters; finishing the previous unit first if this batch starts a new one."""
        if unit != self.unit:
            self.flush()
            if unit > 999_999:  # unit file names must keep sorting in stream order
                raise SRPError("the input has more than 999,999 units of work: raise docs_per_unit")
            self.unit, self.identity, self.docs = unit, identity, []
            self.stats = {"docs_in": 0, "docs_ok": 0, "segments": 0, "chars": 0,
                          "docs_skipped": Counter(), "labels": Counter(), "categories": Counter(),
                          "labeler_stats": Counter()}
        st = self.stats
        st["labeler_stats"].update(labeler_stats)
        for r in results:
            st["docs_in"] += 1
            if r.doc is None:
                if self.strict:
                    raise SRPError(f"{r.location}: {r.reason}: {r.detail} (--strict stops at the first bad record)")
                st["docs_skipped"][r.reason] += 1
                continue
            st["docs_ok"] += 1
            st["chars"] += r.chars
            st["segments"] += len(r.doc.segments)
            st["labels"].update(lab.label.value for lab in r.doc.labels)
            st["categories"].update(c for lab in r.doc.labels for c in lab.categories)
            self.docs.append(r.doc)

    def flush(self) -> None:
        """Write the current unit (Parquet first, then its stats, which mark it done)."""
        if self.unit < 0:
            return
        write_table_atomic(documents_to_table(self.docs, self.identity), unit_path(self.labels_dir, self.unit))
        stats = {**self.stats, "unit": self.unit, "labeler": self.identity, "config": self.config}
        write_json_atomic(stats, stats_path(self.labels_dir, self.unit))
        self.unit, self.docs = -1, []
