"""De-identification markers in report text: IU X-Ray's "XXXX", MIMIC-CXR's "___".

The data sets' publishers replaced names, dates and some ordinary words (IU's "chest x-XXXX" is a chest
x-ray) by these markers. To a model they are words like any other, frequent ones: a demo trained on
them wrote "XXXX XXXX" into drafts of real radiographs. So every text a model learns from (the
tokenizer's corpus, the language model's and the drafting stage's targets, the reference reports in
the index and so in every prompt) has them taken out here, and a model never sees one. The references
a draft is scored against in `rrg-eval` keep them, as the papers' tables do.

A marker that stands for a word the sentence needs ("The XXXX are intact.", "Compared to ___, ...")
cannot be taken out without leaving a broken sentence for the model to learn, so such a sentence is
left out, unless it states a finding: then it keeps its words without the marker ("XXXX opacity in the
left base." -> "opacity in the left base."), because a report that lost its findings would teach the
model to leave out what the image shows (leaving them out dropped lung opacity from 119 of the 324
demo training reports that state it, and the demo's drafts stopped stating findings). A sentence whose
markers are asides (in brackets, a slash list, IU's "x-XXXX") keeps its words. A report none of whose
sentences survive keeps them all, cleaned.
"""

from __future__ import annotations

import re

from prompts.labeler import label_report

# "x-XXXX" in IU is "x-ray" in every report that has it (chest x-XXXX, x-XXXX examination).
_MASKED_XRAY = re.compile(r"\b([xX])-XXXX\b")
# A marker with whatever it is glued to (XXXX's, XXXX-a-XXXX, 5XXXX): the fragment means nothing without it.
_MARKED_WORD = re.compile(r"[^\s()]*(?:X{2,}|_{2,})[^\s()]*")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:)])")
_EMPTY_BRACKETS = re.compile(r"\(\s*\)")
_REPEATED_PUNCTUATION = re.compile(r"([.,;:])(?:\s*[.,;:])+")
_SENTENCE_START_PUNCTUATION = re.compile(r"(^|[.!?]\s+)[,;:]\s*")


def has_marker(text: str) -> bool:
    """Whether the text holds a de-identification marker."""
    return bool(re.search(r"X{2,}|_{2,}", text))


_SENTENCE = re.compile(r"[^.!?]*[.!?]+|[^.!?]+$")
# Markers a sentence reads well without: in brackets, or in a slash list next to a word.
_ASIDE = re.compile(r"\([^()]*(?:X{2,}|_{2,})[^()]*\)|\w*(?:X{2,}|_{2,})/\w+|\w+/(?:X{2,}|_{2,})\w*")


def without_markers(text: str) -> str:
    """The report with no de-identification marker: sentences that need theirs left out, the others
    cleaned (see the module docstring)."""
    text = _MASKED_XRAY.sub(r"\1-ray", text)
    sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
    readable = [s for s in sentences if not has_marker(_ASIDE.sub("", s)) or _states_a_finding(s)]
    kept = readable if readable or not sentences else sentences
    return " ".join(cleaned for cleaned in (_clean(s) for s in kept) if cleaned.strip(" .,;:"))


def _states_a_finding(sentence: str) -> bool:
    """Whether the rules labeler reads a finding in the sentence: one of the 13 labels (present, absent or
    uncertain), or another abnormality (which takes "No Finding" away)."""
    labels = label_report(sentence)
    return labels["No Finding"] != "positive" or any(
        status != "blank" for label, status in labels.items() if label != "No Finding"
    )


def _clean(text: str) -> str:
    """The text with its markers (and the words glued to them) taken out, and the punctuation they leave
    behind tidied."""
    text = _MASKED_XRAY.sub(r"\1-ray", text)
    text = _MARKED_WORD.sub(lambda match: _keep_punctuation(match.group(0)), text)
    text = _EMPTY_BRACKETS.sub("", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = _REPEATED_PUNCTUATION.sub(lambda match: match.group(0)[-1] if match.group(0)[-1] == "." else match.group(1), text)
    text = _SENTENCE_START_PUNCTUATION.sub(r"\1", text)
    text = " ".join(text.split()).strip(" ,;:")
    return text[:1].upper() + text[1:]  # "XXXX opacity ..." -> "Opacity ..."


def _keep_punctuation(word: str) -> str:
    """What is left of a marked word: the sentence punctuation that ended it."""
    return word[-1] if word[-1] in ".,;:" else ""
