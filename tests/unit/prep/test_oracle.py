"""The oracle labeler: labels from the rows, segment- or document-level, failures counted not crashed."""

from __future__ import annotations

import pytest

from srp_megatron.formats.labels import Label, SegmentLabel
from srp_megatron.prep.label.labelers.base import LabelFailure, SegmentedDocument
from srp_megatron.prep.label.labelers.oracle import OracleLabeler, OracleLabelerConfig, Presegmented

ORACLE = OracleLabeler(OracleLabelerConfig())
SEGMENTS = [
    {"text": "Patient P1 has asthma. ", "label": "safe"},
    {"text": "Prescribe D7.", "label": "Unsafe", "categories": ["allergy"], "rewrite": "Do not prescribe D7."},
]


def test_segment_level_rows_are_the_segmentation():
    got = ORACLE.presegment({"segments": SEGMENTS}, "Patient P1 has asthma. Prescribe D7.")
    assert got == Presegmented(
        ["Patient P1 has asthma. ", "Prescribe D7."],
        [SegmentLabel(Label.safe), SegmentLabel(Label.unsafe, ("allergy",))],
        [None, "Do not prescribe D7."],
    )
    assert ORACLE.text_from_row({"segments": SEGMENTS}) == "Patient P1 has asthma. Prescribe D7."
    doc = SegmentedDocument("d", got.segments, {"segments": SEGMENTS})
    assert ORACLE.label_documents([doc]) == [got.labels]


def test_document_level_label_applies_to_every_segment():
    doc = SegmentedDocument("d", ["a. ", "b. ", "c."], {"label": "controversial", "categories": "Violent"})
    assert ORACLE.label_documents([doc]) == [[SegmentLabel(Label.controversial, ("Violent",))] * 3]
    custom = OracleLabeler(OracleLabelerConfig(label_field="verdict", categories_field="cats"))
    doc = SegmentedDocument("d", ["a"], {"verdict": "UNSAFE", "cats": ["PII"]})
    assert custom.label_documents([doc]) == [[SegmentLabel(Label.unsafe, ("PII",))]]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({}, "oracle_missing_label"),
        ({"label": "maybe"}, "oracle_invalid_label"),
        ({"label": "safe", "categories": [1]}, "oracle_invalid_label"),
        ({"segments": []}, "oracle_invalid_segments"),
        ({"segments": ["text"]}, "oracle_invalid_segments"),
        ({"segments": [{"text": 3, "label": "safe"}]}, "oracle_invalid_segments"),
        ({"segments": [{"text": "a", "label": "safe", "rewrite": 5}]}, "oracle_invalid_segments"),
        ({"segments": [{"text": "a"}]}, "oracle_missing_label"),
        ({"segments": [{"text": "a", "label": "fine"}]}, "oracle_invalid_label"),
    ],
)
def test_failures_have_reasons(row, reason):
    (result,) = ORACLE.label_documents([SegmentedDocument("d", ["a"], row)])
    assert isinstance(result, LabelFailure) and result.reason == reason


def test_text_must_match_the_segments():
    got = ORACLE.presegment({"segments": SEGMENTS}, "Something else entirely.")
    assert isinstance(got, LabelFailure) and got.reason == "oracle_text_mismatch"
    doc = SegmentedDocument("d", ["Patient P1 has asthma.", " Prescribe D7."], {"segments": SEGMENTS})
    (result,) = ORACLE.label_documents([doc])
    assert isinstance(result, LabelFailure) and result.reason == "oracle_text_mismatch"
    assert ORACLE.text_from_row({"segments": [{"text": "a"}]}) is None
