"""The ``openai`` labeler: a guard model behind an OpenAI-compatible chat endpoint (e.g. vLLM)."""

from __future__ import annotations

from dataclasses import dataclass

from srp_megatron.prep.label.base import LABELERS, Labeler
from srp_megatron.prep.label.guard_formats import GuardFormat


@dataclass
class OpenAILabelerConfig:
    """Endpoint, model and request policy of the ``openai`` labeler."""

    base_url: str = "http://127.0.0.1:8000/v1"
    """OpenAI-compatible API root (vLLM: ``http://HOST:PORT/v1``)."""
    model: str = "Qwen/Qwen3Guard-Gen-8B"
    """Model name as the endpoint serves it."""
    format: GuardFormat = GuardFormat.QWEN3GUARD
    """Guard answer format: ``qwen3guard`` (Qwen3Guard-Gen) or ``llamaguard3`` (Llama Guard 3)."""


@LABELERS.register("openai")
class OpenAILabeler(Labeler):
    """Labels segments in context with a guard model served over an OpenAI-compatible endpoint."""

    def __init__(self, config: OpenAILabelerConfig):
        self.config = config

    @property
    def identity(self) -> str:
        """``openai:<format>:<model>``."""
        return f"openai:{self.config.format.value}:{self.config.model}"

    def label_documents(self, docs):
        """Not implemented yet."""
        raise NotImplementedError
