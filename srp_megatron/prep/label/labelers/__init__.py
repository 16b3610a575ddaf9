"""Segment labelers: keyword (heuristic), openai (guard model endpoint), hf-classifier, oracle."""

from srp_megatron.prep.label.labelers.base import LABELERS, Labeler, LabelFailure, SegmentedDocument

__all__ = ["LABELERS", "LabelFailure", "Labeler", "SegmentedDocument"]

# Importing the modules registers their labelers in LABELERS (last, so they can import the names above).
from srp_megatron.prep.label.labelers import hf_classifier, keyword, openai, oracle  # noqa: E402, F401, I001
