"""MedKLIP-style triplets: each report as (entity, position, exist) over 75 entities x 51 positions.

REVTAF's local reference prompts (eq. 8-9) are MedKLIP triplets, "effusion at left costophrenic:
present", and the phantom renderer draws each present finding at its positions. MedKLIP reads
them off RadGraph parses; we read them off the text with the shared clause reader:

- entities and positions are found by the phrase tables in `triplet_phrases` (inflections,
  synonyms, laterality, lung zones and lobes);
- exist comes from `report_text`'s assertion of the entity mention: 1 present, 0 absent.
  Uncertain mentions count as present (1), as in MedKLIP, which keeps only definitely absent
  observations as 0; -1 (unmentioned) exists only in `dense_triplets`;
- a mention takes the positions of its own phrase: those in its clause reachable without
  crossing a comma, a verb or a new phrase ("and", "with", ...), plus positions listed with them
  ("left lower lobe and right middle lobe opacities"). Coordinated mentions share a phrase ("no
  infiltrates or masses in the lungs"). Failing that, a mention borrows the nearest position in
  its clause, the subject before it first ("heart size is normal"), but not one another finding
  holds unless a word links the two ("opacity ... may represent atelectasis", "PICC with tip in
  the SVC"). Failing that, the entity's default (`triplet_phrases.DEFAULT_POSITION`: cardiomegaly
  at heart_size, effusion at pleural_unspec, ...), else "unspecified";
- a side named apart from any anatomy ("small left effusion", "effusions bilaterally") places a
  finding of a lateral kind on that side; "bilateral" gives one triplet per side where MedKLIP
  has no bilateral position ("bilateral pleural effusions" -> left_pleural, right_pleural).
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from prompts import triplet_phrases as phrases
from prompts.report_text import Assertion, Clause, assertion_from_cues, parse_report
from prompts.vocabulary import MEDKLIP_ENTITIES, MEDKLIP_POSITIONS

ENTITY_INDEX = {name: i for i, name in enumerate(MEDKLIP_ENTITIES)}
POSITION_INDEX = {name: i for i, name in enumerate(MEDKLIP_POSITIONS)}
PRESENT, ABSENT, UNMENTIONED = 1, 0, -1


@dataclass(frozen=True)
class Triplet:
    """One MedKLIP triplet: an entity, where the report puts it, and whether it is there."""

    entity: str  # one of MEDKLIP_ENTITIES
    position: str  # one of MEDKLIP_POSITIONS
    exist: int  # 1 present (or uncertain), 0 absent

    def to_dict(self) -> dict:
        return {"entity": self.entity, "position": self.position, "exist": self.exist}


def triplet_text(t: Triplet) -> str:
    """The local reference prompt of a triplet: "effusion at left costophrenic: present"."""
    state = "present" if t.exist == PRESENT else "absent"
    return f"{t.entity.replace('_', ' ')} at {t.position.replace('_', ' ')}: {state}"


# --- mentions and position phrases ------------------------------------------------------------


def _alternation(groups: dict[str, str]) -> str:
    return "|".join(f"(?P<{name}>{body})" for name, body in groups.items())


# One alternation each, run once over the whole report (clauses joined by newlines, which no
# phrase crosses): far faster than 75 patterns per clause. The group that matched names the
# entity or position family. A word start written as a lookbehind rather than \b lets the regex
# engine skip ahead on the alternatives' first letters: twice as fast here.
_WORD_START = r"(?<![a-z0-9])"
_ENTITY_RE = re.compile(
    _WORD_START + "(?:" + _alternation({"lookalike": phrases.LOOK_ALIKES, **phrases.ENTITY_PHRASES}) + r")\b",
    re.MULTILINE,
)
_POSITION_RE = re.compile(_WORD_START + "(?:" + _alternation(phrases.POSITION_PHRASES) + r")\b")


@dataclass(frozen=True, slots=True)
class _Mention:
    entity: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Place:
    """A position phrase: a family with its side and zone words, not yet a MedKLIP name."""

    family: str
    start: int
    end: int
    side: str | None  # "left", "right", "both" or None
    zones: tuple[str, ...]  # "lower", "mid", "upper", "apical" for zones and lobes


def _place(family: str, text: str, start: int, end: int) -> _Place:
    words = re.split(r"[ -]", text)
    sides = {phrases.SIDE_WORDS[w] for w in words if w in phrases.SIDE_WORDS}
    side = "both" if "both" in sides or len(sides) == 2 else next(iter(sides), None)  # "right and left"
    zones = tuple(dict.fromkeys(phrases.ZONE_WORDS[w] for w in words if w in phrases.ZONE_WORDS))
    return _Place(family, start, end, side, zones)


def _by_clause(
    pattern: re.Pattern, joined: str, starts: list[int]
) -> Iterator[tuple[int, str, str, int, int]]:
    """(clause index, group name, matched text, start, end) with offsets inside the clause."""
    for match in pattern.finditer(joined):
        at = bisect.bisect_right(starts, match.start()) - 1
        offset = starts[at]
        yield at, match.lastgroup, match.group(), match.start() - offset, match.end() - offset


def _resolve(place: _Place, side: str | None) -> tuple[str, ...]:
    """MedKLIP position names of a position phrase; `side` fills in one the phrase lacks."""
    if place.family in phrases.FIXED:
        return phrases.FIXED[place.family]
    if place.family in POSITION_INDEX:
        return (place.family,)
    side = place.side or side
    if place.family in ("zone", "lobe"):
        keys = [f"{place.family}:{zone}" for zone in place.zones or ("lower",)]
    else:
        keys = [place.family]
    names: list[str] = []
    for key in keys:
        left, right, both, unsided = phrases.LATERAL[key]
        if side in ("left", "right"):
            names.append(left if side == "left" else right)
        else:
            chosen = both if side == "both" else unsided
            names.extend((left, right) if chosen is phrases.BOTH_SIDES else (chosen,))
    return tuple(dict.fromkeys(names))


def _exist(clause: Clause, mention: _Mention) -> int:
    """1 if the clause states or suspects the mention, 0 if it negates it."""
    cues = clause.cues_reaching(mention.start, mention.end)
    if mention.entity in phrases.DESCRIBING:
        cues.discard("negation_both")  # "normal and stable contours": "normal" does not negate "stable"
    if mention.entity in phrases.NORMAL_TYPE:
        # A statement of normality is not negated by the next one ("contour appears normal and
        # vascularity is within normal limits"); only "no", "without" and "not" negate it.
        cues.discard("negation_post")
    assertion = assertion_from_cues(cues)
    if assertion is Assertion.PRESENT and phrases.NOT_BEFORE.search(clause.text, 0, mention.start):
        return ABSENT
    return ABSENT if assertion is Assertion.ABSENT else PRESENT  # uncertain counts as present


# --- the words between a mention and a position -----------------------------------------------

Span = _Mention | _Place


def _gap(text: str, a: Span, b: Span) -> str | None:
    """The text between two spans; None where they overlap."""
    if a.end <= b.start:
        return text[a.end : b.start]
    if b.end <= a.start:
        return text[b.end : a.start]
    return None


def _distance(a: Span, b: Span) -> int:
    return max(b.start - a.end, a.start - b.end, 0)


def _reaches(text: str, mention: _Mention, place: _Place) -> bool:
    """Whether a position phrase belongs to the mention's own phrase."""
    gap = _gap(text, mention, place)
    if gap is None:
        return True
    if place.start >= mention.end:
        gap = phrases.PRESENCE.sub(" ", gap)  # "thickening is present in the left apex"
    return len(gap.split()) <= phrases.OWN_PHRASE_WORDS and not phrases.BLOCKER.search(gap)


def _linked(text: str, mention: _Mention, place: _Place) -> bool:
    """Whether a linking word lends the position before it to the mention after it."""
    if place.end > mention.start:
        return False
    gap = text[place.end : mention.start]
    return phrases.LINK.search(gap) is not None and not phrases.NO_LINK.search(gap)


def _side_follows(text: str, mention: _Mention, side: _Place) -> bool:
    """A side word said of the mention's clause subject: "effusion is present on the right"."""
    gap = _gap(text, mention, side)
    if gap is None:
        return False
    return len(gap.split()) <= phrases.OWN_PHRASE_WORDS and not phrases.NO_SIDE.search(gap)


def _joined(text: str, a: _Mention, b: _Mention, pattern: re.Pattern) -> bool:
    first, second = (a, b) if a.end <= b.start else (b, a)
    return pattern.fullmatch(text, first.end, second.start) is not None


def _list_links(text: str, places: list[_Place]) -> list[bool]:
    """For each neighbouring pair of positions, whether they are items of one list.

    Commas join items of one kind ("right upper lobe, right middle lobe"), or of any kinds in a list
    that an "and" closes ("heart size, mediastinal contour, and pulmonary vascularity"), but not
    the next statement ("normal heart size and mediastinum, lungs are clear").
    """
    kinds: list[str | None] = []  # "and", "comma" or None, per pair
    for a, b in itertools.pairwise(places):
        gap = _gap(text, a, b)
        same_kind = a.family == b.family or {a.family, b.family} <= phrases.LUNG_FAMILIES
        if gap is None or not phrases.LIST_GAP.fullmatch(gap):
            kinds.append(None)
        else:
            kinds.append("and" if phrases.AND.search(gap) or "," not in gap or same_kind else "comma")
    links, closed = [False] * len(kinds), False
    for k in reversed(range(len(kinds))):
        closed = kinds[k] == "and" or (kinds[k] == "comma" and closed)
        links[k] = closed
    return links


def _with_list(links: list[bool], chosen: set[int], others: set[int]) -> list[int]:
    """The chosen positions and every position listed with them, in text order. A list stops
    before a position another mention takes directly ("low lung volumes and bronchovascular
    crowding": the lung volumes are low, the vessels crowded)."""

    def free(k: int) -> bool:
        return k not in others or k in chosen

    for start in list(chosen):
        k = start  # links[k] joins positions k and k + 1
        while k > 0 and links[k - 1] and free(k - 1):
            k -= 1
            chosen.add(k)
        k = start
        while k < len(links) and links[k] and free(k + 1):
            k += 1
            chosen.add(k)
    return sorted(chosen)


# --- one clause ---------------------------------------------------------------------------------

Found = list[tuple[str, str | None]]  # (position, the side the text gave it)


@dataclass(frozen=True, slots=True)
class _Candidate:
    triplet: Triplet
    clause: int
    side: str | None


class _ClauseReading:
    """The mentions and position phrases of one clause, and which positions each mention takes."""

    def __init__(self, clause: Clause, mentions: list[_Mention], places: list[_Place]):
        self.clause, self.text, self.mentions = clause, clause.text, mentions
        self.anatomy = [p for p in places if p.family != "side"]
        self.sides = [p for p in places if p.family == "side"]
        self.links = _list_links(self.text, self.anatomy)
        self.direct = [{j for j, p in enumerate(self.anatomy) if _reaches(self.text, m, p)} for m in mentions]
        self.own = [self._listed(i, self.direct[i]) for i in range(len(mentions))]
        self.own_sides = [[s for s in self.sides if _reaches(self.text, m, s)] for m in mentions]
        self._share_coordinated()
        self.holders: dict[int, set[int]] = {}
        for i, held in enumerate(self.own):
            for j in held:
                self.holders.setdefault(j, set()).add(i)

    def _listed(self, i: int, chosen: set[int]) -> list[int]:
        others = set().union(*(d for k, d in enumerate(self.direct) if k != i))
        return _with_list(self.links, set(chosen), others)

    def _share_coordinated(self) -> None:
        """Coordinated mentions share a phrase: "no infiltrates or masses in the lungs", "normal and
        stable cardiomediastinal contours", "aortic ectasia and tortuosity"."""
        mentions, own, text = self.mentions, self.own, self.text
        trailing: list[int] = []  # a prepositional phrase carried leftwards along a list
        for i in reversed(range(len(mentions))):
            if own[i]:
                after = [j for j in own[i] if self.anatomy[j].start >= mentions[i].end]
                first = self.anatomy[after[0]] if after else None
                is_phrase = first and phrases.PREPOSITION.match(text, mentions[i].end, first.start + 1)
                trailing = after if is_phrase else []
            elif trailing and _joined(text, mentions[i], mentions[i + 1], phrases.LIST_JOIN):
                if mentions[i].entity not in phrases.KEEPS_DEFAULT:
                    own[i] = trailing
            else:
                trailing = []
        for i in range(1, len(mentions)):
            # "lingular scarring and/or atelectasis": the lung words before a pair are both of theirs.
            if own[i] or not own[i - 1] or mentions[i].entity in phrases.KEEPS_DEFAULT:
                continue
            first = mentions[i - 1]
            leading = [self.anatomy[j] for j in own[i - 1]]
            lung_words = all(p.end <= first.start and p.family in phrases.LUNG_TISSUE for p in leading)
            if lung_words and _joined(text, first, mentions[i], phrases.AND_JOIN):
                own[i] = own[i - 1]
        for i, mention in enumerate(mentions):
            if own[i] or mention.entity not in phrases.DESCRIBING:
                continue
            neighbours = [k for k in (i + 1, i - 1) if 0 <= k < len(mentions) and own[k]]
            for k in neighbours:
                if _joined(text, mention, mentions[k], phrases.AND_JOIN):
                    own[i] = own[k]
                    break

    def _may_borrow(self, i: int, j: int) -> bool:
        """A position another finding holds is lent only across a linking word, device to device, or
        to a describing word said of that finding ("sternotomy wires are intact")."""
        mention, place = self.mentions[i], self.anatomy[j]
        if _linked(self.text, mention, place):
            return True
        if mention.entity in phrases.KEEPS_DEFAULT:
            return False
        if j not in self.holders or (mention.entity in phrases.DESCRIBING and place.end <= mention.start):
            return True
        devices = phrases.DEVICES
        return mention.entity in devices and any(self.mentions[h].entity in devices for h in self.holders[j])

    def _side(self, i: int) -> str | None:
        """The side word said of mention i, if any."""
        mention = self.mentions[i]
        side_places = self.own_sides[i]
        if not side_places and mention.entity in phrases.SIDED_FAMILY:
            # "Pleural effusion is present on the right": a side word no other mention holds.
            held = {id(s) for k, found in enumerate(self.own_sides) if k != i for s in found}
            side_places = [
                s for s in self.sides if id(s) not in held and _side_follows(self.text, mention, s)
            ]
        return min(side_places, key=lambda s: _distance(mention, s)).side if side_places else None

    def positions(self, i: int, found_so_far: dict[int, Found]) -> Found:
        """Positions of mention i: its own phrase, else the finding it describes, else borrowed."""
        mention = self.mentions[i]
        if mention.entity in phrases.EXAM_LEVEL:
            return [("unspecified", None)]
        chosen = self.own[i]
        if not chosen and mention.entity in phrases.DESCRIBING:
            # "stable cardiomegaly": a describing word right before a finding is where that finding is.
            for k in (i + 1, i - 1):
                if k in found_so_far and _joined(self.text, mention, self.mentions[k], phrases.ADJACENT):
                    return found_so_far[k]
        if not chosen:
            borrowable = [j for j in range(len(self.anatomy)) if self._may_borrow(i, j)]
            # The subject of "X is normal" stands before; take the nearest position there first.
            before = [j for j in borrowable if self.anatomy[j].end <= mention.start]
            chosen = self._listed(i, set(before[-1:] or borrowable[:1]))

        side = self._side(i)
        named_sides = {self.anatomy[j].side for j in chosen} - {None}
        if side is None and len(named_sides) == 1:
            side = named_sides.pop()  # "pleural thickening in the left apex": the left pleura
        found: Found = []
        for j in chosen:
            place = self.anatomy[j]
            found += [(name, place.side or side) for name in _resolve(place, side)]
        family = phrases.SIDED_FAMILY.get(mention.entity)
        if family and side and not chosen:
            # "small left effusion": the side word names a side of the entity's own family.
            found += [(name, side) for name in _resolve(_Place(family, 0, 0, side, ()), None)]
        default = phrases.DEFAULT_POSITION.get(mention.entity, "unspecified")
        return list(dict.fromkeys(found)) or [(default, side)]

    def candidates(self, at: int) -> Iterator[_Candidate]:
        """Triplet candidates of every mention, in text order."""
        found: dict[int, Found] = {}
        # Findings first, then describing words from the right, so that one can take the position
        # of the word it stands before ("stable borderline cardiomegaly").
        describing = [i for i, m in enumerate(self.mentions) if m.entity in phrases.DESCRIBING]
        findings = [i for i, m in enumerate(self.mentions) if m.entity not in phrases.DESCRIBING]
        for i in findings + describing[::-1]:
            found[i] = self.positions(i, found)
        for i, mention in enumerate(self.mentions):
            exist = _exist(self.clause, mention)
            for position, side in found[i]:
                yield _Candidate(Triplet(mention.entity, position, exist), at, side)


# --- the report ---------------------------------------------------------------------------------


def extract_triplets(report: str) -> list[Triplet]:
    """The mentioned triplets of a report, deduplicated, in report order."""
    clauses = parse_report(report)
    if not clauses:
        return []
    joined = "\n".join(clause.text for clause in clauses)
    starts = list(itertools.accumulate((len(clause.text) + 1 for clause in clauses[:-1]), initial=0))

    mentions: list[list[_Mention]] = [[] for _ in clauses]
    for at, group, _, start, end in _by_clause(_ENTITY_RE, joined, starts):
        if group != "lookalike":
            mentions[at].append(_Mention(group, start, end))
    places: list[list[_Place]] = [[] for _ in clauses]
    for at, family, matched, start, end in _by_clause(_POSITION_RE, joined, starts):
        places[at].append(_place(family, matched, start, end))

    candidates = [
        candidate
        for at, clause in enumerate(clauses)
        if mentions[at]
        for candidate in _ClauseReading(clause, mentions[at], places[at]).candidates(at)
    ]
    return _deduplicate(candidates)


def _deduplicate(candidates: list[_Candidate]) -> list[Triplet]:
    """Present wins over absent for one (entity, position), unless the two are different findings:
    stated in different clauses of different sides ("old left rib fracture. no right rib fracture").
    An "unspecified" one adds nothing beside the same statement placed in the same clause
    ("vascular redistribution and cephalization")."""
    present: dict[tuple[str, str], list[_Candidate]] = {}
    placed = set()
    for c in candidates:
        t = c.triplet
        if t.exist == PRESENT:
            present.setdefault((t.entity, t.position), []).append(c)
        if t.position != "unspecified":
            placed.add((t.entity, t.exist, c.clause))

    def kept(c: _Candidate) -> bool:
        t = c.triplet
        if t.position == "unspecified" and (t.entity, t.exist, c.clause) in placed:
            return False
        rivals = present.get((t.entity, t.position), [])
        return t.exist == PRESENT or all(
            p.clause != c.clause and p.side and c.side and p.side != c.side for p in rivals
        )

    return list(dict.fromkeys(c.triplet for c in candidates if kept(c)))


def dense_triplets(triplets: Sequence[Triplet]) -> tuple[np.ndarray, np.ndarray]:
    """MedKLIP's dense labels: exist (75,) int8 in {1, 0, -1} and positions (75, 51) bool.

    An entity's exist is 1 if any triplet has it present, else 0 if any has it absent, else -1;
    its positions are those of the triplets that agree with that exist value.
    """
    exist = np.full(len(MEDKLIP_ENTITIES), UNMENTIONED, dtype=np.int8)  # (75,)
    for t in triplets:
        e = ENTITY_INDEX[t.entity]
        exist[e] = max(exist[e], t.exist)
    positions = np.zeros((len(MEDKLIP_ENTITIES), len(MEDKLIP_POSITIONS)), dtype=bool)  # (75, 51)
    for t in triplets:
        e = ENTITY_INDEX[t.entity]
        if t.exist == exist[e]:
            positions[e, POSITION_INDEX[t.position]] = True
    return exist, positions
