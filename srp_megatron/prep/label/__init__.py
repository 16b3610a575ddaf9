"""Segment labelers: keyword (heuristic), openai (guard model endpoint), hf-classifier, oracle."""

from srp_megatron.prep.label.base import LABELERS, Label, LabelFailure, Labeler, SegmentedDocument, SegmentLabel

__all__ = ["LABELERS", "Label", "LabelFailure", "Labeler", "SegmentLabel", "SegmentedDocument"]
