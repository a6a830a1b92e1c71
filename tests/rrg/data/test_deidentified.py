"""De-identification markers never reach a model: the text it learns keeps every sentence that reads
well without them, cleaned, and leaves out those that need them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prompts.labeler import label_report
from prompts.vocabulary import CHEXBERT_LABELS
from rrg.data.deidentified import has_marker, without_markers

SECTIONS = Path(__file__).resolve().parents[3] / "rrg" / "data" / "resources" / "iu_xray" / "sections.jsonl"


@pytest.mark.parametrize(("report", "learnt"), [
    ("Negative chest x-XXXX.", "Negative chest x-ray."),
    ("The XXXX are intact. No pneumothorax.", "No pneumothorax."),
    ("Calcified granuloma (XXXX). No effusion.", "Calcified granuloma. No effusion."),
    ("Stable XXXX/XXXX. Heart size normal.", "Stable. Heart size normal."),
    ("Compared to ___, no change. Lungs are clear.", "Lungs are clear."),
    ("Heart size normal. Lungs clear.", "Heart size normal. Lungs clear."),
    # A sentence that states a finding keeps it, without the marker.
    ("XXXX opacity in the left lung base. Heart size normal.", "Opacity in the left lung base. Heart size normal."),
    ("Heart size is XXXX enlarged.", "Heart size is enlarged."),
    ("Minimal blunting of the costophrenic XXXX. No effusion.", "Minimal blunting of the costophrenic. No effusion."),
])
def test_markers_are_taken_out_with_the_sentences_that_need_them(report, learnt):
    assert without_markers(report) == learnt


def test_no_iu_report_keeps_a_marker():
    if not SECTIONS.is_file():
        pytest.skip("the IU sections file ships with the data module (rrg/data/resources)")
    reports = [json.loads(line) for line in SECTIONS.read_text().splitlines()]
    texts = [f"{r['findings']} {r['impression']}" for r in reports]
    assert sum(has_marker(t) for t in texts) > 500  # the corpus is full of them
    assert not any(has_marker(without_markers(t)) for t in texts)
    # What the reports state survives: the rules labels of the cleaned text are the report's (Support
    # Devices aside: IU masks the "wires" of "sternotomy XXXX", which the labeler then no longer reads).
    changed = sum(
        before != after
        for t in texts
        for label, before, after in zip(CHEXBERT_LABELS, label_report(t).values(), label_report(without_markers(t)).values())
        if label != "Support Devices"
    )
    assert changed <= len(texts) // 200, changed
