"""What ``srp render`` reads of a labels directory before rendering: the manifest, this shard's units, and the
document and segment counts those units must hold.

A labels directory is a sequence of units (``segments-NNNNNN.parquet``, written by ``srp label``). A render
shard ``I`` of ``N`` takes the units ``u % N == I`` in order, so ``N`` shards together hold every document
exactly once, and shard ``I`` of a render takes the same units as shard ``I`` of a label job with the same ``N``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import MANIFEST, read_unit_stats, unit_numbers, unit_path


@dataclass(frozen=True)
class ExpectedCounts:
    """Documents and segments a complete labels directory lists for the units being rendered."""

    docs_ok: int
    segments: int
    where: str
    """The file(s) that list them, for error messages."""


def select_units(labels_dir: str, manifest: dict | None, num_shards: int, shard_index: int) -> list[int]:
    """The units ``u % num_shards == shard_index`` in order; a complete manifest's units must all be present."""
    present = unit_numbers(labels_dir)
    if manifest is not None and manifest.get("complete") and "units" in manifest:
        listed = set(range(manifest["units"]))
        odd = sorted(listed ^ set(present))
        if odd:  # a unit file lost, or one left from another run: render nothing rather than the wrong data
            state = "is missing" if odd[0] in listed else "is not one of its units"
            raise SRPError(
                f"{unit_path(labels_dir, odd[0])} {state} ({MANIFEST} lists {manifest['units']} units): the labels "
                "directory is damaged; nothing was written"
            )
    units = [u for u in present if u % num_shards == shard_index]
    if not units:
        raise SRPError(
            f"shard_index={shard_index} of num_shards={num_shards} has no label units ('{labels_dir}' has "
            f"{len(present)}; shard I renders the units u with u % num_shards == I): use num_shards <= {len(present)}"
        )
    return units


def expected_counts(
    labels_dir: str, manifest: dict | None, units: list[int], num_shards: int
) -> ExpectedCounts | None:
    """What a complete labels directory lists for ``units``: the manifest's totals when rendering it whole,
    else the sum of the units' ``stats-NNNNNN.json``; None when there is nothing to check against."""
    if manifest is None or not manifest.get("complete"):
        return None
    if num_shards == 1:
        return ExpectedCounts(manifest.get("docs_ok"), manifest.get("segments"), os.path.join(labels_dir, MANIFEST))
    sums: Counter = Counter()
    for u in units:
        stats = read_unit_stats(labels_dir, u)
        sums.update({k: int(stats[k]) for k in ("docs_ok", "segments")})
    where = f"{labels_dir}: the stats files of the {len(units)} units of this shard"
    return ExpectedCounts(sums["docs_ok"], sums["segments"], where)
