"""The config loader: YAML + overrides into typed dataclasses, errors naming the key and the source."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest

from srp_megatron.config import ConfigError, load_config, resolve_preset, to_yaml


class Kind(enum.StrEnum):
    huggingface = "huggingface"
    megatron = "megatron"


@dataclass
class Inner:
    size: int = 1
    kind: Kind = Kind.huggingface
    maybe: Kind | None = None

    def __post_init__(self):
        if self.size < 0:
            raise ValueError(f"inner.size must be >= 0, got {self.size}")


@dataclass
class Root:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    names: list[str] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_yaml_flags_overrides_in_order(tmp_path):
    path = write(tmp_path, "name: from_yaml\ninner:\n  size: 3\n")
    cfg = load_config(Root, [path], ["inner.size=5"], values={"name": "from_flag"})
    assert cfg == Root(name="from_flag", inner=Inner(size=5), names=[], kinds=[])


def test_enums_are_spelled_as_their_values(tmp_path):
    # Members are lower-case and equal to their values, so YAML and the command line spell them the same way.
    path = write(tmp_path, "inner:\n  kind: megatron\n  maybe: huggingface\n")
    assert load_config(Root, [path]).inner.kind is Kind.megatron
    assert load_config(Root, [path]).inner.maybe is Kind.huggingface
    assert load_config(Root, overrides=["inner.kind=megatron"]).inner.kind is Kind.megatron
    assert load_config(Root, overrides=["kinds=[megatron,huggingface]"]).kinds == [Kind.megatron, Kind.huggingface]
    with pytest.raises(ConfigError, match=r"key 'kinds\[0\]': Invalid value 'spm', expected one of \[huggingface"):
        load_config(Root, overrides=["kinds=[spm]"])


@pytest.mark.parametrize(
    "yaml_text, overrides, match",
    [
        ("inner:\n  nope: 1\n", [], r"c\.yaml: key 'inner\.nope'"),
        ("", ["inner.size=abc"], r"command line: key 'inner\.size'"),
        (
            "",
            ["inner.kind=spm"],
            r"command line: key 'inner\.kind': Invalid value 'spm', expected one of \[huggingface, megatron\]",
        ),
        ("", ["inner.size=-2"], r"inner\.size must be >= 0, got -2"),
        ("", ["novalue"], r"not of the form key=value"),
        ("inner: [1, 2\n", [], r"c\.yaml: invalid YAML"),
        ("- a\n- b\n", [], r"expected a mapping"),
    ],
)
def test_errors_name_key_and_source(tmp_path, yaml_text, overrides, match):
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError, match=match):
        load_config(Root, [path], overrides)


def test_resolve_preset_lists_known_names():
    with pytest.raises(ConfigError, match="not found"):
        resolve_preset("no-such-preset", group="label")


def test_to_yaml_round_trips(tmp_path):
    cfg = Root(name="y", inner=Inner(size=2, kind=Kind.megatron), names=["a"])
    path = write(tmp_path, to_yaml(cfg))
    assert load_config(Root, [path]) == cfg
