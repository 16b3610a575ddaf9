"""One enum convention: members equal to their YAML values (so the loader needs no name/value mapping), lower-case."""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil

import srp_megatron

#: Spelled as megatron-core spells the value (``TransformerConfig.normalization``), which YAML uses too.
MEGATRON_SPELLING = {"Normalization"}


def package_enums() -> list[type[enum.Enum]]:
    """Every enum class defined in the package (command modules hold none)."""
    found = []
    for info in pkgutil.walk_packages(srp_megatron.__path__, "srp_megatron."):
        if info.name.endswith(".__main__"):
            continue
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values() if inspect.isclass(obj) and issubclass(obj, enum.Enum)
                  and obj.__module__ == module.__name__]
    return found


def test_enum_members_are_lower_case_and_equal_their_values():
    enums = package_enums()
    assert {"Label", "SpanType", "TemplateKind", "LossAction", "Device", "Recompute"} <= {e.__name__ for e in enums}
    bad = [f"{e.__name__}.{m.name}" for e in enums for m in e
           if (isinstance(m.value, str) and m.name != m.value)
           or (e.__name__ not in MEGATRON_SPELLING and m.name != m.name.lower())]
    assert bad == []


def test_one_device_enum():
    assert [e for e in package_enums() if e.__name__ == "Device"] == [srp_megatron.config.device.Device]
