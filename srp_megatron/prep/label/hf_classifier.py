"""The ``hf-classifier`` labeler: a local Hugging Face sequence-classification model."""

from __future__ import annotations

from dataclasses import dataclass

from srp_megatron.prep.label.base import LABELERS, Labeler


@dataclass
class HFClassifierLabelerConfig:
    """Model directory, device and label mapping of the ``hf-classifier`` labeler."""

    model_dir: str = ""
    """Local directory of a Hugging Face sequence-classification model (config, weights, tokenizer)."""


@LABELERS.register("hf-classifier")
class HFClassifierLabeler(Labeler):
    """Labels segments in context with a local sequence classifier, in batches."""

    def __init__(self, config: HFClassifierLabelerConfig):
        self.config = config

    @property
    def identity(self) -> str:
        """``hf-classifier:<model_dir>``."""
        return f"hf-classifier:{self.config.model_dir}"

    def label_documents(self, docs):
        """Not implemented yet."""
        raise NotImplementedError
