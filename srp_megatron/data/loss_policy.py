"""Loss policies: which span types of a rendered corpus the model learns to predict.

A policy maps every span type (:class:`~srp_megatron.formats.rendered.SpanType`) to ``train`` or
``mask``. ``ReflectionGPTDataset`` multiplies its 0/1 table, looked up by the span type of each
*label* token, into megatron's ``loss_mask``. Named presets live in ``conf/loss_policy/NAME.yaml``;
a mapping may name a ``preset`` and override some span types::

    LossPolicy.resolve("reflection_context")
    LossPolicy.resolve({"preset": "paper", "unsafe_text": "mask"})

Weights other than 0/1 are deliberately not offered: megatron counts trained tokens as
``int(loss_mask.sum())``, so fractional weights would be truncated in the loss normalisation.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from srp_megatron.config.loader import load_config, load_yaml, resolve_preset
from srp_megatron.errors import SRPError
from srp_megatron.formats.rendered import SpanType

#: ``conf/`` group of the named presets.
PRESET_GROUP = "loss_policy"
#: The paper's policy (train on everything), used when none is given.
DEFAULT_POLICY = "paper"
#: Key of a policy mapping that names the preset the other keys override.
PRESET_KEY = "preset"


class LossAction(enum.StrEnum):
    """What the loss does at a position whose label token has a given span type."""

    train = "train"
    mask = "mask"


@dataclass
class LossPolicyConfig:
    """Contents of a preset ``conf/loss_policy/NAME.yaml``: the loss action per span type.

    One field per :class:`SpanType` member, in code order (a test keeps them in step).
    """

    text: LossAction = LossAction.train
    """Corpus text of safe segments, and the EOD token."""
    reflection: LossAction = LossAction.train
    """A reflection's verdict and categories (`` Safe``, `` Unsafe: Violent``)."""
    reflection_marker: LossAction = LossAction.train
    """A reflection's delimiters (`` <think>``/`` </think>`` or the dedicated special tokens)."""
    unsafe_text: LossAction = LossAction.train
    """Corpus text of a segment labelled unsafe."""


def _known_span_types() -> str:
    return ", ".join(m.name for m in SpanType)


def _parse_actions(mapping: Mapping[Any, Any], source: str) -> dict[str, LossAction]:
    """``{span type name: action}`` from user input; errors name ``source``, the key and the choices."""
    actions = {}
    for key, value in mapping.items():
        try:
            span = SpanType.from_name(str(key))
        except ValueError:
            raise SRPError(
                f"{source}: loss policy names unknown span type '{key}' (known: {_known_span_types()})"
            ) from None
        try:
            actions[span.name] = LossAction(str(getattr(value, "value", value)).lower())
        except ValueError:
            known = ", ".join(a.value for a in LossAction)
            raise SRPError(f"{source}: loss action '{value}' for span type '{key}' is not one of {known}") from None
    return actions


def _preset_path(name_or_path: str) -> str:
    return resolve_preset(name_or_path, PRESET_GROUP)


def _preset_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@dataclass(frozen=True)
class LossPolicy:
    """Loss action per span type, indexed by :class:`SpanType` code."""

    name: str
    """Preset name, ``NAME+overrides`` for a preset with overrides, or ``custom``."""
    actions: tuple[LossAction, ...]
    """``actions[code]`` is the action for span type ``code``."""

    def __post_init__(self) -> None:
        if len(self.actions) != len(SpanType):
            raise ValueError(f"LossPolicy.actions has {len(self.actions)} entries, expected {len(SpanType)}")

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: LossPolicyConfig, name: str) -> LossPolicy:
        """The policy a typed :class:`LossPolicyConfig` describes."""
        return cls(name=name, actions=tuple(LossAction(getattr(config, m.name)) for m in SpanType))

    @classmethod
    def from_preset(cls, name_or_path: str) -> LossPolicy:
        """Load ``conf/loss_policy/NAME.yaml`` (or a YAML file path)."""
        return cls.from_mapping({PRESET_KEY: name_or_path})

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], source: str = "loss_policy") -> LossPolicy:
        """Span-type name -> ``train``/``mask``; an optional ``preset`` key names the base policy.

        Span types the mapping (and its preset) leave out train, as in the paper.
        """
        values = {str(k): v for k, v in mapping.items()}
        preset = values.pop(PRESET_KEY, None)
        actions: dict[str, LossAction] = {}
        if preset is not None:
            path = _preset_path(str(preset))
            actions.update(_parse_actions(load_yaml(path), path))
        overrides = _parse_actions(values, source)
        # Checked above so errors name the file or mapping and list the span types; typed here.
        config = load_config(LossPolicyConfig, values={**actions, **overrides})
        if preset is None:
            name = "custom"
        else:
            name = _preset_name(path) + ("+overrides" if overrides else "")
        return cls.from_config(config, name)

    @classmethod
    def resolve(cls, spec: LossPolicy | str | Mapping[str, Any] | None) -> LossPolicy:
        """A policy from a policy, a preset name or YAML path, a mapping, or ``None`` (the default)."""
        if isinstance(spec, LossPolicy):
            return spec
        if spec is None:
            return cls.from_preset(DEFAULT_POLICY)
        if isinstance(spec, str):
            return cls.from_preset(spec)
        if isinstance(spec, Mapping):
            return cls.from_mapping(spec)
        raise SRPError(
            f"loss_policy must be a preset name, a YAML path or a mapping of span type to train/mask, "
            f"got {type(spec).__name__}"
        )

    # -- use -------------------------------------------------------------------------------------
    def action(self, span: SpanType | str) -> LossAction:
        """The action for one span type (a member or its lower-case name)."""
        code = SpanType.from_name(span) if isinstance(span, str) else SpanType(span)
        return self.actions[int(code)]

    def table(self) -> np.ndarray:
        """``float32[len(SpanType)]``: 1.0 where the span type trains, 0.0 where it is masked.

        Indexing it with a span-code array raises ``IndexError`` for codes outside ``SpanType``.
        """
        return np.array([a == LossAction.train for a in self.actions], dtype=np.float32)

    @property
    def trains_all(self) -> bool:
        """True when no span type is masked (the loss mask is then GPTDataset's unchanged)."""
        return all(a == LossAction.train for a in self.actions)

    @property
    def masked(self) -> list[str]:
        """Names of the masked span types."""
        return [m.name for m in SpanType if self.actions[int(m)] == LossAction.mask]

    def to_dict(self) -> dict[str, str]:
        """``{span type name: action}``, e.g. to save beside a run's outputs."""
        return {m.name: self.actions[int(m)].value for m in SpanType}

    def __str__(self) -> str:
        masked = ", ".join(self.masked) or "nothing"
        return f"{self.name} (masks {masked})"

