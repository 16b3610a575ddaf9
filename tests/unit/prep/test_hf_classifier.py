"""The ``hf-classifier`` labeler against an unbatched reference forward of the same tiny BERT classifier."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from srp_megatron.config import ConfigError, load_config
from srp_megatron.errors import SRPError
from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.demo_corpus import demo_documents
from srp_megatron.prep.label.labelers.base import LABELERS, SegmentedDocument
from srp_megatron.prep.label.labelers.hf_classifier import HFClassifierLabeler, HFClassifierLabelerConfig

ID2LABEL = {0: "safe", 1: "unsafe", 2: "Violent", 3: "Controversial"}
MAX_LENGTH = 48


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the test machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tiny_tokenizer_dir, tmp_path_factory) -> str:
    """A 2-layer BERT sequence classifier over the tiny tokenizer (which has no pad token), saved locally."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = str(tmp_path_factory.mktemp("classifier"))
    shutil.copytree(tiny_tokenizer_dir, out, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(out)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # spread the logits so that all labels occur
        model.classifier.weight.mul_(40.0)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def docs() -> list[SegmentedDocument]:
    """Demo documents cut into fixed-size pieces, one piece far longer than MAX_LENGTH tokens."""
    out = []
    for i, d in enumerate(demo_documents(5, seed=5)):
        text = d["text"][:540]
        out.append(SegmentedDocument(f"d{i}", [text[j : j + 90] for j in range(0, len(text), 90)]))
    out.append(SegmentedDocument("long", ["Short start. ", next(iter(demo_documents(1, seed=9)))["text"][:600]]))
    return out


def reference_probs(model_dir: str, docs, context_chars: int) -> np.ndarray:
    """One unbatched forward per segment; context cut at the left by hand, over-long segments cut at the right."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.num_special_tokens_to_add(pair=True) == 0  # plain concatenation is the pair encoding
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows, cut_contexts = [], []
    for doc in docs:
        for i, seg in enumerate(doc.segments):
            context = "".join(doc.segments[:i])[-context_chars:] if context_chars else ""
            ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
            seg_ids = tok(seg, add_special_tokens=False)["input_ids"]
            if len(seg_ids) > MAX_LENGTH:
                ids = seg_ids[:MAX_LENGTH]
            else:
                room = MAX_LENGTH - len(seg_ids)
                ids = (ctx_ids[max(0, len(ctx_ids) - room) :] if room else []) + seg_ids
                cut_contexts.append(len(ctx_ids) > room)
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits
            rows.append(torch.softmax(logits, -1)[0].numpy())
    if context_chars:
        assert 0 < sum(cut_contexts) < len(cut_contexts)  # both whole and left-truncated contexts occur
    return np.stack(rows)


@pytest.fixture(scope="module")
def reference(model_dir, docs) -> dict[int, np.ndarray]:
    """Reference probabilities with 300, 0 and 2000 (the preset's) context characters."""
    return {n: reference_probs(model_dir, docs, n) for n in (300, 0, 2000)}


def reference_label(name: str) -> SegmentLabel:
    return {
        "safe": SegmentLabel(Label.safe),
        "unsafe": SegmentLabel(Label.unsafe),
        "Violent": SegmentLabel(Label.unsafe, ("Violent",)),
        "Controversial": SegmentLabel(Label.controversial),
    }[name]


def make(model_dir: str, **overrides) -> HFClassifierLabeler:
    values = {"model_dir": model_dir, "device": "cpu", "batch_size": 3, "max_length": MAX_LENGTH, "context_chars": 300}
    values.update(overrides)
    return LABELERS.get("hf-classifier")(load_config(HFClassifierLabelerConfig, values=values))


def test_batched_labels_match_unbatched_reference(model_dir, docs, reference):
    labeler = make(model_dir)
    out = labeler.label_documents(docs)
    ref = reference[300]
    flat = [lab for doc_labels in out for lab in doc_labels]
    assert [len(o) for o in out] == [len(d.segments) for d in docs]
    assert flat == [reference_label(ID2LABEL[int(k)]) for k in ref.argmax(-1)]
    assert len({lab.label for lab in flat}) >= 2  # the comparison can tell labels apart
    contexts = [("".join(d.segments[:i])[-300:]) for d in docs for i in range(len(d.segments))]
    probs = labeler.probabilities(contexts, [s for d in docs for s in d.segments])
    np.testing.assert_allclose(probs, ref, atol=2e-5)
    assert labeler.stats()["segments_truncated"] == 2  # the long segment, twice
    assert labeler.stats()["segments"] == len(flat)


def test_threshold_flags_by_non_safe_mass(model_dir, docs, reference):
    ref = reference[300]
    flagged_mass = 1.0 - ref[:, 0]
    threshold = float(np.median(flagged_mass))
    labeler = make(model_dir, unsafe_threshold=threshold)
    flat = [lab for doc_labels in labeler.label_documents(docs) for lab in doc_labels]
    expected = [
        reference_label(ID2LABEL[1 + int(p[1:].argmax())]) if m >= threshold else SegmentLabel(Label.safe)
        for p, m in zip(ref, flagged_mass, strict=True)
    ]
    assert flat == expected
    assert any(lab.label == Label.safe for lab in flat) and any(lab.label != Label.safe for lab in flat)


def test_label_mapping_is_configurable(model_dir, docs, reference):
    ref = reference[0]
    labeler = make(model_dir, context_chars=0, controversial_labels=[], unsafe_labels=["VIOLENT"])
    flat = [lab for doc_labels in labeler.label_documents(docs) for lab in doc_labels]
    mapping = {
        "safe": SegmentLabel(Label.safe),
        "unsafe": SegmentLabel(Label.unsafe, ("unsafe",)),  # no longer a plain-unsafe name: its name is the category
        "Violent": SegmentLabel(Label.unsafe),  # matched case-insensitively
        "Controversial": SegmentLabel(Label.unsafe, ("Controversial",)),
    }
    assert flat == [mapping[ID2LABEL[int(k)]] for k in ref.argmax(-1)]


def test_pickle_after_use(model_dir, docs):
    labeler = make(model_dir)
    first = labeler.label_documents(docs[:2])
    clone = pickle.loads(pickle.dumps(labeler))
    assert clone._model is None and clone.label_documents(docs[:2]) == first
    assert labeler.identity == clone.identity == f"hf-classifier:{model_dir.rstrip('/').split('/')[-1]}"


def test_load_errors(model_dir, tmp_path):
    with pytest.raises(SRPError, match="model_dir is empty"):
        HFClassifierLabeler(HFClassifierLabelerConfig())
    with pytest.raises(SRPError, match="is not a directory"):
        HFClassifierLabeler(HFClassifierLabelerConfig(model_dir=str(tmp_path / "missing")))
    with pytest.raises(SRPError, match="cannot load"):
        make(str(tmp_path)).label_documents([SegmentedDocument("d", ["x"])])
    with pytest.raises(SRPError, match="exceeds the model's 64 positions"):
        make(model_dir, max_length=65).label_documents([SegmentedDocument("d", ["x"])])
    with pytest.raises(SRPError, match="set safe_labels"):
        make(model_dir, safe_labels=["benign"]).label_documents([SegmentedDocument("d", ["x"])])
    if not torch.cuda.is_available():
        with pytest.raises(SRPError, match="CUDA is not available"):
            make(model_dir, device="cuda").label_documents([SegmentedDocument("d", ["x"])])


@pytest.mark.parametrize(
    "override, match",
    [("batch_size=0", "batch_size"), ("max_length=0", "max_length"), ("context_chars=-1", "context_chars"),
     ("unsafe_threshold=0", "unsafe_threshold"), ("unsafe_threshold=1.5", "unsafe_threshold"),
     ("unsafe_labels=[Safe]", "both safe_labels and unsafe_labels"), ("device=tpu", "device")],
)  # fmt: skip
def test_config_rules(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(HFClassifierLabelerConfig, overrides=[override])


@pytest.mark.gpu
def test_cuda_matches_cpu(model_dir, docs):
    cpu = make(model_dir).label_documents(docs)
    cuda = make(model_dir, device="cuda", precision="float32")
    assert cuda.label_documents(docs) == cpu
    assert str(cuda._model.device).startswith("cuda")


def test_preset(model_dir, docs, reference):
    from srp_megatron.config import resolve_preset
    from srp_megatron.prep.label.stage import LabelConfig, build_labeler

    path = [resolve_preset("hf-classifier", "label")]
    values = {"inputs": ["x"], "out": "y"}
    with pytest.raises(SRPError, match="hf_classifier.model_dir=DIR"):
        build_labeler(load_config(LabelConfig, path, values=values))
    overrides = [f"hf_classifier.model_dir={model_dir}", f"hf_classifier.max_length={MAX_LENGTH}"]
    labeler = build_labeler(load_config(LabelConfig, path, overrides, values))
    flat = [lab for doc_labels in labeler.label_documents(docs) for lab in doc_labels]
    assert flat == [reference_label(ID2LABEL[int(k)]) for k in reference[2000].argmax(-1)]


def test_empty_inputs(model_dir):
    labeler = make(model_dir)
    assert labeler.label_documents([]) == []
    assert labeler.label_documents([SegmentedDocument("empty", [])]) == [[]]
