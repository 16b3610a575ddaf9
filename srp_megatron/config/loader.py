"""Typed configs from YAML + ``key=value`` overrides, with errors that name the key and the file."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from srp_megatron.errors import SRPError
from srp_megatron.registry import RegistryConfig

T = TypeVar("T")

#: The packaged presets: ``conf/<group>/<name>.yaml``. ``conf/`` sits at the top of the repository and ships in the
#: wheel as package data (``srp_megatron/conf`` links to it in a checkout).
CONF = importlib.resources.files("srp_megatron") / "conf"
CONF_DIR = str(CONF)


class ConfigError(SRPError):
    """A configuration problem, naming the source (file or command line) and the key."""


def _full_key(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    return str(key) if key else "<root>"


def merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    """Merge ``update`` into ``base``; errors name the key and ``source``."""
    if isinstance(update, DictConfig):
        update = OmegaConf.to_container(update)
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as exc:
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"{source}: key '{_full_key(exc)}': {msg}") from None


def resolve_preset(path: str, group: str | None = None) -> str:
    """The one preset rule: ``path`` if that file exists, else the packaged ``conf/<group>/<path>.yaml``.

    Every way of naming a preset goes through here: ``--config NAME``, ``model.preset`` / ``precision.preset``,
    and ``preset:`` in a loss policy.
    """
    if os.path.exists(path):
        return path
    if group is not None:
        name = path if path.endswith(".yaml") else f"{path}.yaml"
        candidate = CONF / group / name
        if candidate.is_file():
            return str(candidate)
    known = ""
    if group is not None and (CONF / group).is_dir():
        known = f" (known presets in conf/{group}: {', '.join(preset_names(group))})"
    raise ConfigError(f"config file '{path}' not found{known}")


def preset_names(group: str) -> list[str]:
    """Names of the packaged presets in ``conf/<group>/``."""
    return sorted(f.name[: -len(".yaml")] for f in (CONF / group).iterdir() if f.name.endswith(".yaml"))


def load_preset(name: str, group: str) -> dict[str, Any]:
    """The values of ``conf/<group>/<name>.yaml`` (or of a YAML path) as a plain dict with ``preset`` set."""
    values = OmegaConf.to_container(load_yaml(resolve_preset(name, group)))
    values.setdefault("preset", os.path.basename(name).removesuffix(".yaml"))  # type: ignore[union-attr]
    return values  # type: ignore[return-value]


def load_yaml(path: str) -> DictConfig:
    """Load a YAML mapping; a syntax error names the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return OmegaConf.create(data)


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """Parse ``a.b=value`` command-line overrides (values are YAML scalars or lists)."""
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"command line: override '{bad[0]}' is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"command line: {exc}") from None


def load_config(
    schema: type[T],
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
    values: dict[str, Any] | None = None,
) -> T:
    """Build ``schema`` from defaults, then YAML files, then ``values`` (CLI flags), then ``key=value``.

    A :class:`~srp_megatron.registry.RegistryConfig` schema gets one typed section per registry entry with a
    config (``openai:``, ``filter:``). Unknown keys and wrong types raise :class:`ConfigError` naming the key
    and where it came from; ``__post_init__`` validation errors are re-raised with the sources listed.
    """
    cfg = OmegaConf.structured(schema)
    sections = schema.REGISTRY.sections() if issubclass(schema, RegistryConfig) else {}
    with open_dict(cfg):
        for name, section in sections.items():
            cfg[name] = OmegaConf.structured(section)
    for path in paths:
        cfg = merge(cfg, load_yaml(path), path)
    if values:
        cfg = merge(cfg, OmegaConf.create({k: v for k, v in values.items() if v is not None}), "command-line flags")
    if overrides:
        cfg = merge(cfg, parse_overrides(overrides), "command line")
    sources = ", ".join([*paths, *(["command line"] if overrides or values else [])]) or "defaults"
    try:
        with open_dict(cfg):  # the sections are not fields of the root: typed apart, then attached
            options = {name: OmegaConf.to_object(cfg.pop(name)) for name in sections}
        root = OmegaConf.to_object(cfg)  # runs __post_init__ of every nested dataclass
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{sources}: key '{_full_key(exc)}': {str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{sources}: {exc}") from None
    for name, value in options.items():
        root.set_section(name, value)
    return root


def to_yaml(cfg: Any) -> str:
    """Serialise a config dataclass (resolved) to YAML, e.g. to save beside a run's outputs."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (enums as their values)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]
