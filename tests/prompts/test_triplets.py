"""MedKLIP triplets read off report sentences: entities, positions, existence, and the dense form."""

from __future__ import annotations

import numpy as np
import pytest

from prompts.triplets import Triplet, dense_triplets, extract_triplets, triplet_text
from prompts.vocabulary import MEDKLIP_ENTITIES, MEDKLIP_POSITIONS


def triplets_of(report: str) -> set[tuple[str, str, int]]:
    return {(t.entity, t.position, t.exist) for t in extract_triplets(report)}


def entities_of(report: str) -> set[str]:
    return {t.entity for t in extract_triplets(report)}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        ("Small left pleural effusion.", {("effusion", "left_pleural", 1)}),
        ("Bilateral pleural effusions.", {("effusion", "left_pleural", 1), ("effusion", "right_pleural", 1)}),
        (
            "No pneumothorax or pleural effusion.",
            {("pneumothorax", "pleural_unspec", 0), ("effusion", "pleural_unspec", 0)},
        ),
        ("Right middle lobe consolidation.", {("consolidation", "middle_right_lobe", 1)}),
        ("Bibasilar atelectasis.", {("atelectasis", "lung_bases", 1)}),
        ("Mild cardiomegaly.", {("cardiomegaly", "heart_size", 1)}),
        ("The lungs are clear.", {("clear", "pulmonary", 1)}),
        ("Costophrenic angles are sharp.", {("sharp", "costophrenic_unspec", 1)}),
        ("XXXX opacities in the right base.", {("opacity", "right_lower_lung", 1)}),
        (
            "Bilateral lower lobe opacities.",
            {("opacity", "lower_left_lobe", 1), ("opacity", "lower_right_lobe", 1)},
        ),
        (
            "Left lower lobe and right middle lobe opacities.",
            {("opacity", "lower_left_lobe", 1), ("opacity", "middle_right_lobe", 1)},
        ),
        ("Patchy opacity in the lingula.", {("opacity", "upper_left_lobe", 1)}),
        ("Nodule in the right midlung.", {("nodule", "right_mid_lung", 1)}),
        ("Scarring at the left apex.", {("scar", "left_apical_lung", 1)}),
        (
            "Biapical pleural thickening.",
            {("thicken", "lung_apices", 1), ("thicken", "left_pleural", 1), ("thicken", "right_pleural", 1)},
        ),
        (
            "Pleural thickening is present in the left apex.",
            {("thicken", "left_apical_lung", 1), ("thicken", "left_pleural", 1)},
        ),
        ("Blunting of the left costophrenic angle.", {("blunt", "left_costophrenic", 1)}),
        ("Elevated right hemidiaphragm.", {("elevation", "right_diaphragm", 1)}),
        ("Left lung is clear.", {("clear", "left_lung_unspec", 1)}),
        ("Low lung volumes.", {("low", "lung_volumes", 1)}),
        ("Pleural effusion is present on the right.", {("effusion", "right_pleural", 1)}),
        ("Tortuous and calcified aorta.", {("tortuous", "aorta", 1), ("calcification", "aorta", 1)}),
        ("Degenerative changes of the thoracic spine.", {("degenerative", "spine", 1)}),
        ("Small hiatal hernia.", {("hernia", "stomach", 1)}),
    ],
)
def test_entity_takes_the_position_its_phrase_names(report, expected):
    assert triplets_of(report) == expected


def test_heart_size_and_vascularity_both_get_the_normal():
    assert triplets_of("Heart size and pulmonary vascularity appear within normal limits.") == {
        ("normal", "heart_size", 1),
        ("normal", "pulmonary", 1),
    }


def test_picc_takes_the_svc_of_its_tip():
    found = triplets_of("Right PICC with tip in the SVC.")
    assert ("picc", "svc", 1) in found and ("tip", "svc", 1) in found


def test_pacemaker_leads_sit_in_the_right_heart():
    found = triplets_of("Left chest wall pacemaker with leads in the right atrium and right ventricle.")
    assert {("lead", "right_atrium", 1), ("lead", "right_ventricle", 1)} <= found


def test_calcified_granuloma_is_a_tail_observation_at_its_lobe():
    found = triplets_of("Calcified granuloma in the left upper lobe.")
    assert ("tail_abnorm_obs", "upper_left_lobe", 1) in found
    assert ("calcification", "upper_left_lobe", 1) in found


def test_uncertain_findings_count_as_present_and_inherit_the_lobe():
    found = triplets_of("Left lower lobe opacity may represent atelectasis or pneumonia.")
    assert found == {
        ("opacity", "lower_left_lobe", 1),
        ("atelectasis", "lower_left_lobe", 1),
        ("pneumonia", "lower_left_lobe", 1),
    }


def test_effusion_that_cannot_be_excluded_is_present():
    found = triplets_of("Possible small left effusion cannot be excluded.")
    assert found == {("effusion", "left_pleural", 1)}


def test_negated_describing_word_is_absent():
    assert triplets_of("The heart is not enlarged.") == {("enlarge", "heart_size", 0)}


def test_normal_does_not_negate_the_next_normal_word():
    assert triplets_of("Normal and stable cardiomediastinal contours.") == {
        ("normal", "heart_size", 1),
        ("normal", "mediastinal", 1),
        ("stable", "heart_size", 1),
        ("stable", "mediastinal", 1),
    }


def test_negated_list_shares_its_trailing_position():
    assert triplets_of("No infiltrates or masses in the lungs.") == {
        ("infiltrate", "pulmonary", 0),
        ("mass", "pulmonary", 0),
    }


def test_a_list_of_positions_stops_at_another_findings_own():
    assert triplets_of("Low lung volumes and bronchovascular crowding.") == {
        ("low", "lung_volumes", 1),
        ("crowd", "pulmonary", 1),
    }


def test_describing_words_take_the_position_of_the_finding_they_describe():
    assert triplets_of("Stable borderline cardiomegaly.") == {
        ("stable", "heart_size", 1),
        ("borderline", "heart_size", 1),
        ("cardiomegaly", "heart_size", 1),
    }


def test_lung_words_before_a_pair_of_findings_place_both():
    assert triplets_of("Lingular scarring and/or atelectasis.") == {
        ("scar", "upper_left_lobe", 1),
        ("atelectasis", "upper_left_lobe", 1),
    }


def test_effusion_does_not_borrow_the_lungs_of_another_statement():
    assert ("pneumothorax", "pleural_unspec", 0) in triplets_of("Lungs are clear without pneumothorax.")


def test_unplaced_repeat_of_a_placed_finding_is_dropped():
    found = triplets_of("Mild vascular redistribution and cephalization.")
    assert found == {("redistribution", "pulmonary", 1)}


def test_kerley_b_lines_are_not_a_line_device():
    found = entities_of("Kerley B lines are present.")
    assert "line" not in found and "tail_abnorm_obs" in found


def test_midline_trachea_gives_no_line():
    assert "line" not in entities_of("The trachea is midline.")


def test_lead_as_a_verb_is_not_a_pacer_lead():
    assert "lead" not in entities_of("Chronic aspiration may lead to scarring.")


def test_massive_is_not_a_mass_and_airspace_is_not_air():
    assert entities_of("No massive effusion. No focal airspace disease.") == {"effusion", "disease"}


def test_hyperexpanded_lungs_are_hyperinflated_not_expanded():
    assert triplets_of("The lungs are hyperexpanded.") == {("hyperinflate", "pulmonary", 1)}


def test_exam_descriptions_are_excluded_observations_without_position():
    assert ("excluded_obs", "unspecified", 1) in triplets_of("Limited exam due to patient rotation.")


def test_present_wins_over_absent_for_the_same_triplet():
    triplets = extract_triplets("No pleural effusion. Small pleural effusion.")
    assert triplets == [Triplet("effusion", "pleural_unspec", 1)]


def test_different_sides_in_different_clauses_keep_both():
    found = triplets_of("Old left rib fracture. No right rib fracture.")
    assert {("fracture", "rib", 1), ("fracture", "rib", 0)} == found


def test_triplets_come_in_report_order_without_duplicates():
    triplets = extract_triplets("Mild cardiomegaly. The lungs are clear. Mild cardiomegaly again.")
    assert [t.entity for t in triplets] == ["cardiomegaly", "clear"]


def test_every_name_is_in_the_medklip_vocabularies():
    reports = [
        "Right IJ catheter tip at the cavoatrial junction. NG tube in the stomach. ETT above the carina.",
        "Moderate cardiomegaly with mild interstitial edema and small bilateral effusions. No pneumothorax.",
        "Sternotomy wires and mediastinal clips. Left chest wall pacemaker. Thoracic spondylosis.",
        "Retrocardiac opacity. Right hilar prominence. Left basilar atelectasis. Kyphosis. Portable exam.",
        "Shoulder arthroplasty hardware. Free air under the right hemidiaphragm. Cardiophrenic fat pad.",
    ]
    for report in reports:
        for t in extract_triplets(report):
            assert t.entity in MEDKLIP_ENTITIES and t.position in MEDKLIP_POSITIONS
            assert t.exist in (0, 1)


def test_triplet_text_writes_names_with_spaces():
    text = triplet_text(Triplet("effusion", "left_costophrenic", 1))
    assert text == "effusion at left costophrenic: present"
    assert triplet_text(Triplet("opacity", "lower_left_lobe", 0)) == "opacity at lower left lobe: absent"
    assert Triplet("effusion", "left_pleural", 1).to_dict() == {
        "entity": "effusion",
        "position": "left_pleural",
        "exist": 1,
    }


def test_dense_triplets_shapes_dtypes_and_precedence():
    triplets = [
        Triplet("effusion", "left_pleural", 0),
        Triplet("effusion", "right_pleural", 1),
        Triplet("pneumothorax", "pleural_unspec", 0),
    ]
    exist, positions = dense_triplets(triplets)
    assert exist.shape == (75,) and exist.dtype == np.int8
    assert positions.shape == (75, 51) and positions.dtype == np.bool_
    effusion, pneumothorax = MEDKLIP_ENTITIES.index("effusion"), MEDKLIP_ENTITIES.index("pneumothorax")
    assert exist[effusion] == 1 and exist[pneumothorax] == 0
    assert (exist == -1).sum() == 73
    # positions agree with the entity's exist: the absent left effusion is not marked
    assert positions[effusion].nonzero()[0].tolist() == [MEDKLIP_POSITIONS.index("right_pleural")]
    assert positions[pneumothorax, MEDKLIP_POSITIONS.index("pleural_unspec")]


def test_empty_report_gives_no_triplets_and_all_unmentioned():
    assert extract_triplets("") == []
    exist, positions = dense_triplets([])
    assert (exist == -1).all() and not positions.any()


def test_extraction_is_deterministic():
    report = "Bibasilar opacities, atelectasis versus pneumonia. Small left effusion. Stable cardiomegaly."
    assert extract_triplets(report) == extract_triplets(report)
