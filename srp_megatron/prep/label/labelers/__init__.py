"""Segment labelers: keyword (heuristic), openai (guard model endpoint), hf-classifier, oracle."""

from srp_megatron.prep.label.base import LABELERS, Label, Labeler, LabelFailure, SegmentedDocument, SegmentLabel

__all__ = ["LABELERS", "Label", "LabelFailure", "Labeler", "SegmentLabel", "SegmentedDocument"]

# Importing the modules registers their labelers in LABELERS (last, so they can import the names above).
from srp_megatron.prep.label import hf_classifier, keyword, openai, oracle  # noqa: E402, F401, I001
