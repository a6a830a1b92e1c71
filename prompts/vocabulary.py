"""The fixed vocabularies the models speak: MedKLIP entities and positions, CheXbert labels.

Names only, from ../shared/reference/vocabularies.json (MedKLIP: MediaBrain-SJTU/MedKLIP; CheXbert:
stanfordmlgroup/CheXbert), shipped in `prompts/resources/`.
"""

from __future__ import annotations

import json
from importlib import resources

_VOCABULARIES = json.loads(resources.files("prompts").joinpath("resources/vocabularies.json").read_text())

MEDKLIP_ENTITIES: tuple[str, ...] = tuple(_VOCABULARIES["medklip_entities"])
MEDKLIP_POSITIONS: tuple[str, ...] = tuple(_VOCABULARIES["medklip_positions"])
CHEXBERT_LABELS: tuple[str, ...] = tuple(_VOCABULARIES["chexbert_labels"])

# CheXbert's class coding: heads 0-12 have four classes, head 13 (No Finding) two.
LABEL_STATUSES: tuple[str, ...] = ("blank", "positive", "negative", "uncertain")
NO_FINDING = "No Finding"
# The five findings most RRG papers report clinical efficacy on.
TOP5_LABELS: tuple[str, ...] = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")

assert len(MEDKLIP_ENTITIES) == 75 and len(MEDKLIP_POSITIONS) == 51 and len(CHEXBERT_LABELS) == 14
assert CHEXBERT_LABELS[-1] == NO_FINDING
