"""What a phantom shows: findings read off a report's CheXbert labels and MedKLIP triplets.

Labels decide *what* is drawn (positive: drawn; uncertain: drawn mild; negative/blank: not);
the report's present triplets of the matching entities decide *where* (side and zone). When the
report names no side, one is chosen from the study id, so the same report always gives the
same phantom.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

FINDING_KINDS: tuple[str, ...] = (
    "cardiomegaly",
    "widened_mediastinum",
    "pleural_effusion",
    "pneumothorax",
    "consolidation",
    "opacity",
    "edema",
    "atelectasis",
    "nodule",
    "mass",
    "calcified_granuloma",
    "rib_fracture",
    "clavicle_fracture",
    "pleural_thickening",
    "hyperinflation",
    "hiatal_hernia",
    "central_line",
    "ett",
    "ng_tube",
    "chest_tube",
    "sternotomy_wires",
    "pacemaker",
)
DEVICE_KINDS = ("central_line", "ett", "ng_tube", "chest_tube", "sternotomy_wires", "pacemaker")
SIDES = ("left", "right", "bilateral", "midline")
ZONES = ("upper", "mid", "lower", "apical", "basal", "whole")
MILD = 0.3  # severity of a finding the report states as uncertain
# What the phantoms of a report look like: raised whenever a report is drawn differently, so that a demo
# set built by an older rrg is built again (rrg.demo.data). 2: devices drawn on "No Finding" reports.
PHANTOM_VERSION = 2


@dataclass(frozen=True)
class PhantomFinding:
    """One finding to draw: what, on which side of the patient, where, and how much."""

    kind: str
    side: str  # "left" | "right" | "bilateral" | "midline" (the patient's side)
    zone: str  # "upper" | "mid" | "lower" | "apical" | "basal" | "whole"
    severity: float  # 0..1

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {self.side!r}")
        if self.zone not in ZONES:
            raise ValueError(f"zone must be one of {ZONES}, got {self.zone!r}")
        if not 0.0 <= self.severity <= 1.0:
            raise ValueError(f"severity must be in [0, 1], got {self.severity}")

    @property
    def sides(self) -> tuple[str, ...]:
        """The patient sides the finding is drawn on."""
        return {"bilateral": ("right", "left"), "midline": ()}.get(self.side, (self.side,))


# MedKLIP position -> (side or None, zone or None).
POSITION_PLACE: dict[str, tuple[str | None, str | None]] = {
    "left_hilar": ("left", "mid"),
    "right_hilar": ("right", "mid"),
    "hilar_unspec": (None, "mid"),
    "left_pleural": ("left", None),
    "right_pleural": ("right", None),
    "left_diaphragm": ("left", "basal"),
    "right_diaphragm": ("right", "basal"),
    "diaphragm_unspec": (None, "basal"),
    "retrocardiac": ("left", "lower"),
    "lower_left_lobe": ("left", "lower"),
    "upper_left_lobe": ("left", "upper"),
    "lower_right_lobe": ("right", "lower"),
    "middle_right_lobe": ("right", "mid"),
    "upper_right_lobe": ("right", "upper"),
    "left_lower_lung": ("left", "lower"),
    "left_mid_lung": ("left", "mid"),
    "left_upper_lung": ("left", "upper"),
    "left_apical_lung": ("left", "apical"),
    "left_lung_unspec": ("left", None),
    "right_lower_lung": ("right", "lower"),
    "right_mid_lung": ("right", "mid"),
    "right_upper_lung": ("right", "upper"),
    "right_apical_lung": ("right", "apical"),
    "right_lung_unspec": ("right", None),
    "lung_apices": ("bilateral", "apical"),
    "lung_bases": ("bilateral", "basal"),
    "left_costophrenic": ("left", "basal"),
    "right_costophrenic": ("right", "basal"),
    "costophrenic_unspec": (None, "basal"),
    "cardiophrenic_sulcus": (None, "lower"),
    "heart_border": (None, "lower"),
}

# Where a "calcification" triplet is a calcified granuloma (not aortic, pleural or cardiac calcification).
GRANULOMA_POSITIONS = {
    position for position in POSITION_PLACE if "lung" in position or "lobe" in position or "hilar" in position
} | {"retrocardiac", "lung_apices", "unspecified", "parenchymal", "pulmonary"}

# CheXbert label -> the MedKLIP entities whose present triplets place it.
LABEL_ENTITIES: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("effusion", "fluid", "blunt"),
    "Pneumothorax": ("pneumothorax", "air"),
    "Consolidation": ("consolidation", "pneumonia", "infiltrate", "aspiration", "process"),
    "Pneumonia": ("pneumonia", "consolidation", "infiltrate", "aspiration", "process"),
    "Lung Opacity": ("opacity", "density", "infiltrate", "marking", "scar", "disease", "process"),
    "Edema": ("edema", "congestion", "chf", "redistribution", "engorgement"),
    "Atelectasis": ("atelectasis", "collapse", "loss", "crowd"),
    "Lung Lesion": ("mass", "nodule", "lesion", "calcification", "density"),
    "Fracture": ("fracture", "deformity"),
    "Pleural Other": ("thicken", "scar", "blunt", "calcification"),
}
DEVICE_ENTITIES = (
    "tube",
    "line",
    "catheter",
    "picc",
    "pacemaker",
    "lead",
    "wire",
    "device",
    "hardware",
    "stent",
)

# Severity range of a positive finding; drawn within it from the study id.
SEVERITY_RANGE: dict[str, tuple[float, float]] = {
    "cardiomegaly": (0.4, 1.0),
    "widened_mediastinum": (0.4, 1.0),
    "pleural_effusion": (0.4, 1.0),
    "pneumothorax": (0.4, 1.0),
    "consolidation": (0.5, 1.0),
    "opacity": (0.4, 0.9),
    "edema": (0.4, 1.0),
    "atelectasis": (0.4, 1.0),
    "nodule": (0.3, 1.0),
    "mass": (0.4, 1.0),
    "calcified_granuloma": (0.5, 1.0),
    "rib_fracture": (0.5, 1.0),
    "clavicle_fracture": (0.5, 1.0),
    "pleural_thickening": (0.4, 1.0),
    "hyperinflation": (0.4, 1.0),
    "hiatal_hernia": (0.5, 1.0),
}

# Where a finding goes when the report does not say (most common site first).
DEFAULT_ZONE: dict[str, tuple[str, ...]] = {
    "pleural_effusion": ("basal",),
    "pneumothorax": ("apical",),
    "consolidation": ("lower", "upper", "mid"),
    "opacity": ("lower", "mid", "upper"),
    "atelectasis": ("basal", "lower", "mid"),
    "nodule": ("upper", "mid", "lower"),
    "mass": ("upper", "mid", "lower"),
    "calcified_granuloma": ("upper", "mid", "lower"),
    "rib_fracture": ("mid", "lower", "upper"),
    "pleural_thickening": ("apical", "lower"),
}
OTHER_SIDE = {"left": "right", "right": "left"}
MIDLINE_KINDS = (
    "cardiomegaly",
    "widened_mediastinum",
    "hyperinflation",
    "hiatal_hernia",
    "ett",
    "ng_tube",
    "sternotomy_wires",
)
BILATERAL_KINDS = ("edema", "hyperinflation")


def _fraction(study_id: str, purpose: str) -> float:
    """A deterministic number in [0, 1) from the study id."""
    digest = hashlib.sha256(f"{study_id}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


def _choose(study_id: str, purpose: str, options: Sequence[str]) -> str:
    return options[int(_fraction(study_id, purpose) * len(options))]


def _severity(study_id: str, kind: str, status: str) -> float:
    if kind in DEVICE_KINDS:
        return 1.0
    if status == "uncertain":
        return MILD
    low, high = SEVERITY_RANGE[kind]
    return round(low + (high - low) * _fraction(study_id, f"{kind}:severity"), 3)


def _present(triplets: list[dict], entities: Sequence[str]) -> list[dict]:
    return [t for t in triplets if t.get("exist") == 1 and t.get("entity") in entities]


def _places(triplets: list[dict]) -> list[tuple[str | None, str | None]]:
    """Distinct (side, zone) places the triplets' positions name, in report order."""
    places: list[tuple[str | None, str | None]] = []
    for triplet in triplets:
        place = POSITION_PLACE.get(triplet.get("position", ""), (None, None))
        if place != (None, None) and place not in places:
            places.append(place)
    return places


def _merge_sides(places: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Distinct places, with a left and a right of one zone merged into one bilateral finding."""
    merged: list[tuple[str, str]] = []
    for side, zone in places:
        both = {("left", zone), ("right", zone), ("bilateral", zone)}
        if ("bilateral", zone) in merged:
            continue
        if side == "bilateral" or (OTHER_SIDE[side], zone) in merged:
            merged = [p for p in merged if p not in both] + [("bilateral", zone)]
        elif (side, zone) not in merged:
            merged.append((side, zone))
    return merged


def _findings_at(study_id: str, kind: str, status: str, triplets: list[dict]) -> list[PhantomFinding]:
    """One finding per distinct place the report gives (up to three), defaults from the id."""
    severity = _severity(study_id, kind, status)
    if kind in MIDLINE_KINDS:
        return [PhantomFinding(kind, "midline", "whole", severity)]
    if kind in BILATERAL_KINDS:
        return [PhantomFinding(kind, "bilateral", "whole", severity)]
    places = _places(triplets) or [(None, None)]
    sides = [side for side, _ in places if side]
    resolved = []
    for side, zone in places:
        # A zone named without a side takes the side named elsewhere in the report, else the id's.
        side = side or (sides[0] if sides else _choose(study_id, f"{kind}:side", ("right", "left")))
        zone = zone or _choose(study_id, f"{kind}:zone", DEFAULT_ZONE.get(kind, ("whole",)))
        if kind == "pleural_effusion":
            zone = "basal"  # fluid lies dependent whatever the triplet's position
        resolved.append((side, zone))
    return [PhantomFinding(kind, side, zone, severity) for side, zone in _merge_sides(resolved)[:3]]


def _lesion_kind(triplets: list[dict]) -> str:
    entities = {t["entity"] for t in triplets}
    if "mass" in entities:
        return "mass"
    if entities == {"calcification"}:
        return "calcified_granuloma"
    return "nodule"


def _device_kinds(study_id: str, triplets: list[dict]) -> list[tuple[str, str]]:
    """(device kind, patient side) for each device the triplets name."""
    devices: list[tuple[str, str]] = []
    for triplet in triplets:
        entity, position = triplet["entity"], triplet.get("position", "")
        side = POSITION_PLACE.get(position, (None, None))[0]
        if entity == "tube":
            if position == "stomach":
                kind = "ng_tube"
            elif "pleural" in position or "lung" in position or "costophrenic" in position:
                kind = "chest_tube"
            else:
                kind = "ett"
        elif entity in ("line", "catheter", "picc"):
            kind = "central_line"
        elif entity in ("pacemaker", "lead"):
            kind = "pacemaker"
        elif entity == "wire":
            kind = "sternotomy_wires"
        else:  # "device", "hardware", "stent": the report does not say which
            kind = _choose(study_id, "device", ("pacemaker", "central_line", "sternotomy_wires"))
        if kind not in [k for k, _ in devices]:
            devices.append((kind, _device_side(study_id, kind, side)))
    if not devices:  # "support devices" with no device named: draw a common one
        kind = _choose(study_id, "device", ("pacemaker", "central_line", "ett", "sternotomy_wires"))
        devices.append((kind, _device_side(study_id, kind, None)))
    return devices


def _device_side(study_id: str, kind: str, side: str | None) -> str:
    """The patient side a device is drawn on: midline devices, else the report's, else a default."""
    if kind in MIDLINE_KINDS:
        return "midline"
    if side in OTHER_SIDE:
        return side
    # Pacemakers go under the left clavicle unless the report says otherwise.
    return "left" if kind == "pacemaker" else _choose(study_id, f"{kind}:side", ("right", "left"))


def findings_from_report(study_id: str, labels: dict[str, str], triplets: list[dict]) -> list[PhantomFinding]:
    """Findings a phantom of this report shows, placed where its triplets put them.

    A "No Finding" report may still state a support device (CheXpert's No Finding leaves Support
    Devices out): its phantom shows the device and nothing else.
    """
    drawn = {label: status for label, status in labels.items() if status in ("positive", "uncertain")}
    if labels.get("No Finding") == "positive":
        drawn = {label: status for label, status in drawn.items() if label == "Support Devices"}
    findings: list[PhantomFinding] = []

    def add(kind: str, label: str, entities: Sequence[str] = ()) -> None:
        findings.extend(_findings_at(study_id, kind, drawn[label], _present(triplets, entities)))

    if "Cardiomegaly" in drawn:
        add("cardiomegaly", "Cardiomegaly")
    elif "Enlarged Cardiomediastinum" in drawn:
        add("widened_mediastinum", "Enlarged Cardiomediastinum")
    for label, kind in (
        ("Pleural Effusion", "pleural_effusion"),
        ("Pneumothorax", "pneumothorax"),
        ("Lung Opacity", "opacity"),
        ("Edema", "edema"),
        ("Atelectasis", "atelectasis"),
    ):
        if label in drawn:
            add(kind, label, LABEL_ENTITIES[label])
    for label in ("Consolidation", "Pneumonia"):  # pneumonia is drawn as its consolidation
        if label in drawn and not any(f.kind == "consolidation" for f in findings):
            add("consolidation", label, LABEL_ENTITIES[label])
    if "Lung Lesion" in drawn:
        lesions = _present(triplets, LABEL_ENTITIES["Lung Lesion"])
        add(_lesion_kind(lesions), "Lung Lesion", LABEL_ENTITIES["Lung Lesion"])
    if "Fracture" in drawn:
        fractures = _present(triplets, LABEL_ENTITIES["Fracture"])
        clavicle = any(t.get("position") == "clavicle" for t in fractures)
        add("clavicle_fracture" if clavicle else "rib_fracture", "Fracture", LABEL_ENTITIES["Fracture"])
    if "Pleural Other" in drawn:
        add("pleural_thickening", "Pleural Other", LABEL_ENTITIES["Pleural Other"])
    if "Support Devices" in drawn:
        for kind, side in _device_kinds(study_id, _present(triplets, DEVICE_ENTITIES)):
            findings.append(PhantomFinding(kind, side, "whole", 1.0))
    if labels.get("No Finding") != "positive":
        findings.extend(_findings_without_label(study_id, triplets, {f.kind for f in findings}))
    return findings


def _findings_without_label(study_id: str, triplets: list[dict], already: set[str]) -> list[PhantomFinding]:
    """Findings no CheXbert label covers but the report states: hyperinflation, hernia, granulomas."""
    extra: list[PhantomFinding] = []
    if _present(triplets, ("emphysema", "hyperinflate")) and "hyperinflation" not in already:
        extra.extend(_findings_at(study_id, "hyperinflation", "positive", []))
    if _present(triplets, ("hernia",)) and "hiatal_hernia" not in already:
        extra.extend(_findings_at(study_id, "hiatal_hernia", "positive", []))
    # "Calcified granuloma" reaches the triplets as a calcification in the lung or hilum.
    granulomas = [
        t for t in _present(triplets, ("calcification",)) if t.get("position") in GRANULOMA_POSITIONS
    ]
    if granulomas and not already & {"nodule", "mass", "calcified_granuloma"}:
        extra.extend(_findings_at(study_id, "calcified_granuloma", "positive", granulomas[:1]))
    return extra
