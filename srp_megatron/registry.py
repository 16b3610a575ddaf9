"""String-keyed registries (labelers, arms, ...) whose entries own their config sections.

An entry registers with its config dataclass, ``@LABELERS.register("openai", config=OpenAILabelerConfig)``; the
root config of the stage (``LabelConfig``, ``RenderConfig``) derives from :class:`RegistryConfig` and lists no
field per entry: the loader (``srp_megatron.config``) adds one typed section per entry that has a config, named
as the entry with ``-`` read as ``_`` (``openai.base_url=...``, ``hf_classifier.model_dir=...``). Third-party
entries are found through an entry-point group (``srp_megatron.labelers``, ``srp_megatron.arms``): each entry
point names a module that registers its entries when imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, TypeVar

from srp_megatron.errors import SRPError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered class (or factory) and the dataclass of its config section (None: no options)."""

    obj: T
    config: type | None


def section_name(name: str) -> str:
    """The config section of entry ``name``: ``hf-classifier`` -> ``hf_classifier``."""
    return name.replace("-", "_")


class Registry(Generic[T]):
    """Maps names to classes or factories; an unknown name is an error listing the known ones."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        """Entry-point group of third-party modules that register entries (imported on first lookup)."""
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, config: type | None = None) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``, with its config dataclass (if it has options)."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            clash = [n for n in self._entries if section_name(n) == section_name(name)]
            if clash:
                raise ValueError(f"{self.kind} '{name}' and '{clash[0]}' would share the config section "
                                 f"'{section_name(name)}': choose another name")
            self._entries[name] = Entry(obj, config)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register throwaway entries)."""
        self._entries.pop(name, None)

    def _load_plugins(self) -> None:
        """Import the modules of the entry-point group once (they register entries)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            ep.load()

    def get(self, name: str) -> T:
        """The entry registered under ``name``."""
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        """The entry (object and config class) registered under ``name``."""
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise SRPError(f"unknown {self.kind} '{name}' (known: {', '.join(self.names())})") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def sections(self) -> dict[str, type]:
        """``{section name: config class}`` of the entries that have options, in name order."""
        self._load_plugins()
        return {section_name(n): self._entries[n].config for n in sorted(self._entries) if self._entries[n].config}

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries


class RegistryConfig:
    """Base of a root config whose entry sections come from ``REGISTRY`` (set by the loader, not fields).

    ``section(name)`` is the entry's options as loaded, or its defaults when the config was built in code.
    """

    REGISTRY: ClassVar[Registry]

    def section(self, name: str) -> Any:
        """The config of entry ``name`` (or of section ``name``); None when the entry has no options."""
        config = self.REGISTRY.sections().get(section_name(name))
        if config is None:
            self.REGISTRY.entry(name)  # an unknown name is an error listing the known ones
            return None
        sections = self.__dict__.setdefault("_sections", {})
        if section_name(name) not in sections:
            sections[section_name(name)] = config()
        return sections[section_name(name)]

    def set_section(self, name: str, value: Any) -> None:
        """Set the config of entry ``name`` (or of section ``name``): the loader, and code that builds configs."""
        config = self.REGISTRY.sections().get(section_name(name))
        if config is None or not isinstance(value, config):
            raise TypeError(f"{self.REGISTRY.kind} '{name}' takes {getattr(config, '__name__', 'no options')}, "
                            f"not {type(value).__name__}")
        self.__dict__.setdefault("_sections", {})[section_name(name)] = value
