"""Rule-based CheXpert-style report labeler: 14 CheXbert labels, each positive/negative/uncertain/blank.

Mentions come from `label_phrases`; whether each is asserted, negated or hedged from the clause
reading in `prompts.report_text`. A label's status over the whole report follows CheXpert's
aggregation: positive if any mention is positive, else uncertain if any is, else negative if any
is, else blank. "No Finding" is positive only when no other label but Support Devices is
positive or uncertain and no other abnormality (`OTHER_ABNORMALITY`) is stated or suspected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prompts.label_phrases import LABEL_PHRASES, OTHER_ABNORMALITY, LabelPhrases
from prompts.report_text import Assertion, Clause, parse_report
from prompts.vocabulary import CHEXBERT_LABELS, NO_FINDING

POSITIVE, NEGATIVE, UNCERTAIN, BLANK = "positive", "negative", "uncertain", "blank"
_PRECEDENCE = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1, BLANK: 0}
_FROM_ASSERTION = {Assertion.PRESENT: POSITIVE, Assertion.ABSENT: NEGATIVE, Assertion.UNCERTAIN: UNCERTAIN}
# How far from an anatomy mention its describing word may stand ("enlarged heart",
# "the cardiac silhouette is mildly enlarged").
_ANATOMY_BEFORE, _ANATOMY_AFTER = 5, 8

RULES_LABELER_NAME = "rules"


def _excluded(clause: Clause, phrases: LabelPhrases) -> list[tuple[int, int]]:
    if phrases.exclude is None:
        return []
    return [m.span() for m in phrases.exclude.finditer(clause.text)]


def _mention_statuses(clause: Clause, phrases: LabelPhrases) -> Iterator[str]:
    excluded = _excluded(clause, phrases)

    def mentions(pattern):
        if pattern is None:
            return
        for match in pattern.finditer(clause.text):
            start, end = match.span()
            if not any(s <= start and end <= e for s, e in excluded):
                yield start, end

    for start, end in mentions(phrases.finding):
        yield _FROM_ASSERTION[clause.assertion(start, end)]
    for start, end in mentions(phrases.hedged):
        assertion = clause.assertion(start, end)
        yield NEGATIVE if assertion is Assertion.ABSENT else UNCERTAIN
    for start, end in mentions(phrases.anatomy):
        status = _anatomy_status(clause, phrases, start, end)
        if status is not None:
            yield status


def _anatomy_status(clause: Clause, phrases: LabelPhrases, start: int, end: int) -> str | None:
    """A structure's mention says something only with a word about its state."""
    assertion = clause.assertion(start, end)
    if assertion is Assertion.ABSENT:
        return NEGATIVE
    if clause.phrase_near(phrases.abnormal, start, end, _ANATOMY_BEFORE, _ANATOMY_AFTER):
        return _FROM_ASSERTION[assertion]
    if assertion is Assertion.UNCERTAIN:
        return UNCERTAIN
    if phrases.stable is not None and clause.phrase_near(
        phrases.stable, start, end, _ANATOMY_BEFORE, _ANATOMY_AFTER
    ):
        return UNCERTAIN
    return None


def _strongest(statuses: Iterable[str]) -> str:
    return max(statuses, key=_PRECEDENCE.__getitem__, default=BLANK)


def label_report(report: str) -> dict[str, str]:
    """The 14 CheXbert labels of one report, each 'positive', 'negative', 'uncertain' or 'blank'."""
    clauses = parse_report(report)
    labels = {
        label: _strongest(s for clause in clauses for s in _mention_statuses(clause, phrases))
        for label, phrases in LABEL_PHRASES.items()
    }
    labels[NO_FINDING] = POSITIVE if _is_no_finding(clauses, labels) else BLANK
    return {label: labels[label] for label in CHEXBERT_LABELS}


def _is_no_finding(clauses: list[Clause], labels: dict[str, str]) -> bool:
    if any(status in (POSITIVE, UNCERTAIN) for label, status in labels.items() if label != "Support Devices"):
        return False
    for clause in clauses:
        for match in OTHER_ABNORMALITY.finditer(clause.text):
            if clause.assertion(*match.span()) is not Assertion.ABSENT:
                return False
    return True


class RulesLabeler:
    """The rule labeler behind the labeler interface `rrg-eval` scores with (eval/chexbert.py is
    the other): a name, and reports in, label statuses out."""

    name = RULES_LABELER_NAME

    def label_reports(self, reports: Iterable[str]) -> list[dict[str, str]]:
        return [label_report(report) for report in reports]
