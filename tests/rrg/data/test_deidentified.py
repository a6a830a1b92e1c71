"""De-identification markers never reach a model: the text it learns keeps every sentence that reads
well without them, cleaned, and leaves out those that need them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrg.data.deidentified import has_marker, without_markers

SECTIONS = Path(__file__).resolve().parents[3] / "rrg" / "data" / "resources" / "iu_xray" / "sections.jsonl"


@pytest.mark.parametrize(("report", "learnt"), [
    ("Negative chest x-XXXX.", "Negative chest x-ray."),
    ("The XXXX are intact. No pneumothorax.", "No pneumothorax."),
    ("Calcified granuloma (XXXX). No effusion.", "Calcified granuloma. No effusion."),
    ("Stable XXXX/XXXX. Heart size normal.", "Stable. Heart size normal."),
    ("Compared to ___, no change. Lungs are clear.", "Lungs are clear."),
    ("Heart size normal. Lungs clear.", "Heart size normal. Lungs clear."),
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
