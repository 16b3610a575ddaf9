"""Guard-model answer formats: Qwen3Guard-Gen and Llama Guard 3 (chat messages and strict answer parsers).

Both models are used for *response moderation*: the preceding text of the document is the user turn and
the segment under judgement is the assistant turn. The endpoint (vLLM, SGLang) applies the model's own chat
template, which wraps the conversation in the model's moderation instruction, so the messages carry no
instruction text of ours.

Answer formats, as documented by the model cards:

- Qwen3Guard-Gen (response moderation)::

      Safety: Unsafe
      Categories: Violent, PII
      Refusal: No

  ``Safety`` is ``Safe`` | ``Unsafe`` | ``Controversial``; ``Categories`` is a comma-separated list of the
  nine category names or ``None``; the ``Refusal`` line is optional (prompt-moderation answers lack it).
- Llama Guard 3: ``safe``, or ``unsafe`` then a line of comma-separated hazard codes ``S1``..``S14``; codes
  map to the MLCommons hazard names of the model card.

The parsers are strict: anything else raises :class:`GuardParseError`, so a garbled answer is retried and
then counted as an error, never read as "safe".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.registry import Registry


class GuardFormat(enum.StrEnum):
    """Which guard model family answers on the endpoint (member names are the YAML spellings)."""

    qwen3guard = "qwen3guard"
    llamaguard3 = "llamaguard3"


class GuardParseError(ValueError):
    """A guard answer that is not a well-formed answer of its format."""


#: Qwen3Guard-Gen safety categories, spelled as the model writes them (``Jailbreak`` occurs for prompts only).
QWEN3GUARD_CATEGORIES: tuple[str, ...] = (
    "Violent",
    "Non-violent Illegal Acts",
    "Sexual Content or Sexual Acts",
    "PII",
    "Suicide & Self-Harm",
    "Unethical Acts",
    "Politically Sensitive Topics",
    "Copyright Violation",
    "Jailbreak",
)

#: Llama Guard 3 hazard codes -> MLCommons hazard names (Llama Guard 3 model card).
LLAMAGUARD3_CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

#: User turn sent when the segment starts the document (both chat templates need a user turn).
DEFAULT_EMPTY_CONTEXT = "(This is the beginning of the document.)"


def document_contexts(segments: list[str], max_chars: int) -> list[str]:
    """For each segment, the document text before it: at most ``max_chars`` characters, cut at the left."""
    text = "".join(segments)
    contexts, end = [], 0
    for seg in segments:
        contexts.append(text[max(0, end - max_chars) : end] if max_chars > 0 else "")
        end += len(seg)
    return contexts


def moderation_messages(context: str, segment: str, empty_context: str = DEFAULT_EMPTY_CONTEXT) -> list[dict]:
    """Response-moderation chat: the preceding text as the user turn, the segment as the assistant turn."""
    return [
        {"role": "user", "content": context if context.strip() else empty_context},
        {"role": "assistant", "content": segment},
    ]


_QWEN_SAFETY = {"Safe": Label.safe, "Controversial": Label.controversial, "Unsafe": Label.unsafe}
_QWEN_LINE = re.compile(r"^(Safety|Categories|Refusal):[ \t]*(.*?)[ \t]*$")


def parse_qwen3guard(answer: str) -> SegmentLabel:
    """Parse a Qwen3Guard-Gen answer (``Safety:`` / ``Categories:`` / optional ``Refusal:`` lines)."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    fields: dict[str, str] = {}
    for line in lines:
        m = _QWEN_LINE.match(line)
        if m is None or m.group(1) in fields:
            raise GuardParseError(f"unexpected line {line!r} in Qwen3Guard answer {answer!r}")
        fields[m.group(1)] = m.group(2)
    if list(fields)[:2] != ["Safety", "Categories"]:
        raise GuardParseError(f"Qwen3Guard answer must start with Safety: and Categories: lines, got {answer!r}")
    label = _QWEN_SAFETY.get(fields["Safety"])
    if label is None:
        raise GuardParseError(f"unknown Qwen3Guard safety level {fields['Safety']!r} in {answer!r}")
    if "Refusal" in fields and fields["Refusal"] not in ("Yes", "No"):
        raise GuardParseError(f"Refusal must be Yes or No in {answer!r}")
    names = [n.strip() for n in fields["Categories"].split(",")]
    if names == ["None"]:
        names = []
    unknown = [n for n in names if n not in QWEN3GUARD_CATEGORIES]
    if unknown or len(set(names)) != len(names):
        raise GuardParseError(f"bad Qwen3Guard categories {fields['Categories']!r} in {answer!r}")
    if label == Label.safe and names:
        raise GuardParseError(f"Qwen3Guard answer is Safe but names categories: {answer!r}")
    return SegmentLabel(label, tuple(names))


def parse_llamaguard3(answer: str) -> SegmentLabel:
    """Parse a Llama Guard 3 answer: ``safe``, or ``unsafe`` and a line of hazard codes."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if lines == ["safe"]:
        return SegmentLabel(Label.safe)
    if len(lines) != 2 or lines[0] != "unsafe":
        raise GuardParseError(f"Llama Guard 3 answer must be 'safe' or 'unsafe' + codes, got {answer!r}")
    codes = [c.strip() for c in lines[1].split(",")]
    unknown = [c for c in codes if c not in LLAMAGUARD3_CATEGORIES]
    if unknown or len(set(codes)) != len(codes):
        raise GuardParseError(f"bad Llama Guard 3 hazard codes {lines[1]!r} in {answer!r}")
    return SegmentLabel(Label.unsafe, tuple(LLAMAGUARD3_CATEGORIES[c] for c in codes))


@dataclass(frozen=True)
class GuardSpec:
    """How to ask one guard family and how to read its answer."""

    name: str
    build_messages: Callable[[str, str, str], list[dict]]
    """``(context, segment, empty_context_placeholder) -> chat messages``."""
    parse: Callable[[str], SegmentLabel]
    """Answer text -> label; raises :class:`GuardParseError` on anything malformed."""
    categories: tuple[str, ...]
    """Category names the parser can produce."""


#: guard format name -> :class:`GuardSpec`.
GUARD_FORMATS: Registry[GuardSpec] = Registry("guard format")
GUARD_FORMATS.register(GuardFormat.qwen3guard.value)(
    GuardSpec("qwen3guard", moderation_messages, parse_qwen3guard, QWEN3GUARD_CATEGORIES)
)
GUARD_FORMATS.register(GuardFormat.llamaguard3.value)(
    GuardSpec("llamaguard3", moderation_messages, parse_llamaguard3, tuple(LLAMAGUARD3_CATEGORIES.values()))
)
