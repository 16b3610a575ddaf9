"""What a labeler is: segments of a document in, one safety label per segment out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from srp_megatron.formats.labels import SegmentLabel
from srp_megatron.registry import Registry


@dataclass
class SegmentedDocument:
    """A document split into segments; labelers judge each segment in the context of those before it."""

    doc_id: str
    segments: list[str]
    row: dict = field(default_factory=dict)
    """The input row (other columns), for labelers that read labels from the data (oracle)."""


@dataclass(frozen=True)
class LabelFailure:
    """A document that could not be labelled; it is skipped and counted under ``reason``."""

    reason: str
    detail: str = ""


class Labeler(ABC):
    """Labels whole documents in batches. Subclasses register in ``LABELERS`` under their name."""

    @property
    @abstractmethod
    def identity(self) -> str:
        """What produced the labels (name, model, prompt format), stored in every output row."""

    @abstractmethod
    def label_documents(self, docs: Sequence[SegmentedDocument]) -> list[list[SegmentLabel] | LabelFailure]:
        """One entry per document: a label per segment, or a failure (never a silent 'safe')."""

    def stats(self) -> dict[str, int]:
        """Counters of this process since construction (requests, retries, failures...); summed per unit of
        work into the labels manifest's ``labeler_stats``. Most labelers count nothing."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook, most labelers hold nothing
        """Release clients, pools or models."""


#: name -> Labeler subclass, constructed as ``cls(config_section)``.
LABELERS: Registry[type[Labeler]] = Registry("labeler", entry_point_group="srp_megatron.labelers")
