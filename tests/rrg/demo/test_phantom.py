"""Phantom radiographs: deterministic, anatomically laid out, each finding drawn where the report puts it.

Each finding test renders one study with and without the finding: the image must change inside
the region the finding belongs to and stay (almost) unchanged elsewhere.
"""

import numpy as np
import pytest
from scipy import ndimage

from prompts.vocabulary import CHEXBERT_LABELS, MEDKLIP_ENTITIES, MEDKLIP_POSITIONS
from rrg.demo.phantom import (
    FINDING_KINDS,
    PhantomFinding,
    findings_from_report,
    phantom_anatomy,
    render_phantom,
    render_report_phantom,
)
from rrg.demo.phantom.findings import DEVICE_ENTITIES, LABEL_ENTITIES, MIDLINE_KINDS, POSITION_PLACE
from rrg.demo.phantom.layers import normal_layers
from rrg.demo.phantom.pathology import draw_finding

STUDY = "CXR1234_IM-0123"
SIZE = 256
OTHER = {"left": "right", "right": "left"}


def change(study: str, findings: list[PhantomFinding], size: int = SIZE) -> np.ndarray:
    """Absolute per-pixel change (grey levels) a list of findings makes to a study's phantom."""
    base = render_phantom(study, [], size).astype(np.float32)
    return np.abs(render_phantom(study, findings, size).astype(np.float32) - base)


def signed_change(study: str, findings: list[PhantomFinding], size: int = SIZE) -> np.ndarray:
    base = render_phantom(study, [], size).astype(np.float32)
    return render_phantom(study, findings, size).astype(np.float32) - base


def inner(mask: np.ndarray, pixels: int = 4) -> np.ndarray:
    """The mask shrunk away from its border (blur and soft edges may touch a region's rim)."""
    return ndimage.binary_erosion(mask, iterations=pixels)


def labels(**statuses: str) -> dict[str, str]:
    """All 14 CheXbert labels blank except those given (keyword names use underscores)."""
    names = CHEXBERT_LABELS
    table = dict.fromkeys(names, "blank")
    table.update({name.replace("_", " "): status for name, status in statuses.items()})
    return table


# --- the image itself -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256, 300])
def test_render_is_uint8_of_requested_size(size):
    image = render_phantom(STUDY, [PhantomFinding("pleural_effusion", "left", "basal", 0.6)], size)
    assert image.dtype == np.uint8 and image.shape == (size, size)


def test_same_study_renders_identical_bytes():
    findings = [
        PhantomFinding("consolidation", "right", "lower", 0.7),
        PhantomFinding("ett", "midline", "whole", 1.0),
    ]
    assert render_phantom(STUDY, findings).tobytes() == render_phantom(STUDY, findings).tobytes()


def test_different_studies_have_different_anatomy_and_images():
    first, second = phantom_anatomy("CXR1_IM-0001"), phantom_anatomy("CXR2_IM-0002")
    assert first.ctr != second.ctr
    assert (first.left_lung != second.left_lung).mean() > 0.01
    assert (
        np.abs(render_phantom("CXR1_IM-0001", []).astype(int) - render_phantom("CXR2_IM-0002", [])).mean() > 2
    )


def test_lungs_are_dark_and_mediastinum_bright_with_right_lung_on_image_left():
    anatomy, image = phantom_anatomy(STUDY), render_phantom(STUDY, [])
    columns = np.nonzero(anatomy.right_lung)[1]
    assert columns.mean() < SIZE / 2 < np.nonzero(anatomy.left_lung)[1].mean()  # radiographic convention
    lungs = image[anatomy.right_lung | anatomy.left_lung].mean()
    assert lungs + 60 < image[inner(anatomy.heart)].mean()
    assert lungs + 60 < image[inner(anatomy.mediastinum, 2)].mean()


def test_normal_heart_ctr_is_normal_over_many_studies():
    ratios = [phantom_anatomy(f"CXR{i}_IM-{i:04d}", 128).ctr for i in range(120)]
    assert 0.38 <= min(ratios) and max(ratios) <= 0.52
    assert max(ratios) - min(ratios) > 0.04  # body habitus varies


def test_costophrenic_angles_sit_at_the_lateral_lung_bases():
    anatomy = phantom_anatomy(STUDY)
    for side in ("right", "left"):
        angle, lung = anatomy.costophrenic_angle(side), anatomy.lung(side)
        assert (angle & lung).sum() > 10
        assert np.nonzero(angle)[0].mean() > np.nonzero(lung)[0].mean()  # below the lung's centre


# --- findings, each where it belongs ----------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
def test_effusion_whitens_its_base_only_and_blunts_the_costophrenic_angle(side):
    effusion = PhantomFinding("pleural_effusion", side, "basal", 0.6)
    anatomy = phantom_anatomy(STUDY, SIZE, [effusion])
    delta = signed_change(STUDY, [effusion])
    assert delta[anatomy.zone(side, "lower")].mean() > 30
    assert delta[anatomy.costophrenic_angle(side)].mean() > 20  # the angle fills in
    assert np.abs(delta[anatomy.lung(OTHER[side])]).mean() < 0.5
    assert np.abs(delta[inner(anatomy.zone(side, "upper"))]).mean() < 0.5


@pytest.mark.parametrize("side", ["right", "left"])
def test_pneumothorax_darkens_apex_and_removes_lung_markings(side):
    pneumothorax = PhantomFinding("pneumothorax", side, "apical", 0.8)
    anatomy = phantom_anatomy(STUDY, SIZE, [pneumothorax])
    # Inside the rim of air between chest wall and collapsed lung, clear of the visceral pleural line.
    wall = anatomy.wall_distance(side)
    rim = anatomy.zone(side, "upper") & (wall > 0.01) & (wall < 0.045)
    delta = signed_change(STUDY, [pneumothorax])
    assert delta[rim].mean() < -15
    assert (delta[anatomy.lung(side) & ~rim] > 8).sum() > 20  # the white visceral pleural line
    assert np.abs(delta[anatomy.lung(OTHER[side])]).mean() < 0.5
    # Markings: vessels reach the rim normally and are gone from it with the pneumothorax.
    # (On the image the ribs, left alone, gain contrast over the darker rim, so measure the layer.)
    normal = normal_layers(anatomy, STUDY)
    collapsed = normal_layers(anatomy, STUDY)
    draw_finding(collapsed, anatomy, pneumothorax, STUDY)
    assert normal.markings[rim].sum() > 1.0
    assert collapsed.markings[rim].sum() < 0.05 * normal.markings[rim].sum()


def test_cardiomegaly_enlarges_ctr_above_055_and_widens_the_heart_shadow():
    for severity in (0.3, 0.6, 1.0):  # uncertain (mild) cardiomegaly is still visibly large
        enlarged = phantom_anatomy(
            STUDY, SIZE, [PhantomFinding("cardiomegaly", "midline", "whole", severity)]
        )
        assert enlarged.ctr > 0.55
    normal = phantom_anatomy(STUDY)
    delta = signed_change(STUDY, [PhantomFinding("cardiomegaly", "midline", "whole", 0.6)])
    newly_heart = enlarged.heart & ~normal.heart
    assert delta[newly_heart].mean() > 30  # lung that became heart turns white
    assert np.abs(delta[normal.zone("right", "apical") | normal.zone("left", "apical")]).mean() < 0.5


def test_widened_mediastinum_widens_the_superior_mediastinum():
    widened = PhantomFinding("widened_mediastinum", "midline", "whole", 0.7)
    normal, wide = phantom_anatomy(STUDY), phantom_anatomy(STUDY, SIZE, [widened])
    g = normal.geometry
    superior = normal.v < g.carina_y
    assert (wide.mediastinum & superior).sum() > 1.3 * (normal.mediastinum & superior).sum()
    assert signed_change(STUDY, [widened])[wide.mediastinum & ~normal.mediastinum & superior].mean() > 30


def test_consolidation_fills_the_named_lobe():
    consolidation = PhantomFinding("consolidation", "right", "upper", 0.8)
    anatomy = phantom_anatomy(STUDY)
    delta = signed_change(STUDY, [consolidation])
    assert delta[inner(anatomy.zone("right", "upper"))].mean() > 40
    assert np.abs(delta[inner(anatomy.zone("right", "lower"))]).mean() < 1.0
    assert np.abs(delta[anatomy.left_lung]).mean() < 0.5


def test_opacity_is_patchier_and_fainter_than_consolidation():
    anatomy = phantom_anatomy(STUDY)
    zone = inner(anatomy.zone("left", "mid"))
    patchy = signed_change(STUDY, [PhantomFinding("opacity", "left", "mid", 0.6)])[zone]
    dense = signed_change(STUDY, [PhantomFinding("consolidation", "left", "mid", 0.6)])[zone]
    assert 5 < patchy.mean() < dense.mean()
    assert patchy.std() > dense.std()


def test_edema_is_bilateral_and_perihilar():
    edema = PhantomFinding("edema", "bilateral", "whole", 0.7)
    anatomy = phantom_anatomy(STUDY)
    delta = signed_change(STUDY, [edema])
    for side in ("right", "left"):
        hilum_u, hilum_v = anatomy.hilum(side)
        near_hilum = anatomy.lung(side) & (np.hypot(anatomy.u - hilum_u, anatomy.v - hilum_v) < 0.08)
        assert delta[near_hilum].mean() > 25
        assert delta[near_hilum].mean() > 2 * delta[inner(anatomy.zone(side, "apical"), 1)].mean()


def test_atelectasis_draws_a_band_in_its_zone_and_lifts_that_hemidiaphragm():
    atelectasis = PhantomFinding("atelectasis", "left", "lower", 0.8)
    normal, collapsed = phantom_anatomy(STUDY), phantom_anatomy(STUDY, SIZE, [atelectasis])
    assert collapsed.geometry.dome_y("left") < normal.geometry.dome_y("left")  # volume loss
    assert collapsed.geometry.dome_y("right") == normal.geometry.dome_y("right")
    delta = signed_change(STUDY, [atelectasis])
    assert (delta[collapsed.zone("left", "lower")] > 40).sum() > 30  # the plate of collapsed lung
    assert np.abs(delta[normal.right_lung]).mean() < 0.5
    assert np.abs(delta[inner(normal.zone("left", "upper"))]).mean() < 0.5


@pytest.mark.parametrize(("kind", "max_diameter"), [("nodule", 12), ("mass", 50)])
def test_nodule_and_mass_are_round_densities_in_their_zone(kind, max_diameter):
    lesion = PhantomFinding(kind, "right", "mid", 0.7)
    anatomy = phantom_anatomy(STUDY)
    delta = signed_change(STUDY, [lesion])
    spot = delta > 30
    rows, columns = np.nonzero(spot)
    assert spot.sum() > 10
    assert rows.max() - rows.min() <= max_diameter and columns.max() - columns.min() <= max_diameter
    assert anatomy.right_lung[int(rows.mean()), int(columns.mean())]
    assert np.abs(delta[anatomy.left_lung]).mean() < 0.5


def test_mass_is_larger_than_nodule():
    def area(kind):
        return (signed_change(STUDY, [PhantomFinding(kind, "left", "upper", 0.7)]) > 30).sum()

    assert area("mass") > 4 * area("nodule")


@pytest.mark.parametrize("side", ["right", "left"])
def test_rib_fracture_breaks_a_rib_on_the_named_side(side):
    fracture = PhantomFinding("rib_fracture", side, "mid", 0.8)
    anatomy = phantom_anatomy(STUDY)
    delta = change(STUDY, [fracture])
    changed = delta > 8
    assert changed.sum() > 15
    on_side = changed & (anatomy.lateral_distance(side) > 0)
    assert on_side.sum() == changed.sum()
    rows = np.nonzero(changed)[0]
    assert rows.max() - rows.min() < 0.15 * SIZE  # a local break, not a redrawn chest


def test_pleural_thickening_runs_along_the_chest_wall():
    thickening = PhantomFinding("pleural_thickening", "left", "lower", 0.8)
    anatomy = phantom_anatomy(STUDY)
    delta = signed_change(STUDY, [thickening])
    wall = anatomy.zone("left", "lower") & (anatomy.wall_distance("left") < 0.012)
    deep = inner(anatomy.zone("left", "lower"), 3) & (anatomy.wall_distance("left") > 0.08)
    assert delta[wall].mean() > 20
    assert np.abs(delta[deep]).mean() < 1.0


def _bright_near(delta: np.ndarray, anatomy, u: float, v: float, radius: float) -> int:
    near = np.hypot(anatomy.u - u, anatomy.v - v) < radius
    return int((delta[near] > 40).sum())


def test_devices_are_bright_where_they_go():
    anatomy = phantom_anatomy(STUDY)
    g = anatomy.geometry
    ett = signed_change(STUDY, [PhantomFinding("ett", "midline", "whole", 1.0)])
    assert _bright_near(ett, anatomy, g.midline, g.carina_y - 0.12, 0.04) > 5  # in the trachea
    assert _bright_near(ett, anatomy, g.midline, g.carina_y + 0.05, 0.03) == 0  # tip above the carina
    tube = signed_change(STUDY, [PhantomFinding("ng_tube", "midline", "whole", 1.0)])
    assert _bright_near(tube, anatomy, g.midline + 0.1, g.dome_y("left") + 0.06, 0.06) > 5  # into the stomach
    pacer = signed_change(STUDY, [PhantomFinding("pacemaker", "left", "whole", 1.0)])
    generator = (anatomy.v < g.clavicle_y + 0.12) & (anatomy.lateral_distance("left") > 0.15)
    assert (pacer[generator] > 40).sum() > 100  # the can under the left clavicle
    assert (pacer[inner(anatomy.heart, 2)] > 40).sum() > 10  # leads in the heart
    wires = signed_change(STUDY, [PhantomFinding("sternotomy_wires", "midline", "whole", 1.0)])
    rows, columns = np.nonzero(wires > 40)
    assert rows.max() - rows.min() > 0.15 * SIZE and np.abs(anatomy.u[rows, columns] - g.midline).max() < 0.04
    line = signed_change(STUDY, [PhantomFinding("central_line", "right", "whole", 1.0)])
    assert (line > 40).sum() > 30 and (anatomy.lateral_distance("right")[line > 40] > 0).mean() > 0.5


@pytest.mark.parametrize("kind", FINDING_KINDS)
def test_every_finding_kind_changes_the_image(kind):
    side = "midline" if kind in MIDLINE_KINDS else "left"
    delta = change(STUDY, [PhantomFinding(kind, side, "upper" if side == "left" else "whole", 0.7)], 128)
    assert (delta > 10).sum() > 5


def test_laterality_marker_and_phantom_label_are_burned_in():
    image = render_phantom(STUDY, [])
    top_left, top_right = image[: SIZE // 8, : SIZE // 8], image[: SIZE // 8, -SIZE // 8 :]
    assert (top_left > 200).sum() > 10 and (top_right > 200).sum() < (top_left > 200).sum()
    assert (image[-SIZE // 10 :, SIZE // 2 :] > 200).sum() > 20  # "PHANTOM" at the bottom right


# --- from a report to findings ----------------------------------------------------------------


def test_small_left_effusion_report_maps_to_left_pleural_effusion():
    triplets = [
        {"entity": "effusion", "position": "left_pleural", "exist": 1},
        {"entity": "pneumothorax", "position": "unspecified", "exist": 0},
    ]
    findings = findings_from_report(
        STUDY, labels(Pleural_Effusion="positive", Pneumothorax="negative"), triplets
    )
    assert [(f.kind, f.side) for f in findings] == [("pleural_effusion", "left")]
    assert 0.4 <= findings[0].severity <= 1.0


def test_uncertain_label_is_drawn_mild():
    findings = findings_from_report(
        STUDY,
        labels(Atelectasis="uncertain"),
        [{"entity": "atelectasis", "position": "lung_bases", "exist": 1}],
    )
    assert [(f.kind, f.side, f.zone, f.severity) for f in findings] == [
        ("atelectasis", "bilateral", "basal", 0.3)
    ]


def test_no_finding_report_has_no_findings():
    assert findings_from_report(STUDY, labels(No_Finding="positive"), []) == []
    assert findings_from_report(STUDY, labels(Cardiomegaly="negative", Edema="blank"), []) == []


def test_no_finding_report_still_shows_its_support_device():
    # CheXpert's No Finding leaves Support Devices out: "Pacemaker in place. No acute disease."
    triplets = [{"entity": "pacemaker", "position": "unspecified", "exist": 1},
                {"entity": "calcification", "position": "left_upper_lung", "exist": 1}]
    findings = findings_from_report(STUDY, labels(No_Finding="positive", Support_Devices="positive"), triplets)
    assert [(f.kind, f.side) for f in findings] == [("pacemaker", "left")]


def test_lobes_and_positions_place_findings():
    triplets = [
        {"entity": "consolidation", "position": "upper_right_lobe", "exist": 1},
        {"entity": "opacity", "position": "retrocardiac", "exist": 1},
        {"entity": "pneumothorax", "position": "right_apical_lung", "exist": 1},
    ]
    findings = findings_from_report(
        STUDY, labels(Consolidation="positive", Lung_Opacity="positive", Pneumothorax="positive"), triplets
    )
    placed = {(f.kind, f.side, f.zone) for f in findings}
    assert ("consolidation", "right", "upper") in placed
    assert ("opacity", "left", "lower") in placed
    assert ("pneumothorax", "right", "apical") in placed


def test_bilateral_triplets_merge_into_one_bilateral_finding():
    triplets = [
        {"entity": "effusion", "position": "left_pleural", "exist": 1},
        {"entity": "effusion", "position": "right_pleural", "exist": 1},
    ]
    findings = findings_from_report(STUDY, labels(Pleural_Effusion="positive"), triplets)
    assert [(f.kind, f.side) for f in findings] == [("pleural_effusion", "bilateral")]


def test_repeated_positions_give_one_finding_per_place():
    triplets = [
        {"entity": "effusion", "position": "left_pleural", "exist": 1},
        {"entity": "effusion", "position": "left_costophrenic", "exist": 1},
        {"entity": "blunt", "position": "left_costophrenic", "exist": 1},
    ]
    findings = findings_from_report(STUDY, labels(Pleural_Effusion="positive"), triplets)
    assert [(f.kind, f.side, f.zone) for f in findings] == [("pleural_effusion", "left", "basal")]


def test_calcified_granuloma_is_drawn_from_a_lung_calcification_only():
    granuloma = [{"entity": "calcification", "position": "right_hilar", "exist": 1}]
    aortic = [{"entity": "calcification", "position": "aorta", "exist": 1}]
    assert [(f.kind, f.side) for f in findings_from_report(STUDY, labels(), granuloma)] == [
        ("calcified_granuloma", "right")
    ]
    assert findings_from_report(STUDY, labels(), aortic) == []


def test_unsided_finding_gets_a_deterministic_side_from_the_study_id():
    sides = {findings_from_report(f"CXR{i}", labels(Pneumothorax="positive"), [])[0].side for i in range(40)}
    assert sides == {"left", "right"}
    again = [findings_from_report("CXR7", labels(Pneumothorax="positive"), [])[0] for _ in range(3)]
    assert len(set(again)) == 1


def test_cardiomegaly_and_enlarged_cardiomediastinum_give_one_big_heart():
    findings = findings_from_report(
        STUDY,
        labels(Cardiomegaly="positive", Enlarged_Cardiomediastinum="positive"),
        [{"entity": "cardiomegaly", "position": "heart_size", "exist": 1}],
    )
    assert [f.kind for f in findings] == ["cardiomegaly"]
    only_mediastinum = findings_from_report(STUDY, labels(Enlarged_Cardiomediastinum="positive"), [])
    assert [f.kind for f in only_mediastinum] == ["widened_mediastinum"]


def test_lesions_fractures_and_devices_follow_their_triplets():
    def kinds(label, triplets):
        return {
            (f.kind, f.side) for f in findings_from_report(STUDY, labels(**{label: "positive"}), triplets)
        }

    assert kinds("Lung_Lesion", [{"entity": "mass", "position": "left_upper_lung", "exist": 1}]) == {
        ("mass", "left")
    }
    assert kinds("Lung_Lesion", [{"entity": "nodule", "position": "right_mid_lung", "exist": 1}]) == {
        ("nodule", "right")
    }
    assert kinds("Fracture", [{"entity": "fracture", "position": "clavicle", "exist": 1}]) <= {
        ("clavicle_fracture", "left"),
        ("clavicle_fracture", "right"),
    }
    assert kinds("Fracture", [{"entity": "fracture", "position": "right_lung_unspec", "exist": 1}]) == {
        ("rib_fracture", "right")
    }
    devices = kinds(
        "Support_Devices",
        [
            {"entity": "tube", "position": "trachea", "exist": 1},
            {"entity": "picc", "position": "right_pleural", "exist": 1},
            {"entity": "pacemaker", "position": "unspecified", "exist": 1},
            {"entity": "wire", "position": "mediastinal", "exist": 1},
        ],
    )
    assert devices == {
        ("ett", "midline"),
        ("central_line", "right"),
        ("pacemaker", "left"),
        ("sternotomy_wires", "midline"),
    }
    assert kinds("Support_Devices", [])  # a device is drawn even when the report does not say which


def test_report_phantom_is_the_phantom_of_its_findings():
    report_labels = labels(Edema="positive", Cardiomegaly="positive")
    triplets = [{"entity": "edema", "position": "pulmonary", "exist": 1}]
    expected = render_phantom(STUDY, findings_from_report(STUDY, report_labels, triplets), 128)
    assert np.array_equal(render_report_phantom(STUDY, report_labels, triplets, 128), expected)


def test_phantom_finding_rejects_unknown_names():
    with pytest.raises(ValueError):
        PhantomFinding("effusion", "left", "basal", 0.5)
    with pytest.raises(ValueError):
        PhantomFinding("pleural_effusion", "top", "basal", 0.5)
    with pytest.raises(ValueError):
        PhantomFinding("pleural_effusion", "left", "basal", 1.5)


def test_mapping_uses_only_real_medklip_and_chexbert_names():
    assert set(LABEL_ENTITIES) <= set(CHEXBERT_LABELS)
    named = {e for entities in LABEL_ENTITIES.values() for e in entities} | set(DEVICE_ENTITIES)
    assert named <= set(MEDKLIP_ENTITIES)
    assert set(POSITION_PLACE) <= set(MEDKLIP_POSITIONS)
