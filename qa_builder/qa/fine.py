"""Fine pairs of one report: per concept, its closed and attribute pairs, and the abnormality list.

* Only current mentions (temporality != 'historical') in FINDINGS / IMPRESSION count (the caller
  groups them per concept, in order of first mention).
* Per concept, positive beats uncertain beats negative. A mention whose change is 'resolved'
  (positive or negative wording) counts as an explicit negative now, and answers the change question.
* QA answers never claim more certainty than the report: one alternative of a differential
  ("atelectasis versus scarring", findings `differential`) and a guess ("probable cardiomegaly",
  findings `probable`) count as uncertain, whatever the label convention, and a qualified negation ("no large consolidation", findings `qualifier`) counts as no
  statement at all: no plain "no" rests on it.
* scheme 'chexpert' / 'chestxray14' keeps per-concept pairs for concepts whose mentions carry a label
  of that scheme; 'all' keeps every concept. The abnormality list always uses every concept.
* Every pair lists its evidence mention ids and their sentences.

The rules per question family are in closed.py (presence, verify), attribute.py (choose, location,
severity, type, size, change) and abnormality.py (the list). This module classifies a concept's
mentions once and replays the resulting plan (see _fine).
"""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Mapping, Sequence

from .attribute import answer_filter
from .common import BOTH, GOLDEN, MASK64, NO_SIDE, PLAIN_TYPES, SIDES, evidence
from .config import QUESTION_TYPES
from .vocab import ConceptInfo

# What a concept's fine pairs read of a mention besides its evidence fields (see _plan).
MENTION_KEYS = ("certainty", "laterality", "location", "severity", "descriptor", "size", "change", "differential",
                "qualifier", "probable")
_MENTION_VALUES = itemgetter(*MENTION_KEYS)


_VERIFY = QUESTION_TYPES["verify"][0], "verify", "verify"  # (granularity, type, question key)
_VERIFY_TYPE = QUESTION_TYPES["verify"][1]


_SIDE_WORDS = {"left": re.compile(r"\b(?:left|bilateral\w*|both|bi\w+)\b", re.IGNORECASE),
               "right": re.compile(r"\b(?:right|bilateral\w*|both|bi\w+)\b", re.IGNORECASE)}


def _names_side(ms: Sequence[Mapping], side: str) -> bool:
    """Some sentence of the mentions names `side` (or both): the parser may have missed that it is this
    finding's, so the wrong-side 'no' is not asked ("Healed right 10th and left 9th rib fractures")."""
    pattern = _SIDE_WORDS[side]
    return any(pattern.search(m["sentence"]) for m in ms)


def _region_sides(groups: Mapping[ConceptQA, list]) -> dict[str, set[str]]:
    """region -> the sides its findings (any certainty but negative) are said to be on, in this report."""
    out: dict[str, set[str]] = {}
    for cq, ms in groups.items():
        for m in ms:
            if m["certainty"] != "negative":
                s = SIDES.get(m.get("laterality"))
                if s:
                    out.setdefault(cq.region, set()).update(s)
    return out


def _plain(values: tuple) -> bool:
    return all([type(v) in PLAIN_TYPES or type(v) is bool for v in values])


def _mention_values(m: Mapping) -> tuple:
    """_MENTION_VALUES(m) for a mention lacking optional fields (certainty is required)."""
    return (m["certainty"],) + tuple([m.get(k) for k in MENTION_KEYS[1:]])


class ConceptQA:
    """What the fine pairs of one concept need on every report, looked up once per (generator,
    concept): display data, the presence question entry and (filled on first use, see
    FineQuestions._concept_entry) the entries of its other questions."""

    __slots__ = ("cid", "info", "region", "is_finding", "sort_key", "name", "presence", "entries", "answer_filter",
                 "plans1", "plans")
    # presence: (paraphrases, key hash, their number, concept id, region), or None without presence pairs

    def __init__(self, gen, cid: str, info: ConceptInfo) -> None:
        self.cid = cid
        self.info = info
        self.region = info.region
        self.is_finding = info.kind == "finding"  # devices and normal variants are not abnormalities
        self.sort_key = (info.order, info.id)  # concepts.yaml order; concepts it lacks after, by id
        self.name = info.name
        self.presence = (*gen._q_entry("presence", cid, info), cid, info.region) if "presence" in gen.types else None
        self.entries: dict[str, tuple] = {}
        self.answer_filter = answer_filter(info.name, info.kind, info.implied, info.skip)
        # plan caches shared by the concepts with this answer filter (see FineQuestions._fine)
        self.plans1, self.plans = gen._plan_caches.setdefault(self.answer_filter, ({}, {}))


class FineQuestions:
    """Mixin of QAGenerator."""

    def _init_fine(self) -> None:
        self._cq: dict[str, ConceptQA] = {}  # concept id -> its fine-pair constants
        # per answer filter: _plan by the values of a concept's one mention / by the tuple of its
        # mentions' values (with scheme labels: (values, per-mention has-a-label flags))
        self._plan_caches: dict[tuple, tuple[dict, dict]] = {}

    def _concept_qa(self, cid: str) -> ConceptQA:
        cq = self._cq[cid] = ConceptQA(self, cid, self.concepts.get(cid) or self.concept(cid))
        return cq

    def _fine(self, head: tuple, groups: Mapping[ConceptQA, list], out: list, vkeys: dict) -> None:
        """Fine pairs: the abnormality list, then per concept (order of first mention) its pairs.

        Which pairs a concept gets, with which answers, depends only on its mentions' certainty and
        attribute values (MENTION_KEYS), which repeat a lot across reports and concepts. So that is
        worked out once per tuple of values as a _plan and replayed here with the concept's question
        wording (seeded by the report hash) and the report's evidence. One plain unlateralised
        negative ("No pneumothorax.", most concepts of most reports) is replayed without a lookup.
        """
        rid, subject, split, base = head
        scheme = self.config.scheme
        by_scheme = scheme != "all"
        plain = not by_scheme  # the shortcut below ignores scheme labels
        sfx = self._sfx
        presence = self._presence
        no = self.no

        # The abnormality pair comes first but depends on every concept: its row position is held
        # by a placeholder while the concepts are walked once (_abnormality fills or drops it).
        abnormality = "abnormality" in self.types
        if abnormality:
            slot = len(out)
            out.append(None)
        found: list[ConceptQA] = []
        hedged: list[ConceptQA] = []
        region_sides = None  # region -> sides its findings are said to be on (first needed: _region_sides)
        abn_ms: list[Mapping] = []
        negs: list[Mapping] = []

        for cq, ms in groups.items():
            # The plan of plain unlateralised negatives ("No pneumothorax.", also repeated in the
            # impression): presence 'no', all listed as negatives. Taken without a plan lookup.
            if plain:
                if len(ms) == 1:
                    m = ms[0]
                    if (m["certainty"] == "negative" and m.get("laterality") is None and m.get("change") != "resolved"
                            and m.get("qualifier") is None):
                        negs.append(m)
                        if presence:
                            variants, kh, n, cid, region = cq.presence
                            out.append((rid + sfx[len(out)], rid, subject, "fine", "presence",
                                        variants[((((base ^ kh) * GOLDEN) & MASK64) >> 32) % n], no,
                                        "closed", cid, region, [m["mention_id"]], m["sentence"], split))
                        continue
                else:
                    for m in ms:
                        if (m["certainty"] != "negative" or m.get("laterality") is not None
                                or m.get("change") == "resolved" or m.get("qualifier") is not None):
                            break
                    else:
                        negs += ms
                        if presence:
                            ids, text = evidence(ms)
                            variants, kh, n, cid, region = cq.presence
                            out.append((rid + sfx[len(out)], rid, subject, "fine", "presence",
                                        variants[((((base ^ kh) * GOLDEN) & MASK64) >> 32) % n], no,
                                        "closed", cid, region, ids, text, split))
                        continue

            # plan key: the values of the one mention (plans1), or the tuple of their values (plans)
            single = len(ms) == 1
            try:
                key = _MENTION_VALUES(ms[0]) if single else tuple(map(_MENTION_VALUES, ms))
            except KeyError:  # a mention without some optional field: read it as None, like .get
                key = _mention_values(ms[0]) if single else tuple([_mention_values(m) for m in ms])
            flags = None
            values = key
            if by_scheme:
                flags = tuple([m.get(scheme) is not None for m in ms])
                key = (key, flags)
            cache = cq.plans1 if single else cq.plans
            plan = cache.get(key)
            if plan is None:
                plan = self._plan(ms, flags, cq.answer_filter)
                # Values compare with ==: only cache plans of str/None values, so that 1 / 1.0 / True
                # (equal, but printed differently) never share one.
                if len(cache) < 100_000 and (_plain(values) if single else all([_plain(v) for v in values])):
                    cache[key] = plan

            neg_sel, abn_kind, abn_sel, specs, one_ev, one_side = plan
            if neg_sel is None:
                negs += ms
            elif neg_sel:
                negs += map(ms.__getitem__, neg_sel)
            if abn_kind and cq.is_finding:  # devices and normal variants are not abnormalities
                (found if abn_kind == 1 else hedged).append(cq)
                abn_ms += ms if abn_sel is None else map(ms.__getitem__, abn_sel)
            if one_side is not None:  # the wrong side, asked as often as the right one (closed.py)
                if region_sides is None:
                    region_sides = _region_sides(groups)
                other = "right" if one_side == "left" else "left"
                if other not in region_sides.get(cq.region, ()) and not _names_side(ms, other):
                    specs = specs + ((*_VERIFY, self.no, _VERIFY_TYPE, abn_sel, other),)
                    one_ev = one_ev and abn_sel is None
            if not specs:
                continue
            cid, region, entries = cq.cid, cq.region, cq.entries
            if one_ev:  # every pair rests on all the mentions (always so with one mention)
                ids, text = ([ms[0]["mention_id"]], ms[0]["sentence"]) if single else evidence(ms)
                for gran, qtype, qkey, answer, atype, sel, *side in specs:
                    if side:
                        qkey = "verify:" + side[0]
                    variants, kh, n, vkey = entries.get(qkey) or self._concept_entry(cq, qkey)
                    if vkey is not None:
                        vkeys[len(out)] = vkey
                    out.append((rid + sfx[len(out)], rid, subject, gran, qtype,
                                variants[((((base ^ kh) * GOLDEN) & MASK64) >> 32) % n], answer, atype,
                                cid, region, ids, text, split))
                continue
            evs = {}  # mention selection -> its evidence, shared by the pairs of this concept
            for gran, qtype, qkey, answer, atype, sel, *side in specs:
                if side:
                    qkey = "verify:" + side[0]
                ev = evs.get(sel)
                if ev is None:
                    ev = evs[sel] = evidence(ms if sel is None else list(map(ms.__getitem__, sel)))
                variants, kh, n, vkey = entries.get(qkey) or self._concept_entry(cq, qkey)
                if vkey is not None:
                    vkeys[len(out)] = vkey
                out.append((rid + sfx[len(out)], rid, subject, gran, qtype,
                            variants[((((base ^ kh) * GOLDEN) & MASK64) >> 32) % n], answer, atype,
                            cid, region, ev[0], ev[1], split))

        if abnormality:
            self._abnormality(head, slot, found, hedged, abn_ms, negs, out, vkeys)

    def _concept_entry(self, cq: ConceptQA, qkey: str) -> tuple:
        """(paraphrases, key hash, their number, verify key or None) of a concept's question
        ('presence', ..., 'verify:left'), stored on the concept."""
        if qkey.startswith("verify:"):
            side = qkey[7:]
            key = f"{cq.cid}:{side}"
            entry = cq.entries[qkey] = (*self._q_entry("verify", key, cq.info, side=side), key)
        else:
            entry = cq.entries[qkey] = (*self._q_entry(qkey, cq.cid, cq.info), None)
        return entry

    def _plan(self, ms: Sequence[Mapping], scheme_flags: tuple[bool, ...] | None, flt: tuple) -> tuple:
        """The fine pairs of one concept, from its current mentions (report order), as replayable data:
        (its negatives, abnormality kind if it is a finding (0 none, 1 found, 2 hedged), its mentions,
        pair specs, whether every pair rests on all the mentions); a pair spec is (granularity,
        question type, question ('presence', ..., 'verify:left'), answer, answer type, evidence
        mentions). Mentions are given by position in `ms`; a selection of all of them is None.

        Reads only MENTION_KEYS of the mentions (and scheme_flags: per mention, whether it carries a
        label of the scheme; None with scheme 'all'), so the plan holds for any concept whose mentions
        have the same values.
        """
        everything = tuple(range(len(ms)))

        def sel(idx: list[int]) -> tuple[int, ...] | None:
            t = tuple(idx)
            return None if t == everything else t

        # Positions per certainty: positive, uncertain, explicit negatives (including resolved
        # mentions), resolved; sides the negatives rule out; some mention has a side; some
        # positive/uncertain mention has an attribute (shortcut).
        pos: list[int] = []
        unc: list[int] = []
        neg: list[int] = []
        resolved: list[int] = []
        neg_cover = NO_SIDE
        lateral = attrs = False
        for i, m in enumerate(ms):
            cert = m["certainty"]
            if cert == "positive" and (m.get("differential") or m.get("probable")):
                cert = "uncertain"  # one of two alternatives, or a guess ("probably", "likely")
            elif cert == "negative" and m.get("qualifier") is not None:
                continue  # "no large consolidation" says nothing about a small one
            lat = m.get("laterality")
            # a resolved finding (positive or negative wording) is an explicit negative now
            res = cert != "uncertain" and m.get("change") == "resolved"
            if res:
                resolved.append(i)
            if cert == "negative" or res:
                neg.append(i)
                # "no right effusion" covers only the right; unlateralised / bilateral cover both
                if lat is None:
                    neg_cover = BOTH
                elif lat in SIDES:
                    neg_cover = neg_cover | SIDES[lat]
                    lateral = True
            elif cert == "positive" or cert == "uncertain":
                (pos if cert == "positive" else unc).append(i)
                if lat in SIDES:
                    lateral = True
                if not attrs and (lat or m.get("location") or m.get("severity") or m.get("descriptor")
                                  or m.get("size") or m.get("change")):
                    attrs = True

        # the abnormality list counts every concept, whatever the scheme (findings only: _fine checks)
        abn_kind, abn_sel = 0, None
        if pos:
            abn_kind, abn_sel = 1, sel(pos)
        elif unc:
            abn_kind, abn_sel = 2, sel(unc)

        specs: list[tuple] = []

        skip = flt[3]  # question types this concept is never asked (concepts.yaml no_questions, devices)

        def add(qtype: str, answer: str, idx: list[int], qkey: str | None = None) -> None:
            if qtype in skip:
                return
            gran, atype = QUESTION_TYPES[qtype]
            specs.append((gran, qtype, qkey or qtype, answer, atype, sel(idx)))

        one_side = None
        if scheme_flags is None or any(scheme_flags):  # else the scheme keeps no pairs of this concept
            self._plan_closed(add, ms, pos, unc, neg, neg_cover, lateral)
            self._plan_attribute_pairs(add, ms, pos, unc, resolved, attrs, flt)
            if self._verify and lateral and "verify" not in skip:
                one_side = self._one_side(ms, pos, unc, neg)
        return (sel(neg) if neg else (), abn_kind, abn_sel, tuple(specs), all([spec[5] is None for spec in specs]),
                one_side)
