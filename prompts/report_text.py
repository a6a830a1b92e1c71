"""Reading radiology report text: sentences, clauses, and whether a mention is asserted.

The report labeler (CheXpert-style labels, in `eval`) and the MedKLIP triplet extractor (here in
`prompts`) both need the same answer for a phrase found in a report: is the finding stated as
present, absent, or uncertain? CheXpert answers it with Semgrex rules over dependency parses
(its rule files are in ../shared/reference/chexpert_labeler/patterns). We read those rules for
what must be caught and answer with surface cues and scopes instead, which needs no parser and
labels thousands of reports a second:

- a report is cut into sentences, a sentence into clauses at words that start a new statement
  ("but", "however", ";", "which", ...); a cue never reaches across a clause;
- pre-cues ("no", "without", "possible", "normal") reach forwards to the mentions after them,
  post-cues ("is not seen", "has resolved", "cannot be excluded") backwards to the subject of
  their own verb;
- precedence follows CheXpert's three rule files: uncertainty that contains a negation
  ("cannot be excluded") first, then negation, then uncertainty, else present.
"""

from __future__ import annotations

import bisect
import itertools
import re
from dataclasses import dataclass
from enum import Enum


class Assertion(str, Enum):
    """How a report states a mentioned finding."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


# --- text normalisation and splitting ------------------------------------------------------------

# IU X-Ray replaces identifying words (and, often, ordinary ones) with "XXXX"; keep it as one
# neutral token so that it can neither cue nor break a clause.
_DEID = re.compile(r"\bx{2,}\b", re.IGNORECASE)
_ABBREVIATIONS = re.compile(r"\b(vs|dr|approx|e\.g|i\.e|no)\.(?=\s+[a-z0-9])", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|[.!?]{2,}\s*|\n\s*\n?|(?<=[a-z])\.(?=[a-z]{2,})", re.IGNORECASE)
_LIST_NUMBER = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")
# Words and phrases after which the text states something new: no cue reaches across them.
_CLAUSE_BREAK = re.compile(
    r"\s*[;:]\s*|\s+-\s+|,?\s+\b(?:but|however|although|though|whereas|except|yet|which|"
    r"apart from|aside from|with the exception of|other than|otherwise)\b,?\s*"
)


def normalise(text: str) -> str:
    """Lower-case, with de-identification tokens as 'xxxx' and whitespace collapsed."""
    text = _DEID.sub("xxxx", text)
    return " ".join(text.lower().split())


def split_sentences(report: str) -> list[str]:
    """Sentences of a report, normalised, without their final punctuation."""
    # "vs." and "no." inside a sentence are not its end.
    report = _ABBREVIATIONS.sub(lambda m: m.group(1).replace(".", ""), report)
    sentences = []
    for piece in _SENTENCE_END.split(report):
        piece = _LIST_NUMBER.sub("", piece or "")
        piece = normalise(piece).strip(" .!?")
        if piece:
            sentences.append(piece)
    return sentences


def split_clauses(sentence: str) -> list[str]:
    """Clauses of one normalised sentence."""
    return [c.strip(" ,") for c in _CLAUSE_BREAK.split(sentence) if c and c.strip(" ,")]


# --- cues --------------------------------------------------------------------------------------

_COPULA = r"(?:(?:is|are|was|were|has|have|had)(?: been)?|appears?|remains?|seems?)"
_ADVERB = r"(?:(?:now|again|otherwise|still|currently|also|essentially|grossly|overall)\s+)?"

# Uncertainty that is phrased as a negation; checked before negation (CheXpert's pre-negation
# uncertainty rules).
_UNCERTAIN_OVERRIDE = re.compile(
    rf"\b(?:{_COPULA}\s+)?(?:cannot|can ?not|can't|could not|may not|difficult to|unable to|not)\s+(?:be\s+)?"
    r"(?:entirely\s+|completely\s+|definitely\s+|totally\s+|fully\s+)?(?:exclude[ds]?|rule[ds]? out|ruled out)\b"
    r"|\bno evidence to rule out\b"
)

# "no change in X" says X is as before, not that X is absent.
_NO_CHANGE = re.compile(
    r"\bno\s+(?:significant\s+|appreciable\s+|substantial\s+|definite\s+|major\s+|visible\s+)?"
    r"(?:interval\s+)?(?:change|changes|progression|increase|decrease|worsening|improvement)\b"
)

# Pre-cues reaching to the end of the clause (through lists: "no effusion, pneumothorax or ...").
_NEGATION_PRE = re.compile(
    r"\b(?:no|without|neither|nor|negative for|free of|free from|clear of|absence of|absent|"
    r"no longer|rule out|ruled out|to exclude|exclude|excluding|r/o|resolution of|resolved|"
    r"removal of|removed|history of|disappearance of|clearing of|interval clearing of|"
    r"not|never)\b"
)
# Bare words that a post-cue pattern also matches and that qualify what follows them too
# ("normal heart size", "possible pneumonia"): negations reach forwards a few tokens, uncertainty
# to the end of the clause.
_BOTH_WAYS = {
    "normal",
    "unremarkable",
    "top normal",
    "top-normal",
    "high normal",
    "high-normal",
    "absent",
    "resolved",
    "removed",
    "possible",
    "suspected",
    "questionable",
    "borderline",
    "equivocal",
    "unlikely",
    "less likely",
}
_SHORT_REACH = 4

_NEGATION_POST = re.compile(
    rf"\b(?:{_COPULA}\s+)?{_ADVERB}(?:"
    r"not\s+(?:\w+ly\s+)?(?:seen|identified|visuali[sz]ed|present|evident|demonstrated|noted|detected|"
    r"enlarged|apparent|visible|observed)|"
    r"no longer\s+(?:seen|visuali[sz]ed|present|evident|apparent|identified|demonstrated|visible)|"
    r"absent|resolved|resolving completely|cleared|removed|"
    r"(?:within|at)\s+(?:the\s+)?(?:upper\s+)?(?:limits?|range)\s+of\s+normal|"
    r"(?:within\s+)?normal\s+limits|normal|unremarkable|top[- ]normal|high[- ]normal|negative(?!\s+for)"
    r")\b"
)
# A post-cue reaches back over at most this many tokens to its subject.
_POST_REACH = 12

_UNCERTAIN_PRE = re.compile(
    r"\b(?:possible|possibly|probable|probably|questionable|question of|questioned|"
    r"suspicious for|suspicion (?:for|of)|suspected|suspect|suspicious|concerning for|concern for|"
    r"worrisome for|may|might|could|suggest|suggests|suggested|suggesting|suggestive of|"
    r"suggestion of|borderline|equivocal|indeterminate|differential|"
    r"less likely|unlikely|question|(?:for )?evaluation (?:of|for)|to evaluate(?: for)?|"
    r"assess(?:ment)? (?:of|for)|correlate(?: clinically)? for)\b"
)
_UNCERTAIN_POST = re.compile(
    rf"\b(?:{_COPULA}\s+)?{_ADVERB}(?:"
    r"possible|suspected|questioned|questionable|borderline|equivocal|"
    r"(?:could|may|might|can)\s+be\s+present|"
    r"(?:poorly|incompletely|not well|not clearly|not completely)[\s-]+(?:evaluated|visuali[sz]ed|seen|assessed)|"
    r"not\s+(?:well\s+)?appreciated|obscured|"
    r"less likely|unlikely|not entirely excluded"
    r")\b"
)
# "atelectasis or pneumonia", "atelectasis versus scarring": both uncertain, unless a negation
# covers the list ("no X or Y").
_ALTERNATIVE = re.compile(r"\b(?:or|versus|vs|and/or)\b")
_ALTERNATIVE_REACH = 3

# Where a pre-cue's reach ends inside a clause: a new subject starts, or "with" adds a finding
# ("removal of the chest tube with right basilar atelectasis").
_SCOPE_END = re.compile(
    r",\s+(?:the|there|this|these|that|it|a|an)\b|\band\s+(?:there|this|these|it)\b|\bthere\s+(?:is|are)\b|"
    r"\bwith\b"
)
_VERB = re.compile(
    r"\b(?:is|are|was|were|has|have|had|appears?|remains?|seems?|shows?|demonstrates?|measures?)\b"
)

_VERB_NUMBER = {verb: "singular" for verb in ("is", "was", "has", "appears", "remains", "seems")}
_VERB_NUMBER.update({verb: "plural" for verb in ("are", "were", "have", "had", "appear", "remain", "seem")})
_SIDES = {
    "left": "left",
    "right": "right",
    "bilateral": "both",
    "bilaterally": "both",
    "bibasilar": "both",
    "biapical": "both",
    "both": "both",
}
_TOKEN = re.compile(r"[a-z0-9/'\-]+|,")
# Tokens that end a describing word's attachment to a mention ("enlarged heart" but not
# "enlarged heart, stable mediastinum"; "heart and mediastinum are stable" describes both).
_ATTACH_BREAK_BEFORE = {",", "and", "with", "without", "or", "but"}
_ATTACH_BREAK_AFTER = {",", "with", "without", "but"}


@dataclass(frozen=True)
class Cue:
    """One cue found in a clause, as a token range [start, end)."""

    kind: str
    start: int
    end: int
    # For cues read backwards: "singular" or "plural" by their verb ("is normal", "are normal"),
    # None when they have none ("heart size normal").
    number: str | None = None


class Clause:
    """A clause with its tokens and cues located once, then asked about any number of mentions."""

    __slots__ = ("_scope_ends", "_token_ends", "_token_starts", "_verbs", "_words", "cues", "text")

    def __init__(self, text: str):
        self.text = text
        tokens = list(_TOKEN.finditer(text))
        spans = [m.span() for m in tokens]
        self._words = [m.group(0) for m in tokens]
        self._token_starts = [s for s, _ in spans]
        self._token_ends = [e for _, e in spans]
        self.cues = self._find_cues()
        self._scope_ends = [self.token_range(*m.span())[0] for m in _SCOPE_END.finditer(text)]
        self._scope_ends += self._laterality_contrasts()
        self._verbs = [self.token_range(*m.span())[0] for m in _VERB.finditer(text)]

    def token_range(self, char_start: int, char_end: int) -> tuple[int, int]:
        """Token indices [first, last+1) covering a character span."""
        first = bisect.bisect_right(self._token_ends, char_start)
        last = bisect.bisect_left(self._token_starts, char_end)
        return first, max(last, first + 1)

    def _laterality_contrasts(self) -> list[int]:
        """Commas between parts naming different sides: "no left pneumothorax, small right pneumothorax"."""
        commas = [i for i, w in enumerate(self._words) if w == ","]
        bounds = [-1, *commas, len(self._words)]
        sides = [
            {_SIDES[w] for w in self._words[a + 1 : b] if w in _SIDES} for a, b in itertools.pairwise(bounds)
        ]
        return [
            comma
            for comma, (before, after) in zip(commas, itertools.pairwise(sides))
            if before and after and before != after
        ]

    def _find_cues(self) -> list[Cue]:
        text = self.text
        masked: list[tuple[int, int]] = []
        cues: list[Cue] = []

        def add(kind: str, pattern: re.Pattern, mask: bool = True) -> None:
            for match in pattern.finditer(text):
                span = match.span()
                if any(s < span[1] and span[0] < e for s, e in masked):
                    continue
                both_ways = kind.endswith("_post") and match.group(0) in _BOTH_WAYS
                number = _VERB_NUMBER.get(match.group(0).split(" ", 1)[0])
                cues.append(
                    Cue(
                        kind.replace("_post", "_both") if both_ways else kind,
                        *self.token_range(*span),
                        number,
                    )
                )
                if mask:
                    masked.append(span)

        # Order matters: a phrase claimed by an earlier kind is not read again by a later one.
        add("uncertain_override", _UNCERTAIN_OVERRIDE)
        add("no_change", _NO_CHANGE)
        add("negation_post", _NEGATION_POST)
        add("uncertain_post", _UNCERTAIN_POST)
        add("negation_pre", _NEGATION_PRE)
        add("uncertain_pre", _UNCERTAIN_PRE)
        add("alternative", _ALTERNATIVE)
        return cues

    def _scope_is_open(self, start: int, end: int) -> bool:
        return not any(start <= s < end for s in self._scope_ends)

    def _reaches(self, cue: Cue, first: int, last: int) -> bool:
        """Whether a cue applies to the mention occupying tokens [first, last)."""
        if cue.kind in ("negation_pre", "uncertain_pre"):
            return cue.end <= first and self._scope_is_open(cue.end, first)
        if cue.kind == "negation_both" and cue.end <= first:
            between = self._words[cue.end : first]
            return len(between) <= _SHORT_REACH and not _ATTACH_BREAK_AFTER.intersection(between)
        if cue.kind == "uncertain_both" and cue.end <= first:
            return self._scope_is_open(cue.end, first)
        if cue.kind == "alternative":
            if cue.end <= first:
                between = self._words[cue.end : first]
            elif cue.start >= last:
                between = self._words[last : cue.start]
            else:
                return False
            return len(between) < _ALTERNATIVE_REACH and "," not in between
        if cue.kind in ("negation_post", "uncertain_post", "negation_both", "uncertain_both"):
            return self._reaches_back(cue, last)
        if cue.kind == "no_change":
            return cue.end <= first and self._scope_is_open(cue.end, first)
        if cue.kind == "uncertain_override":
            return (cue.end <= first and self._scope_is_open(cue.end, first)) or self._reaches_back(cue, last)
        return False

    def _reaches_back(self, cue: Cue, last: int) -> bool:
        """Whether a cue read backwards speaks of the mention ending at token `last`: the cue is
        about its own verb's subject, so no other verb may stand between; a singular verb has one
        subject ("effusion and the heart size is normal" says nothing of the effusion), and only a
        plural one reaches back over a comma-separated list ("heart size, contours and vasculature
        are normal")."""
        if cue.start < last or cue.start - last > _POST_REACH:
            return False
        if any(last <= v < cue.start for v in self._verbs):
            return False
        between = self._words[last : cue.start]
        if "," in between and cue.number != "plural":
            return False
        return not ("and" in between and cue.number == "singular")

    def cues_reaching(self, char_start: int, char_end: int) -> set[str]:
        """Kinds of the cues that apply to the mention at this character span."""
        first, last = self.token_range(char_start, char_end)
        return {cue.kind for cue in self.cues if self._reaches(cue, first, last)}

    def assertion(self, char_start: int, char_end: int) -> Assertion:
        """How this clause states the mention at this character span."""
        return assertion_from_cues(self.cues_reaching(char_start, char_end))

    def phrase_near(
        self, pattern: re.Pattern, char_start: int, char_end: int, before: int, after: int
    ) -> bool:
        """Whether `pattern` describes the mention: within `before` tokens ahead or `after` behind it,
        with no comma or new phrase ("and", "with", ...) between, so that it is not another subject's."""
        first, last = self.token_range(char_start, char_end)
        for match in pattern.finditer(self.text):
            m_first, m_last = self.token_range(*match.span())
            if m_last <= first and first - m_last <= before:
                if not _ATTACH_BREAK_BEFORE.intersection(self._words[m_last:first]):
                    return True
            elif (
                m_first >= last
                and m_first - last <= after
                and not _ATTACH_BREAK_AFTER.intersection(self._words[last:m_first])
            ):
                return True
        return False


def assertion_from_cues(kinds: set[str]) -> Assertion:
    """CheXpert's precedence: negated uncertainty, then negation, then uncertainty."""
    if "uncertain_override" in kinds:
        return Assertion.UNCERTAIN
    if kinds & {"negation_pre", "negation_post", "negation_both"}:
        return Assertion.ABSENT
    if "no_change" in kinds:
        kinds = kinds - {"alternative"}  # "no change in X or Y" lists what is stable
    if kinds & {"uncertain_pre", "uncertain_post", "uncertain_both", "alternative"}:
        return Assertion.UNCERTAIN
    return Assertion.PRESENT


def parse_report(report: str) -> list[Clause]:
    """Every clause of a report, in order."""
    return [Clause(clause) for sentence in split_sentences(report) for clause in split_clauses(sentence)]
