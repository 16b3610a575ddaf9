"""A labeler is one module that registers itself with its config class: `srp label` then takes it by name and
types its section (`NAME.key=value`) from the registry. Shown with a throwaway labeler registered here, and with
a plugin found through the `srp_megatron.labelers` entry-point group from the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from srp_megatron.cli import main
from srp_megatron.formats.labels import Label, SegmentLabel, iter_labelled_documents
from srp_megatron.prep.demo_corpus import write_demo_jsonl
from srp_megatron.prep.label.labelers import LABELERS, Labeler, SegmentedDocument
from srp_megatron.prep.segment import Segmenter, SegmenterConfig


@dataclass
class WordLabelerConfig:
    """Options of the throwaway ``word-test`` labeler."""

    word: str = "bomb"
    """A segment containing this word (lower case) is unsafe."""
    category: str = "Test"
    """Category of the unsafe segments."""


class WordLabeler(Labeler):
    """Unsafe when a segment contains the configured word."""

    def __init__(self, config: WordLabelerConfig):
        self.config = config

    @property
    def identity(self) -> str:
        return f"word-test:{self.config.word}"

    def label_documents(self, docs: Sequence[SegmentedDocument]) -> list[list[SegmentLabel]]:
        word, cat = self.config.word, self.config.category
        return [[SegmentLabel(Label.unsafe, (cat,)) if word in s.lower() else SegmentLabel(Label.safe)
                 for s in d.segments] for d in docs]


@pytest.fixture
def word_labeler():
    LABELERS.register("word-test", config=WordLabelerConfig)(WordLabeler)
    yield
    LABELERS.unregister("word-test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return write_demo_jsonl(str(tmp_path_factory.mktemp("corpus") / "demo.jsonl"), 60, seed=3)


def _expected_unsafe(corpus: str, word: str) -> int:
    """Segments containing ``word``, counted with the segmenter directly (not through srp label)."""
    segmenter = Segmenter(SegmenterConfig())
    with open(corpus, encoding="utf-8") as f:
        return sum(word in s.lower() for line in f for s in segmenter.split(json.loads(line)["text"]))


def test_registered_labeler_runs_through_srp_label(word_labeler, corpus, tmp_path):
    out = tmp_path / "labels"
    preset = tmp_path / "word.yaml"  # its preset, as conf/label/<name>.yaml would hold it
    preset.write_text("labeler: word-test\nword_test:\n  category: Preset\n")
    argv = ["label", corpus, "--out", str(out), "--config", str(preset), "--no-progress", "word_test.word=pipe"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    want = _expected_unsafe(corpus, "pipe")
    assert want > 0 and manifest["labels"]["unsafe"] == want
    assert manifest["categories"] == {"Preset": want}
    assert manifest["labeler"] == "word-test:pipe"
    assert manifest["config"]["word_test"] == {"word": "pipe", "category": "Preset"}
    docs = list(iter_labelled_documents(str(out)))
    assert sum(lab.label == Label.unsafe for d in docs for lab in d.labels) == want


def test_registered_labeler_section_is_typed(word_labeler, corpus, tmp_path, capsys):
    argv = ["label", corpus, "--out", str(tmp_path / "x"), "--labeler", "word-test", "word_test.colour=red"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "word_test.colour" in err


def test_unregistered_labeler_has_no_section(corpus, tmp_path, capsys):
    assert "word-test" not in LABELERS
    assert main(["label", corpus, "--out", str(tmp_path / "x"), "--labeler", "keyword", "word_test.word=x"]) == 2
    assert "word_test" in capsys.readouterr().err


#: A third-party module: it registers its labeler (and config) when the entry point loads it.
PLUGIN = """
from dataclasses import dataclass

from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.label.labelers import LABELERS, Labeler


@dataclass
class PluginConfig:
    word: str = "bomb"


@LABELERS.register("word-plugin", config=PluginConfig)
class PluginLabeler(Labeler):
    def __init__(self, config):
        self.word = config.word

    @property
    def identity(self):
        return "word-plugin"

    def label_documents(self, docs):
        return [[SegmentLabel(Label.unsafe if self.word in s.lower() else Label.safe) for s in d.segments]
                for d in docs]
"""


def test_plugin_labeler_from_an_entry_point(corpus, tmp_path):
    site = tmp_path / "site"
    dist = site / "srp_word_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: srp-word-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[srp_megatron.labelers]\nword = srp_word_plugin\n")
    (site / "srp_word_plugin.py").write_text(PLUGIN)
    out = tmp_path / "labels"
    srp = os.path.join(os.path.dirname(sys.executable), "srp")
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([srp, "label", corpus, "--out", str(out), "--labeler", "word-plugin", "--no-progress",
                           "word_plugin.word=pipe"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"]["unsafe"] == _expected_unsafe(corpus, "pipe") > 0
