"""The label stage's output: one Parquet file and one stats file per unit of work, and ``manifest.json``.

A unit is done when both its files exist (the stats file is written last). The manifest sums the done
units' stats, so it is the same whichever process, worker or array task labelled a unit, and a resumed run
reproduces it: ``labeler_stats`` (request and retry counters, which can depend on the server's timing) are
stored per unit when the unit is written and never recounted.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections import Counter
from typing import TYPE_CHECKING

from srp_megatron.errors import SRPError
from srp_megatron.prep.documents import StreamStats
from srp_megatron.prep.label.base import Label
from srp_megatron.prep.segments_io import MANIFEST, documents_to_table, unit_path, write_table_atomic

if TYPE_CHECKING:
    from srp_megatron.prep.labeling import DocResult, LabelConfig

logger = logging.getLogger(__name__)


def write_json_atomic(obj: dict, path: str, tmp_suffix: str = ".tmp") -> None:
    """Write deterministic JSON (sorted keys) via a temporary file, so readers never see a partial file."""
    tmp = path + tmp_suffix
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def stats_path(labels_dir: str, unit: int) -> str:
    """Path of the stats file of one unit (written after its Parquet file: its presence marks the unit done)."""
    return os.path.join(labels_dir, f"stats-{unit:06d}.json")


class UnitWriter:
    """Collects the results of one unit and writes its Parquet file and stats when the unit is complete."""

    def __init__(self, cfg: LabelConfig, config: dict):
        self.cfg, self.config = cfg, config
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
                if self.cfg.strict:
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
        write_table_atomic(documents_to_table(self.docs, self.identity), unit_path(self.cfg.out, self.unit))
        stats = {**self.stats, "unit": self.unit, "labeler": self.identity, "config": self.config}
        write_json_atomic(stats, stats_path(self.cfg.out, self.unit))
        self.unit, self.docs = -1, []


def done_units(cfg: LabelConfig, config: dict) -> dict[int, dict]:
    """Stats of the finished units in the output directory (any shard's); refuses other settings' units."""
    done = {}
    for path in sorted(glob.glob(os.path.join(cfg.out, "stats-*.json"))):
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
        if stats.get("config") != config:
            old = stats.get("config") or {}
            diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise SRPError(f"{path} was written with other settings ({', '.join(diff)} differ): rerun with the same "
                           "arguments to resume, or write to a new --out directory")
        if not os.path.exists(unit_path(cfg.out, stats["unit"])):
            logger.warning("%s: the unit's Parquet file is missing: it is labelled again", path)
            continue
        done[stats["unit"]] = stats
    return done


def build_manifest(cfg: LabelConfig, config: dict, stream: StreamStats) -> dict:
    """``manifest.json``: every finished unit's stats summed, plus what the reader saw of the whole stream."""
    n_units = -(-stream.records // cfg.docs_per_unit)
    done = done_units(cfg, config)
    units = [done[u] for u in range(n_units) if u in done]
    sums: Counter = Counter()
    skipped, labels, categories = Counter(), Counter({lab.value: 0 for lab in Label}), Counter()
    labeler_stats: Counter = Counter()
    for st in units:
        sums.update({k: st[k] for k in ("docs_in", "docs_ok", "segments", "chars")})
        skipped.update(st["docs_skipped"])
        labels.update(st["labels"])
        categories.update(st["categories"])
        labeler_stats.update(st.get("labeler_stats", {}))  # units written before labeler_stats existed: none
    return {
        "complete": len(units) == n_units,
        "units": n_units,
        "units_done": len(units),
        "records": stream.records,
        **{k: sums[k] for k in ("docs_in", "docs_ok", "segments", "chars")},
        "docs_skipped": dict(skipped),
        "labels": dict(labels),
        "categories": dict(categories),
        "labeler": ", ".join(sorted({st["labeler"] for st in units})) or cfg.labeler,
        "labeler_stats": dict(labeler_stats),
        "files": stream.files,
        "files_skipped": dict(stream.files_skipped),
        "file_errors": stream.file_errors,
        "blank_lines": stream.blank_lines,
        "config": config,
    }


def write_manifest(cfg: LabelConfig, config: dict, stream: StreamStats) -> dict:
    """Write ``manifest.json`` (recounted once if another array task finished meanwhile) and return it."""
    path = os.path.join(cfg.out, MANIFEST)
    manifest = build_manifest(cfg, config, stream)
    write_json_atomic(manifest, path, f".{cfg.shard_index}.tmp")
    if not manifest["complete"] and cfg.num_shards > 1:
        # a shard that finished while we counted may have written first: recount so the last write is complete
        again = build_manifest(cfg, config, stream)
        if again != manifest:
            write_json_atomic(again, path, f".{cfg.shard_index}.tmp")
            manifest = again
    return manifest
