"""The ``oracle`` labeler: labels already present in the input rows (synthetic worlds, pre-labelled corpora).

Two row layouts:

- **segment-level**: ``segments: [{text, label, categories?, rewrite?}, ...]``. These segments *are* the
  segmentation (the segmenter is not used); their texts must concatenate to the row's text field when it
  is present, and supply the text when it is absent. A ``rewrite`` is carried to the output.
- **document-level**: ``label`` (and optionally ``categories``) on the row, applied to every segment the
  segmenter produces.

Field names are configurable. Label values are ``safe`` / ``controversial`` / ``unsafe`` (any case).
A row without a usable label is skipped and counted (``oracle_missing_label``, ``oracle_invalid_label``,
``oracle_invalid_segments``, ``oracle_text_mismatch``), never labelled safe by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.label.labelers.base import LABELERS, Labeler, LabelFailure, SegmentedDocument


@dataclass
class OracleLabelerConfig:
    """Where the ``oracle`` labeler finds labels in a row."""

    segments_field: str = "segments"
    """Row field holding a list of ``{text, label, categories?, rewrite?}`` objects (segment-level labels)."""
    label_field: str = "label"
    """Row field (and key inside each segment object) holding the label."""
    categories_field: str = "categories"
    """Row field (and key inside each segment object) holding a list of category names; optional."""
    segment_text_key: str = "text"
    """Key of the text inside each segment object."""
    rewrite_key: str = "rewrite"
    """Key of an optional safe rewrite inside each segment object."""


@dataclass
class Presegmented:
    """A row's own segmentation, with labels and rewrites (segment-level layout)."""

    segments: list[str]
    labels: list[SegmentLabel]
    rewrites: list[str | None]


@LABELERS.register("oracle", config=OracleLabelerConfig)
class OracleLabeler(Labeler):
    """Reads labels from the data instead of judging the text (see the module doc)."""

    def __init__(self, config: OracleLabelerConfig):
        self.config = config

    @property
    def identity(self) -> str:
        """``oracle``."""
        return "oracle"

    def text_from_row(self, row: dict) -> str | None:
        """The text of a row that has segments but no text field: their concatenation (None if unusable)."""
        parsed = self.presegment(row)
        return "".join(parsed.segments) if isinstance(parsed, Presegmented) else None

    def presegment(self, row: dict, text: str | None = None) -> Presegmented | LabelFailure | None:
        """The row's segments and labels, a failure, or None when the row has no segments field."""
        cfg = self.config
        items = row.get(cfg.segments_field)
        if items is None:
            return None
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            detail = f"'{cfg.segments_field}' must be a non-empty list of objects"
            return LabelFailure("oracle_invalid_segments", detail)
        segments, labels, rewrites = [], [], []
        for n, item in enumerate(items):
            seg_text, rewrite = item.get(cfg.segment_text_key), item.get(cfg.rewrite_key)
            if not isinstance(seg_text, str) or not (rewrite is None or isinstance(rewrite, str)):
                return LabelFailure("oracle_invalid_segments", f"segment {n}: text must be a string, rewrite a string")
            label = self._label(item, f"segment {n}")
            if isinstance(label, LabelFailure):
                return label
            segments.append(seg_text)
            labels.append(label)
            rewrites.append(rewrite)
        if text is not None and "".join(segments) != text:
            detail = f"the texts of '{cfg.segments_field}' do not concatenate to the text"
            return LabelFailure("oracle_text_mismatch", detail)
        return Presegmented(segments, labels, rewrites)

    def _label(self, obj: dict, where: str) -> SegmentLabel | LabelFailure:
        value = obj.get(self.config.label_field)
        if value is None:
            return LabelFailure("oracle_missing_label", f"{where}: no '{self.config.label_field}'")
        try:
            label = Label(str(value).lower())
        except ValueError:
            return LabelFailure("oracle_invalid_label", f"{where}: label {value!r} is not safe/controversial/unsafe")
        cats = obj.get(self.config.categories_field) or []
        if isinstance(cats, str):
            cats = [cats]
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            return LabelFailure("oracle_invalid_label", f"{where}: categories {cats!r} must be a list of strings")
        return SegmentLabel(label, tuple(cats))

    def label_documents(self, docs: Sequence[SegmentedDocument]) -> list[list[SegmentLabel] | LabelFailure]:
        """Labels from each document's row: per segment if it has segments, else the row's label for all."""
        out: list[list[SegmentLabel] | LabelFailure] = []
        for doc in docs:
            parsed = self.presegment(doc.row)
            if parsed is None:
                label = self._label(doc.row, "row")
                out.append(label if isinstance(label, LabelFailure) else [label] * len(doc.segments))
            elif isinstance(parsed, LabelFailure):
                out.append(parsed)
            elif parsed.segments != doc.segments:
                out.append(LabelFailure("oracle_text_mismatch", "document segments differ from the row's segments"))
            else:
                out.append(parsed.labels)
        return out
