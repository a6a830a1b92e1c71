"""The rule labeler against hand-labelled sentences and reports.

Each case names only the labels it is about; every other label must be blank or negative (never
positive or uncertain), which catches a phrase leaking into the wrong label.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.clinical import clinical_efficacy, per_label_scores
from prompts.labeler import label_report
from prompts.vocabulary import CHEXBERT_LABELS, TOP5_LABELS

P, N, U, B = "positive", "negative", "uncertain", "blank"

NEGATION = [
    ("No pneumothorax or pleural effusion.", {"Pneumothorax": N, "Pleural Effusion": N}),
    (
        "No focal consolidation, pneumothorax, or large pleural effusion.",
        {"Consolidation": N, "Pneumothorax": N, "Pleural Effusion": N},
    ),
    (
        "Negative for pneumothorax, pleural effusion or focal airspace consolidation.",
        {"Pneumothorax": N, "Pleural Effusion": N, "Consolidation": N},
    ),
    ("The lungs are free of focal airspace disease.", {"Lung Opacity": N}),
    ("Lungs are clear without evidence of pneumonia or edema.", {"Pneumonia": N, "Edema": N}),
    ("There is no evidence of pulmonary edema.", {"Edema": N}),
    ("Pneumothorax is not seen.", {"Pneumothorax": N}),
    ("The heart is not enlarged.", {"Cardiomegaly": N}),
    ("Heart size is normal.", {"Cardiomegaly": N}),
    ("Normal heart size and mediastinal contours.", {"Cardiomegaly": N, "Enlarged Cardiomediastinum": N}),
    (
        "The cardiomediastinal silhouette is within normal limits for size and contour.",
        {"Enlarged Cardiomediastinum": N},
    ),
    ("Heart size is at the upper limits of normal.", {"Cardiomegaly": N}),
    ("The heart size and pulmonary vascularity appear within normal limits.", {"Cardiomegaly": N}),
    ("No acute bony abnormality. No displaced rib fractures.", {"Fracture": N}),
    ("No definite focal consolidation.", {"Consolidation": N}),
    ("Previously seen left pneumothorax is no longer visualized.", {"Pneumothorax": N}),
    ("The endotracheal tube has been removed.", {"Support Devices": N}),
    ("Mild cardiomegaly without pulmonary edema.", {"Cardiomegaly": P, "Edema": N}),
    ("No pneumothorax, the heart is enlarged.", {"Pneumothorax": N, "Cardiomegaly": P}),
    (
        "There is no pneumothorax and there is a small left pleural effusion.",
        {"Pneumothorax": N, "Pleural Effusion": P},
    ),
    ("No new consolidation.", {"Consolidation": N}),
    ("Neither effusion nor pneumothorax is present.", {"Pleural Effusion": N, "Pneumothorax": N}),
    # A singular verb's "normal" is about its own subject, not the finding before "and".
    (
        "There is a small left pleural effusion and the heart size is within normal limits.",
        {"Pleural Effusion": P, "Cardiomegaly": N},
    ),
    (
        "There is a right pneumothorax and the mediastinum is unremarkable.",
        {"Pneumothorax": P, "Enlarged Cardiomediastinum": N},
    ),
    (
        "The heart size, mediastinal contours, and pulmonary vasculature are within normal limits.",
        {"Cardiomegaly": N, "Enlarged Cardiomediastinum": N},
    ),
]

UNCERTAINTY = [
    ("Small left pleural effusion cannot be excluded.", {"Pleural Effusion": U}),
    ("Cannot exclude early pneumonia.", {"Pneumonia": U}),
    ("Pneumonia is not excluded.", {"Pneumonia": U}),
    ("Possible right lower lobe pneumonia.", {"Pneumonia": U}),
    ("Left basilar opacity may represent atelectasis.", {"Lung Opacity": P, "Atelectasis": U}),
    (
        "Bibasilar opacities, atelectasis versus pneumonia.",
        {"Lung Opacity": P, "Atelectasis": U, "Pneumonia": U},
    ),
    ("Streaky opacity in the left base, atelectasis or scarring.", {"Lung Opacity": P, "Atelectasis": U}),
    ("Findings are suspicious for pneumonia.", {"Pneumonia": U}),
    ("Borderline cardiomegaly.", {"Cardiomegaly": U}),
    ("The heart is borderline enlarged.", {"Cardiomegaly": U}),
    ("Heart size is stable.", {"Cardiomegaly": U}),
    ("Stable cardiomediastinal silhouette.", {"Enlarged Cardiomediastinum": U}),
    ("Mild pulmonary vascular congestion.", {"Edema": U}),
    ("Probable small right pleural effusion.", {"Pleural Effusion": U}),
    ("Opacity concerning for pneumonia in the right upper lobe.", {"Lung Opacity": P, "Pneumonia": U}),
    ("Questionable nodule in the right upper lobe.", {"Lung Lesion": U}),
]

POSITIVE = [
    ("Mild cardiomegaly.", {"Cardiomegaly": P}),
    ("The heart is enlarged.", {"Cardiomegaly": P}),
    ("The cardiac silhouette is mildly enlarged.", {"Cardiomegaly": P}),
    ("Stable cardiomegaly.", {"Cardiomegaly": P}),
    ("Cardiomegaly is unchanged.", {"Cardiomegaly": P}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": P}),
    ("The cardiomediastinal silhouette is enlarged.", {"Enlarged Cardiomediastinum": P}),
    (
        "Heart size moderately enlarged, stable mediastinal contours.",
        {"Cardiomegaly": P, "Enlarged Cardiomediastinum": U},
    ),
    ("Small bilateral pleural effusions.", {"Pleural Effusion": P}),
    ("Right lower lobe consolidation consistent with pneumonia.", {"Consolidation": P, "Pneumonia": P}),
    ("Bibasilar subsegmental atelectasis.", {"Atelectasis": P}),
    ("Moderate pulmonary edema.", {"Edema": P}),
    ("Small right apical pneumothorax.", {"Pneumothorax": P}),
    ("Biapical pleural thickening.", {"Pleural Other": P}),
    ("Healed left rib fractures.", {"Fracture": P}),
    ("Right IJ central venous catheter with tip in the SVC.", {"Support Devices": P}),
    ("Left chest wall pacemaker with leads in the right atrium and ventricle.", {"Support Devices": P}),
    ("A 9 mm nodule in the right upper lobe.", {"Lung Lesion": P}),
    ("Increased interstitial markings.", {"Lung Opacity": P}),
    ("Plate-like atelectasis in the left base.", {"Atelectasis": P}),
    ("Most likely atelectasis in the right base.", {"Atelectasis": P}),
]

NO_CHANGE = [
    ("No change in the small left pleural effusion.", {"Pleural Effusion": P}),
    ("No significant interval change in cardiomegaly.", {"Cardiomegaly": P}),
    (
        "No significant change in pneumothorax or right pleural fluid.",
        {"Pneumothorax": P, "Pleural Effusion": P},
    ),
    ("Heart size is unchanged.", {"Cardiomegaly": U}),
]

RESOLVED = [
    ("Interval resolution of the left pleural effusion.", {"Pleural Effusion": N}),
    ("The left apical pneumothorax has resolved.", {"Pneumothorax": N}),
    ("Right lower lobe pneumonia has cleared.", {"Pneumonia": N}),
    ("Resolving right lower lobe pneumonia.", {"Pneumonia": P}),
]

LATERALITY = [
    ("No right effusion. Small left pleural effusion.", {"Pleural Effusion": P}),
    ("Left lower lobe atelectasis. The right lung is clear.", {"Atelectasis": P}),
    ("No left pneumothorax, small right pneumothorax.", {"Pneumothorax": P}),
    ("No pneumothorax on the right; a small left pneumothorax persists.", {"Pneumothorax": P}),
]

DEIDENTIFIED = [
    ("There is no XXXX of pneumothorax.", {"Pneumothorax": N}),
    ("XXXX XXXX opacities in the left base.", {"Lung Opacity": P}),
    ("Heart size XXXX.", {}),
    ("There are XXXX bilateral pleural effusions.", {"Pleural Effusion": P}),
    ("Surgical XXXX in the right upper quadrant. No pneumothorax.", {"Pneumothorax": N}),
    ("Dr. XXXX was notified. Possible left lower lobe pneumonia.", {"Pneumonia": U}),
]

NOT_A_MENTION = [
    ("Small pericardial effusion.", {}),
    ("Kerley B lines at the bases.", {}),
    ("The trachea is midline.", {}),
    ("Compression deformity with collapse of the T8 vertebral body.", {}),
    ("Calcified granuloma in the right upper lobe.", {}),
    ("Sequelae of prior granulomatous infection.", {}),
    ("Obscuration of the right heart border.", {}),
]

CASES = [
    pytest.param(text, expected, id=f"{group}-{i}")
    for group, cases in [
        ("negation", NEGATION),
        ("uncertainty", UNCERTAINTY),
        ("positive", POSITIVE),
        ("no_change", NO_CHANGE),
        ("resolved", RESOLVED),
        ("laterality", LATERALITY),
        ("xxxx", DEIDENTIFIED),
        ("not_a_mention", NOT_A_MENTION),
    ]
    for i, (text, expected) in enumerate(cases)
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_sentence_labels(text, expected):
    labels = label_report(text)
    for label, status in expected.items():
        assert labels[label] == status, f"{label}: {labels[label]} != {status} in {text!r}"
    for label in CHEXBERT_LABELS:
        if label not in expected and label != "No Finding":
            assert labels[label] in (B, N), f"{label} unexpectedly {labels[label]} in {text!r}"


def test_output_has_all_fourteen_labels_in_chexbert_order():
    assert list(label_report("Normal chest.")) == list(CHEXBERT_LABELS)


def test_no_finding_on_a_normal_report():
    labels = label_report(
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear. "
        "No pneumothorax or pleural effusion."
    )
    assert labels["No Finding"] == P


def test_no_finding_ignores_support_devices():
    labels = label_report("Right PICC with tip in the SVC. Lungs are clear. No effusion.")
    assert labels["Support Devices"] == P and labels["No Finding"] == P


@pytest.mark.parametrize(
    "report",
    [
        "Small left pleural effusion.",
        "Possible right lower lobe pneumonia.",
        "Lungs are clear. Degenerative changes of the thoracic spine.",
        "Lungs are clear. Calcified granuloma in the left upper lobe.",
        "Lungs are clear. Tortuous thoracic aorta.",
        "Hyperinflated lungs consistent with emphysema.",
    ],
)
def test_no_finding_blank_when_anything_else_is_stated_or_suspected(report):
    assert label_report(report)["No Finding"] == B


def test_negated_other_abnormality_keeps_no_finding():
    assert label_report("No emphysema. No acute bony abnormality. Lungs clear.")["No Finding"] == P


def test_multiple_mentions_positive_wins():
    labels = label_report("No right pleural effusion. There is a small left pleural effusion.")
    assert labels["Pleural Effusion"] == P


def test_empty_report_is_all_blank_but_no_finding():
    labels = label_report("")
    assert labels["No Finding"] == P
    assert all(v == B for k, v in labels.items() if k != "No Finding")


# --- agreement with hand labels on real reports ----------------------------------------------------

HAND_LABELS = Path(__file__).parent / "data" / "iu_val_hand_labels.json"


def _hand_labelled():
    reports = json.loads(HAND_LABELS.read_text())["reports"]
    truth = []
    for report in reports:
        labels = dict.fromkeys(CHEXBERT_LABELS, B)
        labels.update(dict.fromkeys(report["uncertain"], U))
        labels.update(dict.fromkeys(report["positive"], P))
        truth.append(labels)
    return [label_report(r["report"]) for r in reports], truth


@pytest.mark.parametrize("mode", ["pos", "pos_unc"])
def test_agreement_with_hand_labelled_iu_reports(mode):
    """80 IU val reports labelled by hand; the labels with support must each reach F1 0.85 on average."""
    predicted, truth = _hand_labelled()
    rows = [row for row in per_label_scores(predicted, truth, mode) if row["support"] > 0]
    macro = sum(row["f1"] for row in rows) / len(rows)
    top5 = [row["f1"] for row in rows if row["label"] in TOP5_LABELS]
    assert macro >= 0.85, rows
    assert min(top5) >= 0.85, rows
    assert clinical_efficacy(predicted, truth)[f"ce/{mode}/micro/all14/f1"] >= 0.9


def test_agreement_on_the_five_common_findings():
    """60 IU reports stating a top-5 finding, hand-labelled blind: macro F1 over the five >= 0.85."""
    data = json.loads((HAND_LABELS.parent / "iu_top5_hand_labels.json").read_text())
    predicted, truth = [], []
    for report in data["reports"]:
        labels = label_report(report["report"])
        expected = dict.fromkeys(TOP5_LABELS, B)
        expected.update(dict.fromkeys(report["uncertain"], U))
        expected.update(dict.fromkeys(report["positive"], P))
        predicted.append({name: labels[name] for name in TOP5_LABELS})
        truth.append(expected)
    metrics = clinical_efficacy(predicted, truth)
    assert metrics["ce/pos/macro/top5/f1"] >= 0.85
    assert metrics["ce/pos_unc/macro/top5/f1"] >= 0.85
