"""What the MedKLIP triplet extractor reads as an entity or a position in report text.

Our own regular expressions over `report_text.normalise`d text (lower case, single spaces, IU's
"XXXX" as "xxxx"), written from the wording of IU X-Ray and MIMIC-CXR reports. MedKLIP took its
entities and positions from RadGraph observations and anatomies, lemmatised (AGXNet's
preprocessing); we find the same words, with their inflections and synonyms, directly.

- `ENTITY_PHRASES`: entity -> regex body. All bodies are joined into one alternation, tried in
  this order, so where two could start at the same word the earlier, longer phrase wins
  ("congestive heart failure" is `chf`, not `congestion`), and `LOOK_ALIKES` come first to
  swallow words that only look like a mention ("lead to", "pleural line", "spinous process").
- `POSITION_PHRASES`: family -> regex body, also one alternation in order. A family is either
  a MedKLIP position name or a lateral family (`LATERAL`) whose position depends on the side and
  zone words inside the match ("left lower lobe", "bibasilar", "right hilar").
- The words between a mention and a position that join or part them (`BLOCKER`, `LINK`, ...).
"""

from __future__ import annotations

import re


def _either(*alternatives: str) -> str:
    return "|".join(alternatives)


# --- entities ---------------------------------------------------------------------------------

# Words that look like a mention and are not: matched first, then dropped.
LOOK_ALIKES = _either(
    r"leads? to|leading to",
    r"pleural lines?|skin (?:fold )?lines?|lines? of",
    r"(?:spinous|transverse|xiphoid|coracoid|odontoid) process(?:es)?",
    r"clear(?= (?:evidence|signs?|etiology|cut))",
    r"room air",
    # a section header cut off as its own clause ("FINDINGS: ...")
    r"^(?:findings?|impression|indication|history|comparison|technique|examination|exam)$",
)

# `tail_abnorm_obs`: MedKLIP's bucket of "very rare diseases" (its observation notes), i.e. the
# abnormal RadGraph observations outside its 73 named ones. Which words count is our choice: the
# rarer abnormalities IU X-Ray and MIMIC reports name.
TAIL_ABNORMAL = _either(
    r"kerley(?: b)? lines?|b[- ]lines?|septal lines?",  # IU redacts "Kerley": "XXXX B lines"
    r"air trapping",
    r"granulom\w*",
    r"bull(?:a|ae|ous)",
    r"cysts?|cystic",
    r"cavit(?:y|ies|ary|ation)",
    r"kyphos\w*|kyphotic",
    r"(?:dextro|levo)?scolio\w*|(?:dextro|levo)?curvature",
    r"osteophyt\w*|spondylo(?:sis|tic|itis)|syndesmophyt\w*",
    r"(?:lymph)?adenopathy",
    r"hyperlucen\w*|lucenc(?:y|ies)",
    r"eventration",
    r"atheroscleros\w*|atherosclerotic",
    r"ectasia|ectatic|unfold(?:ed|ing)",
    r"fibros\w*|fibrotic|bronchiecta\w*",
    r"pneumoperitoneum|pneumomediastinum|pneumopericardium",
    r"osteopeni\w*|demineraliz\w*|sclero(?:sis|tic)",
    r"flatten(?:ed|ing)",
    r"sequela\w*",
    r"pneumonitis|empyema|hemothorax|hydropneumothorax|bronchitis|bronchiolitis|peribronchial cuffing",
    r"tuberculo\w*|metasta\w*|neoplas\w*|tumou?rs?|malignan\w*|carcinoma|cancer",
    r"aneurysm\w*|pectus(?: excavatum| carinatum)?|copd|asthma",
    r"arthriti\w*|arthropath\w*|dislocat\w*|erosi(?:on|ons|ve)|irregularit(?:y|ies)",
    r"plaques?|hematoma|contusions?|hypertension",
)

# `excluded_obs`: MedKLIP's notes call it "observations that seldom appear in the reports" and no
# more. Our reading, and our choice: observations about the examination rather than the patient.
EXCLUDED = _either(
    r"limited|suboptimal|portable",
    r"rotat(?:ed|ion)",
    r"technique|technical factors?",
    r"(?:under|over)-?penetrat\w*",
    r"motion(?: artifacts?)?|artifacts?",
    r"lordotic(?: positioning| projection| view)?",
    r"positioning|(?:shallow|poor) (?:inspiration|inspiratory effort)",
)

ENTITY_PHRASES: dict[str, str] = {
    # Longer phrases first where their first word is another entity's.
    "chf": r"chf|(?:congestive )?heart failure|(?:fluid|volume) overload|cardiac decompensation",
    "tail_abnorm_obs": TAIL_ABNORMAL,
    "excluded_obs": EXCLUDED,
    # The normal-type observations.
    "normal": r"normal(?:ly)?",
    "clear": r"clear",
    "sharp": r"sharp",
    "sharply": r"sharply",
    "unremarkable": r"unremarkable",
    "intact": r"intact",
    # "Unchanged" says the same thing as "stable"; MedKLIP's list has no word of its own for it.
    "stable": r"stable|stably|stability|unchanged",
    "free": r"free",
    # Findings, devices and descriptions, in MedKLIP's order.
    "effusion": r"effusions?",
    "opacity": r"opaci(?:ty|ties|fication|fications|fied|fies)|opaque",
    "pneumothorax": r"pneumothora(?:x|xes|ces)|ptx",
    "edema": r"o?edema|o?edematous",
    "atelectasis": r"atelecta(?:sis|ses|tic)",
    "tube": r"tubes?|tubing|ett|et tube|ng|og|nasogastric|orogastric|dobhoff|tracheostomy|trach",
    "consolidation": r"consolidat(?:ion|ions|ive|ed|ing)",
    "process": r"process(?:es)?",
    "abnormality": r"abnormalit(?:y|ies)|abnormal",
    "enlarge": r"enlarg(?:e|ed|es|ing|ement)",
    "tip": r"tips?",
    # "low lung volumes", and the words for the same that carry no "low".
    "low": _either(
        r"low(?![ -](?:density|densities|attenuation|lying|dose|grade))",
        r"hypoinflat\w*|hypoexpan\w*|hypoaerat\w*|(?:decreased|diminished|reduced) (?:lung )?volumes?",
    ),
    "pneumonia": r"(?:broncho)?pneumonias?",
    # Not "midline" (\b), not "Kerley B lines" / "septal lines" (tail) nor "pleural line" (look-alike).
    "line": r"lines?",
    "congestion": r"congest(?:ion|ive|ed)",
    "catheter": r"catheters?|swan[- ]ganz",
    "cardiomegaly": r"cardiomegaly",
    "fracture": r"fractur(?:e|es|ed|ing)|fx",
    "air": r"air(?! ?spaces?\b)",
    "tortuous": r"tortu(?:ous|osity)|torturous",  # the misspelling is in IU X-Ray
    "lead": r"leads?",
    "disease": r"diseases?",
    "calcification": r"calcifi(?:cation|cations|ed)|calcific",
    "prominence": r"prominen(?:ce|t|tly)",
    "device": r"devices?|a?icd|defibrillators?|mediport|port-a-cath|port|loop recorder|stimulator",
    "engorgement": r"engorge(?:ment|d)",
    "picc": r"picc",
    "clip": r"clips?",
    "elevation": r"elevat(?:ion|ed|es)",
    # "hyperexpanded" is one word, so it is `hyperinflate`, not `expand`.
    "expand": r"(?:re-?)?expan(?:d|ded|ds|sion)",
    "nodule": r"nodul(?:e|es|ar|arity)|micronodul\w*",
    "wire": r"wires?",
    "fluid": r"fluid",
    "degenerative": r"degenerat(?:ive|ion)",
    "pacemaker": r"pacemakers?|pacers?|pacing",
    "thicken": r"thicken(?:ed|ing|s)?",
    "marking": r"markings?",
    "scar": r"scar(?:s|ring|red)?",
    "hyperinflate": r"hyperinflat\w*|hyperexpan\w*|hyperaerat\w*|over-?inflat\w*",
    "blunt": r"blunt(?:ing|ed|s)?",
    "loss": r"loss",
    "widen": r"widen(?:ed|ing|s)?",
    "collapse": r"collaps(?:e|ed|es|ing)",
    "density": r"densit(?:y|ies)",
    "emphysema": r"emphysema(?:tous)?",
    "aerate": r"(?:well[- ])?aerat(?:e|ed|ion)",
    "mass": r"mass(?:es)?",
    "crowd": r"crowd(?:ing|ed)",
    "infiltrate": r"infiltrat(?:e|es|ion|ions|ive|ed)",
    "obscure": r"obscur(?:e|ed|es|ing|ation)",
    "deformity": r"deformit(?:y|ies)|deformed",
    "hernia": r"hernia(?:s|tion|ted)?",
    "drainage": r"drain(?:age|s)?",
    "distention": r"disten(?:tion|sion|ded)",
    "shift": r"shift(?:ed|ing|s)?",
    "stent": r"stents?|stented",
    "pressure": r"pressures?",
    "lesion": r"lesions?",
    "finding": r"findings?",
    "borderline": r"borderline",
    "hardware": _either(
        r"hardware|screws?|anchors?|prosthes[ie]s|arthroplast\w*",
        r"(?:fixation|surgical|metallic) (?:plates?|rods?)",
    ),
    "dilation": r"dilat(?:ion|ed|ation|ing)",
    "redistribution": r"redistribut\w*|cephalization",
    "aspiration": r"aspirat(?:ion|ed)",
}

# Entities whose bare side word ("small left effusion", "effusions bilaterally") names a side of
# this lateral family.
SIDED_FAMILY: dict[str, str] = {
    "effusion": "pleural",
    "pneumothorax": "pleural",
    "fluid": "pleural",
    "blunt": "costophrenic",
    "elevation": "diaphragm",
    **{
        entity: "lung"
        for entity in (
            "opacity",
            "edema",
            "atelectasis",
            "consolidation",
            "pneumonia",
            "nodule",
            "scar",
            "collapse",
            "density",
            "mass",
            "infiltrate",
            "lesion",
            "aspiration",
            "tail_abnorm_obs",
        )
    },
}

# Where an entity is when its clause names no position: only where the entity itself says it.
DEFAULT_POSITION: dict[str, str] = {
    "cardiomegaly": "heart_size",
    "effusion": "pleural_unspec",
    "pneumothorax": "pleural_unspec",
    "blunt": "costophrenic_unspec",
    "low": "lung_volumes",
    "clear": "pulmonary",  # "clear" alone ("hyperexpanded but clear") is said of the lungs
    "hyperinflate": "pulmonary",
}

# MedKLIP's normal-type observations: said of a structure, negated only by "no", "without", "not".
NORMAL_TYPE = frozenset({"normal", "clear", "sharp", "sharply", "unremarkable", "intact", "stable", "free"})

# Words that describe a structure rather than name a finding: joined by "and" to another
# ("normal and stable cardiomediastinal contours", "tortuous and calcified aorta") they share its
# positions, and "normal" before them does not negate them ("normal stable heart size").
DESCRIBING = frozenset(
    {
        *NORMAL_TYPE,
        "enlarge",
        "low",
        "tortuous",
        "calcification",
        "prominence",
        "engorgement",
        "elevation",
        "expand",
        "degenerative",
        "thicken",
        "marking",
        "hyperinflate",
        "blunt",
        "widen",
        "aerate",
        "crowd",
        "obscure",
        "distention",
        "dilation",
        "borderline",
    }
)

# Observations of the examination, not of the patient, have no position on the patient.
EXAM_LEVEL = frozenset({"excluded_obs"})

# Defaults that hold against a position elsewhere in the clause: "lungs are clear without
# pneumothorax" does not put the pneumothorax in the lungs. These borrow only across a linking word.
KEEPS_DEFAULT = frozenset({"cardiomegaly", "effusion", "pneumothorax"})

# Entities that are, or are part of, a support device: the position of a device's tip or leads
# ("PICC with tip in the SVC", "pacemaker with leads in the right atrium") is the device's.
DEVICES = frozenset(
    {
        "tube",
        "tip",
        "line",
        "catheter",
        "lead",
        "device",
        "picc",
        "clip",
        "wire",
        "pacemaker",
        "stent",
        "hardware",
        "drainage",
    }
)

# --- positions --------------------------------------------------------------------------------

_SIDE = r"(?:(?:left|right) (?:and|or) (?:xxxx )?(?:left|right)|left|right|bilateral|both)(?:[ -]sided)?"
_S = rf"(?:{_SIDE} )?"
_ZONE = r"(?:upper|middle|mid|lower)"
_ASPECT = r"(?:(?:lateral|posterior|anterior|medial)(?: and (?:lateral|posterior|anterior|medial))? )?"
_ORDINAL = (
    r"(?:\d+(?:st|nd|rd|th)?|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|"
    r"eleventh|twelfth|anterior|posterior|lateral)"
)

POSITION_PHRASES: dict[str, str] = {
    # Longer or more specific phrases before the ones they start with.
    "other_vein": r"inferior vena cava|ivc",
    "cavoatrial_junction": r"cavo-?atrial(?: junction)?|caval[- ]?atrial(?: junction)?|"
    r"(?:svc|superior vena cava)[ /-](?:ra|right atri(?:um|al))(?: junction)?",
    "cardiophrenic_sulcus": rf"{_S}cardiophrenic(?: angles?| sulc(?:us|i)| recess(?:es)?| fat pad)?",
    "heart_border": rf"{_S}(?:heart|cardiac) borders?",
    "cardiomediastinal": r"cardio[ -]?mediastin\w*(?: silhouettes?| contours?)?",
    "lung_volumes": r"(?:lung|pulmonary|inspiratory) volumes?|volumes",
    "lobe": rf"{_S}{_ZONE}(?: and {_ZONE})?(?: {_SIDE})? lob(?:es?|ar)",
    "lingula": r"lingula(?:r)?",
    "zone": _either(
        r"bibasilar(?:ly)?|bibasal(?:ly)?|biapical(?:ly)?",
        rf"(?:base|bases|apex|apices) of (?:the )?{_S}(?:lungs?|hemithora(?:x|ces))",
        rf"{_S}(?:lung |pulmonary )?(?:bases?|basilar(?:ly)?|basal(?:ly)?|apex|apices|apical(?:ly)?)",
        rf"{_S}{_ZONE}(?: {_SIDE})?(?: |-)?(?:lungs?(?: zones?| fields?)?|zones?|fields?|hemithora(?:x|ces))",
    ),
    "costophrenic": _either(
        rf"{_S}{_ASPECT}(?:costophrenic|costodiaphragmatic)(?: angles?| sulc(?:us|i)| recess(?:es)?)?",
        rf"{_S}cp angles?",
    ),
    "hilar": rf"{_S}(?:peri|supra|infra|para|retro)?(?:hilar|hilum|hila|hilus)",
    "pleural": rf"{_S}(?:pleural?(?: spaces?| surfaces?)?|(?:minor |major |horizontal )?fissur(?:e|es|al))",
    "diaphragm": rf"{_S}(?:hemi-?)?diaphragm(?:s|atic)?",
    "lung": rf"{_S}(?:lungs?|hemithora(?:x|ces)|pulmonary)",
    "retrocardiac": rf"{_S}retrocardiac",
    "heart_size": r"heart(?! failure)(?: size| shadow| silhouette| contours?)?|"
    r"cardiac(?: size| silhouettes?| shadow| contours?)?(?! monitor)|cardiothoracic ratio|"
    r"pericardial silhouette|left ventric(?:le|ular)|left atri(?:um|al)",
    "mediastinal": rf"{_S}(?:"
    + _either(
        r"(?:superior |upper |anterior |posterior )?mediastin\w*",
        r"p[ae]r[ai]tracheal|subcarinal|aort(?:ic)?o-?pulmonary(?: window)?",
    )
    + ")",
    "trachea": r"trachea(?:l)?|carina(?:l)?|(?:main ?stem )?bronch(?:us|i)",
    "spine": r"(?:thoracic |lumbar |cervical |thoracolumbar )?spine|spinal|paraspinal|thoracolumbar|"
    r"(?:thoracic |lumbar )?vertebra(?:e|l)?(?: bod(?:y|ies))?|endplates?|disc spaces?|"
    r"(?:mid)?thoracic(?= (?:\w+ )?(?:dextro|levo|scolio|kypho|spondyl|curvature|degenerat))",
    "clavicle": rf"{_S}clavic(?:le|les|ular)|acromioclavicular",
    "rib": rf"{_S}(?:{_ORDINAL}(?:,? (?:and |through |to )?| ?- ?)){{0,4}}ribs?|costochondral|costovertebral",
    "stomach": r"stomach|gastric|gastroesophageal|hiatal|hiatus",
    "right_atrium": r"right atri(?:um|al)|atrium",
    "right_ventricle": r"right ventric(?:le|ular)",
    "aorta": r"aort(?:a|ic)",
    "svc": r"svc|(?:superior )?vena cava",
    "interstitium": r"interstiti(?:um|al)",
    # RadGraph's "airspace" has no MedKLIP position of its own; it is the lung parenchyma.
    "parenchymal": r"parenchyma(?:l)?|air ?spaces?|alveolar",
    "cardiopulmonary": r"cardio-?pulmonary",
    # In a chest film report the vasculature is the lungs' ("pulmonary vascularity is normal").
    "pulmonary": r"(?:broncho)?vascula(?:rity|ture)|(?:broncho)?vascular(?= (?:markings?|congestion|engorgement|"
    r"prominence|redistribution|crowding|pattern|structures?|margins?|margination|cephalization))",
    "other": rf"{_S}(?:"
    + _either(
        r"soft tissues?|chest wall|shoulders?|humer(?:us|al|i)|glenohumeral|scapula(?:e|r)?",
        r"(?:upper |lower )?(?:hemi)?abdom(?:en|inal)|upper quadrant|bowel|colon|liver|spleen",
        r"esophag(?:us|eal)|thyroid|neck|breasts?|axilla(?:ry)?|sternum|sternal|sternotomy",
        r"subdiaphragmatic|pericardi(?:um|al)|(?:osseous|bony|skeletal)(?: structures)?|bones?",
    )
    + ")",
    # A side word that is part of no anatomy phrase ("small left effusion"): last, so that
    # "left lower lobe" is read whole first.
    "side": rf"{_SIDE}|bilaterally",
}

# Lateral families: (left, right, both, no side). `None` for both means one position per side,
# since MedKLIP has no bilateral name there. Zones and lobes are keyed by zone word.
BOTH_SIDES = None
LATERAL: dict[str, tuple[str, str, str | None, str | None]] = {
    "zone:lower": ("left_lower_lung", "right_lower_lung", "lung_bases", "lung_bases"),
    "zone:apical": ("left_apical_lung", "right_apical_lung", "lung_apices", "lung_apices"),
    "zone:upper": ("left_upper_lung", "right_upper_lung", BOTH_SIDES, BOTH_SIDES),
    "zone:mid": ("left_mid_lung", "right_mid_lung", BOTH_SIDES, BOTH_SIDES),
    # A lobe named without a side ("lower lobes") is taken as both; the left has no middle lobe.
    "lobe:lower": ("lower_left_lobe", "lower_right_lobe", BOTH_SIDES, BOTH_SIDES),
    "lobe:upper": ("upper_left_lobe", "upper_right_lobe", BOTH_SIDES, BOTH_SIDES),
    "lobe:mid": ("left_mid_lung", "middle_right_lobe", "middle_right_lobe", "middle_right_lobe"),
    "lung": ("left_lung_unspec", "right_lung_unspec", "pulmonary", "pulmonary"),
    "hilar": ("left_hilar", "right_hilar", BOTH_SIDES, "hilar_unspec"),
    "pleural": ("left_pleural", "right_pleural", BOTH_SIDES, "pleural_unspec"),
    "costophrenic": ("left_costophrenic", "right_costophrenic", BOTH_SIDES, "costophrenic_unspec"),
    "diaphragm": ("left_diaphragm", "right_diaphragm", BOTH_SIDES, "diaphragm_unspec"),
}

# Families that name one or more fixed positions whatever side the text gives.
FIXED: dict[str, tuple[str, ...]] = {
    "other_vein": ("other",),
    "cardiomediastinal": ("heart_size", "mediastinal"),
    "lingula": ("upper_left_lobe",),
}

SIDE_WORDS: dict[str, str] = {
    "left": "left",
    "right": "right",
    "bilateral": "both",
    "bilaterally": "both",
    "both": "both",
    **dict.fromkeys(("bibasilar", "bibasilarly", "bibasal", "bibasally", "biapical", "biapically"), "both"),
}
ZONE_WORDS: dict[str, str] = {
    "upper": "upper",
    "mid": "mid",
    "middle": "mid",
    "midlung": "mid",
    "lower": "lower",
    **dict.fromkeys(("base", "bases", "basilar", "basilarly", "basal", "basally"), "lower"),
    **dict.fromkeys(("bibasilar", "bibasilarly", "bibasal", "bibasally"), "lower"),
    **dict.fromkeys(("apex", "apices", "apical", "apically", "biapical", "biapically"), "apical"),
}

# --- the words between a mention and its positions -------------------------------------------

# Words that carry a position from one finding to the next: "opacity that may represent
# atelectasis", "blunted angles suggesting small effusions".
_LINK_VERB = _either(
    r"represent\w*|reflect\w*|suggest\w*|consistent with|compatible with|concerning for|suspicious for",
    r"worrisome for|likely|may be|could be|due to|related to|secondary to|versus|vs",
)
# What ends a mention's own phrase: a comma, a new phrase or subject, a verb, a linking word.
BLOCKER = re.compile(
    r"[,;]|\b(?:and|or|nor|with|without|but|no|not|there|which|is|are|was|were|be|been|has|have|had|"
    rf"appears?|remains?|seems?|shows?|demonstrates?|measures?|{_LINK_VERB})\b"
)
OWN_PHRASE_WORDS = 6
# "X is present in the left apex" says where X is, as "X in the left apex" does.
PRESENCE = re.compile(
    r"\b(?:is|are|was|were|has been|have been)(?: (?:again|also|now|still))? "
    r"(?:present|seen|noted|identified|visuali[sz]ed|demonstrated|located|evident|appreciated)\b"
)
# What may stand between the items of a list of positions ("right middle and left lower lobe",
# "heart size and pulmonary vascularity", "the heart, pulmonary XXXX and mediastinum").
LIST_GAP = re.compile(
    r"(?:[ ,/-]|\b(?:and|or|as well as|the|both|in|of|at|within|involving|along|contours?|silhouettes?|"
    r"size|configuration|structures?|regions?|areas?|visuali[sz]ed|visible|xxxx)\b)*"
)
AND = re.compile(r"\b(?:and|or|as well as)\b")
LUNG_FAMILIES = frozenset({"lobe", "lingula", "zone", "lung"})
LUNG_TISSUE = LUNG_FAMILIES | {"parenchymal", "interstitium"}
# Linking words and the relations that lend a position too ("effusion with adjacent atelectasis");
# a negation between lends nothing ("elevation ... consistent with lobectomy, without effusion").
LINK = re.compile(rf"\b(?:{_LINK_VERB}|adjacent|associated|underlying|overlying|compressive)\b")
NO_LINK = re.compile(r";|\b(?:no|not|without|nor)\b")
# What a side word said of a finding's subject may not stand behind.
NO_SIDE = re.compile(r"[,;]|\b(?:no|not|without|nor|and|or|with)\b")
# Mentions joined as items of one list: "normal and stable", "degenerative changes and osteopenia",
# and, for findings, commas too ("no consolidation, effusion or pneumothorax in the right lung").
AND_JOIN = re.compile(r"(?: changes?)?,? (?:and|or|and/or) ")
LIST_JOIN = re.compile(r"(?: changes?)?(?:,? (?:and|or|and/or) |, )")
# A describing word right before the finding it describes ("stable, mild prominence").
ADJACENT = re.compile(r",? (?:(?:\w+ly|mild|minimal|small|moderate|severe|marked|large) )*")
# A position phrase that follows its finding as a prepositional phrase ("... in the lungs").
PREPOSITION = re.compile(
    r" (?:\w+ )?(?:in|within|at|of|on|along|involving|throughout|overlying|over|projecting over) "
)
# "The heart is not enlarged": the reader's cue "not enlarged" holds the mention itself, so it
# does not reach it; a "not" right before a describing word negates it.
NOT_BEFORE = re.compile(r"\b(?:not|no longer)(?: \w+ly)? $")
