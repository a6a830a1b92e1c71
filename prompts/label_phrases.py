"""What counts as a mention of each CheXbert label in report text.

Informed by the CheXpert labeler's phrase lists (stanfordmlgroup/chexpert-labeler, MIT; copies
in ../shared/reference/chexpert_labeler/phrases), written as our own regular expressions with
the inflections and variants IU X-Ray and MIMIC-CXR reports use. Each label has up to three
kinds of mention:

- `finding`: names the abnormality ("cardiomegaly", "effusion"): present unless negated or hedged;
- `anatomy`: names the structure whose state the label describes ("heart size", "mediastinal
  contour"): positive only beside an abnormal word ("enlarged", "widened"), negative beside
  "normal", uncertain beside "stable"/"unchanged" (CheXpert's rule: stable compared with what?),
  otherwise no label at all;
- `hedged`: a sign that suggests but does not establish it ("vascular congestion" for edema):
  uncertain unless negated.

`exclude` patterns mark text that looks like a mention but is not ("pericardial effusion").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


def _any(*alternatives: str) -> re.Pattern:
    return re.compile("|".join(f"(?:{a})" for a in alternatives))


@dataclass(frozen=True)
class LabelPhrases:
    """Mention patterns of one label."""

    finding: re.Pattern | None = None
    anatomy: re.Pattern | None = None
    hedged: re.Pattern | None = None
    exclude: re.Pattern | None = None
    # For `anatomy` mentions: the words that make them abnormal.
    abnormal: re.Pattern | None = None
    stable: re.Pattern | None = field(default=None)


_STABLE = re.compile(r"\b(?:stable|unchanged|similar|no (?:significant |interval )*change|not changed)\b")
_ENLARGED = re.compile(
    r"\b(?:enlarge\w*|large|larger|increase\w*|prominen\w*|cardiomegaly|dilat\w*|globular|big|"
    r"widen\w*|wide|abnormal)\b"
)

LABEL_PHRASES: dict[str, LabelPhrases] = {
    "Enlarged Cardiomediastinum": LabelPhrases(
        finding=_any(
            r"\bwidened (?:superior )?mediastin\w*",
            r"\bmediastinal (?:widening|enlargement)\b",
            r"\bwidening of the (?:superior )?mediastinum\b",
        ),
        anatomy=_any(
            r"\b(?:cardio)?mediastin\w*(?: and hilar| and cardiac)? (?:contours?|silhouettes?|configuration|"
            r"shadow|width|structures?)\b",
            r"\b(?:cardiac|heart|hilar) and mediastinal (?:contours?|silhouettes?)\b",
            r"\bpericardial silhouette\b",
            r"\b(?:cardio)?mediastinum\b",
            r"\bcardiomediastinal\b",
        ),
        abnormal=_ENLARGED,
        stable=_STABLE,
    ),
    "Cardiomegaly": LabelPhrases(
        finding=_any(r"\bcardiomegaly\b", r"\bcardiac enlargement\b", r"\benlarged heart\b"),
        anatomy=_any(
            r"\bcardiac (?:size|shadow|contours?|silhouettes?)\b",
            r"\bcardiac(?= and mediastinal)",
            r"(?<!left )(?<!right )\bheart(?! failure| borders?\b)(?: size| shadow| silhouette)?\b",
            r"\bcardiothoracic ratio\b",
        ),
        abnormal=_ENLARGED,
        stable=_STABLE,
    ),
    "Lung Opacity": LabelPhrases(
        finding=_any(
            r"\bopaci\w*",
            r"\bdecreased translucency\b",
            r"\bincreased (?:density|densities)\b",
            r"\bair[- ]?space (?:disease|process)\b",
            r"\binfiltrat\w*",
            r"\binterstitial (?:markings?|pattern|lung disease|prominence)\b",
            r"\breticula\w*",
            r"\bperibronchial (?:thickening|cuffing)\b",
            r"\bbronchial wall thickening\b",
            r"\bscar\w*",
            r"\bground[- ]glass\b",
            r"\bhaz(?:y|iness)\b",
        ),
        exclude=_any(
            r"\bpleural(?:[- ]parenchymal)? scar\w*", r"\bpleuro-?(?:parenchymal|pericardial) scar\w*"
        ),
    ),
    "Lung Lesion": LabelPhrases(
        finding=_any(
            r"\bmass(?:es)?\b",
            r"\bnodules?\b",
            r"\bnodular (?:density|densities|opacit\w*|lesions?)\b",
            r"\blump\b",
            r"\bcavit\w*(?: lesions?)?\b",
            r"\bcarcinoma\b",
            r"\bneoplasm\w*",
            r"\btumou?rs?\b",
            r"\b(?:lung|pulmonary|parenchymal|spiculated) lesions?\b",
        ),
        # Calcified nodules are granulomas, not lesions (CheXpert's "calcified nodul" unmention).
        exclude=_any(
            r"\b(?:calci\w*|dense)\b[^,;]*?\bnodul\w*",
            r"\bnodul\w*[^;]*?\bgranulom\w*",
            r"\bsoft tissue mass(?:es)?\b",
        ),
    ),
    "Edema": LabelPhrases(
        finding=_any(r"\bo?edema\b", r"\bheart failure\b", r"\bchf\b", r"\bfluid overload\b"),
        hedged=_any(
            r"\b(?:pulmonary )?(?:vascular |venous )?congestion\b",
            r"\bindistinct\w*",
            r"\bvascular prominence\b",
            r"\bprominen\w* (?:of the )?(?:pulmonary |central )*vascul\w*",
            r"\b(?:pulmonary )?vascul\w* (?:is |are |appears? )?(?:\w+ )?prominen\w*",
        ),
        exclude=_any(r"\bsoft tissue o?edema\b"),
    ),
    "Consolidation": LabelPhrases(finding=_any(r"\bconsolidat\w*")),
    "Pneumonia": LabelPhrases(
        finding=_any(r"\b(?:broncho)?pneumonia\b", r"\binfections?\b", r"\binfectious\b", r"\bpneumonitis\b"),
        # Healed granulomatous disease is not a pneumonia now.
        exclude=_any(
            r"\bgranulomatous (?:\w+ )?infections?\b",
            r"\b(?:prior|previous|old|remote|healed|past) (?:\w+ ){0,2}infections?\b",
        ),
    ),
    "Atelectasis": LabelPhrases(
        finding=_any(r"\batelecta\w*", r"\bcollapsed?\b"),
        exclude=_any(
            r"\b(?:vertebral|vertebra|compression|body)(?: body)? collapse\b",
            r"\bcollapse of (?:the |a )?(?:\w+ )?vertebra\w*",
        ),
    ),
    "Pneumothorax": LabelPhrases(finding=_any(r"\b(?:hydro)?pneumothora(?:x|ces)\b")),
    "Pleural Effusion": LabelPhrases(
        finding=_any(r"\beffusions?\b", r"\bpleural fluid\b", r"\bhydropneumothora(?:x|ces)\b"),
        exclude=_any(r"\bpericardial effusions?\b", r"\bjoint effusions?\b"),
    ),
    "Pleural Other": LabelPhrases(
        finding=_any(
            r"\bpleural(?: based)? thickening\b",
            r"\bthickening of the pleura\b",
            r"\bfibrosis\b",
            r"\bfibrothorax\b",
            r"\bpleural(?:[- ]parenchymal)? scar\w*",
            r"\bpleuro-?(?:parenchymal|pericardial) scar\w*",
        )
    ),
    "Fracture": LabelPhrases(finding=_any(r"\bfractur\w*", r"\bfx\b")),
    "Support Devices": LabelPhrases(
        finding=_any(
            r"\bpacers?\b",
            r"\bpacemakers?\b",
            r"\bpicc\b",
            r"\btubes?\b",
            r"\bvalves?\b",
            r"\bcatheters?\b",
            r"\bhardware\b",
            r"\barthroplast\w*",
            r"\bmarkers?\b",
            r"\baicd\b|\bicd\b",
            r"\bdefibrillators?\b",
            r"\bdevices?\b",
            r"\bdrains?\b",
            r"\bplates?\b(?![- ]?like)",
            r"\bscrews?\b",
            r"\bcannula\b",
            r"\bapparatus\b",
            r"\bcoils?\b",
            r"\bsupport\b",
            r"\bequipment\b",
            r"\bmediport\b|\bport-a-cath\b",
            r"\bstents?\b",
            r"\bwires?\b",
            # IU X-Ray redacts the device word itself: "sternotomy XXXX", "right chest XXXX tip in the SVC".
            r"\bsternotomy (?:sutures?|xxxx)\b",
            r"\btips?\b(?= (?:is |are )?(?:projects?|projecting|overl\w+|in|at|terminat\w+|extends?|near|within)\b)",
            r"\blines?\b",
        ),
        exclude=_any(
            r"\b(?:kerley\s*b?|septal|pleural|skin|fissural|paratracheal|paraspinal|azygo\w*|junction|"
            r"fracture|lucent|lung|b)\s+lines?\b",
            r"\bb-lines?\b",
            r"\blines? of\b",
        ),
    ),
}

# Abnormalities outside the 13 findings that still rule out "No Finding": CheXpert's list
# (phrases/mention/no_finding.txt) and others of the same kind (aortic tortuosity, spine
# degeneration, low lung volumes).
OTHER_ABNORMALITY = _any(
    r"\bemphysema\w*",
    r"\bblunt\w*",
    r"\bdensit(?:y|ies)\b",
    r"\belevat\w*",
    r"\beventration\b",
    r"\b\w*scolio\w*",
    r"\bkypho\w*",
    r"\bdegenera\w*",
    r"\bcalcifi\w*",
    r"\bhyperinflat\w*|\bhyperexpan\w*|\bover-?inflat\w*|\bhyperaerat\w*",
    r"\bbronchospasm\b",
    r"\basthma\b",
    r"\bhernia\w*",
    r"\bcopd\b|\bchronic (?:obstructive|lung|interstitial)\b",
    r"\bplaques?\b",
    r"\bosteophyt\w*|\bspondylo\w*|\bsyndesmophyt\w*",
    r"\baortic disease\b",
    r"\bbronchiolitis\b|\bbronchitis\b|\bbronchiectasis\b",
    r"\bairways? disease\b",
    r"\bthicken\w*",
    r"\bcephalization\b",
    r"\baspiration\b",
    r"\bbullae?\b|\bbullous\b",
    r"\bcontusions?\b",
    r"\batherosclero\w*",
    r"\bosteopenia\b",
    r"\bmetasta\w*",
    r"\bgranulom\w*",
    r"\bpneumomediastinum\b|\bpneumoperitoneum\b",
    r"\bosteodystrophy\b",
    r"\bcuffing\b",
    r"\birregular lucenc\w*",
    r"\binflam\w*",
    r"\bfissur\w* (?:thickening|fluid)\b|\bfluid in the (?:\w+ )?fissure\b",
    r"\bhypertension\b",
    r"\bprominen\w*",
    r"\bhyperlucen\w*",
    r"\bhemorrhag\w*|\bhaemorrhag\w*|\bhematoma\b",
    r"\bradiopaque\b",
    r"\baerophagia\b",
    r"\barthropath\w*",
    r"\btracheostomy\b",
    r"\bthoracentesis\b",
    r"\bvolume loss\b",
    r"\bdeformit\w*",
    r"\bbullets?\b",
    r"\btortu\w*|\bectatic\b|\bectasia\b|\bunfold\w*",
    r"\b(?:low|diminished|decreased|reduced) lung volumes?\b|\blung volumes (?:\w+ )?(?:low|diminished|decreased)\b",
    r"\bhypoinflat\w*|\bhypoaerat\w*|\bhypoventilat\w*",
    r"\bcysts?\b|\bcystic\b",
    r"\blymphadenopathy\b|\badenopathy\b",
    r"\bflatten\w*",
    r"\babnormalit\w*",
)
