"""Guard-model answer formats: Qwen3Guard-Gen and Llama Guard 3 (prompt messages and strict parsers)."""

from __future__ import annotations

import enum


class GuardFormat(str, enum.Enum):
    """Which guard model family answers on the endpoint."""

    QWEN3GUARD = "qwen3guard"
    LLAMAGUARD3 = "llamaguard3"
