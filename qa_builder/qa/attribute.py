"""Attribute questions of one finding: choose (side), location, severity, type, size and change.

* Asked only when a positive mention (else, with uncertain_policy 'hedge', an uncertain one) carries
  the attribute; values are the report's words, mapped through the template's `values`.
* A hedged finding's answers are wrapped: "small, if present (the report is uncertain)".
* choose: the side the mentions name, "both sides" when they name both (or say so).
* change: from the positive mentions' change words, plus 'resolved' from resolved mentions; a
  finding only hedged gets a hedged change answer (never 'resolved'). Findings that changed in
  different ways at different places are answered per place ("left base unchanged and left mid lung
  new"); a device that is gone is "removed", not "resolved".
* No answer the question already gives: values the concept implies (concepts.yaml `implied`:
  "spine" for scoliosis) and answer items whose every word repeats a word of the concept's name
  ("calcified" for a calcification, "interstitial" for interstitial lung disease) are left out; a
  question left with no answer is not asked.
* Each value once: "focal, alveolar and alveolar" is "focal and alveolar".
"""

from __future__ import annotations

from typing import Mapping, Sequence

import re

from .common import BOTH, PLAIN_TYPES, SIDES, distinct, sides

_WORDS = re.compile(r"[a-z]+")


def _stem(word: str) -> str:
    return word[:4]  # "calcified" / "calcification", "spine" / "spinal", "aorta" / "aortic"


# A device has a place and a history, not a severity, a type or a size (a tip distance is not a size).
_DEVICE_SKIP = frozenset({"severity", "type", "size"})


def answer_filter(name: str, kind: str, implied, skip=frozenset()) -> tuple:
    """What the attribute rules need to know of a concept: (kind, its implied (question type, value)
    pairs, the stems of its name, question types it is never asked). Part of the plan key, so it must
    be hashable and small."""
    skip = frozenset(skip) | (_DEVICE_SKIP if kind == "device" else frozenset())
    return kind, frozenset(implied), frozenset(_stem(w) for w in _WORDS.findall(name.lower())), skip


def _given(qtype: str, item: str, flt: tuple) -> bool:
    """The concept already gives this answer item: implied, or every word repeats its name."""
    _, implied, stems, _ = flt
    if (qtype, item.lower()) in implied:
        return True
    words = _WORDS.findall(item.lower())
    return bool(words) and all(_stem(w) in stems for w in words)


def _dims(size: str) -> frozenset:
    """A size's numbers with its unit ("2.1 x 2 cm" -> {2.1 cm, 2 cm})."""
    *nums, unit = size.replace(" x ", " ").split()
    return frozenset(f"{n} {unit}" for n in nums)


def _items(values) -> list[str]:
    """Distinct items of attribute values, in order ("focal, alveolar" + "alveolar" -> focal, alveolar)."""
    out: list[str] = []
    for v in values:
        for item in str(v).split(", "):
            if item and item not in out:
                out.append(item)
    return out


class AttributeQuestions:
    """Mixin of QAGenerator: the attribute part of a concept's plan (see fine.py)."""

    def _init_attributes(self, tpl: Mapping, values: Mapping) -> None:
        self.v_choose: dict = values.get("choose") or {"left": "left", "right": "right", "bilateral": "both sides"}
        self.v_change: dict = values.get("change") or {}
        self.v_location: dict = values.get("location") or {}
        self.v_location_plural: dict = values.get("location_plural") or {}
        loc = tpl.get("location") or {}
        self.loc_lat = str(loc.get("lat_loc", "{laterality} {location}"))
        self.loc_bilat = str(loc.get("bilateral_loc", "bilateral {location_plural}"))
        self.loc_lat_only: dict = loc.get("lat_only") or {"left": "left side", "right": "right side", "bilateral": "both sides"}
        self.loc_only = str(loc.get("loc_only", "{location}"))
        self.loc_unsided = frozenset(loc.get("no_laterality") or ())
        # (question type, mention attribute, value vocabulary) for the one-value attribute questions
        self.attr_specs = [
            (qtype, attr, values.get(attr) or {})
            for qtype, attr in (("severity", "severity"), ("type", "descriptor"), ("size", "size"))
            if qtype in self.types
        ]
        self._attrs_on = "choose" in self.types or "location" in self.types or bool(self.attr_specs)
        self._loc_cache: dict[tuple, str | None] = {}  # see _location_cached
        self.v_change_device: dict = {**self.v_change, **(values.get("change_device") or {"resolved": "removed"})}

    def _plan_attribute_pairs(self, add, ms: Sequence[Mapping], pos: list[int], unc: list[int],
                              resolved: list[int], attrs: bool, flt: tuple) -> None:
        """choose / location / severity / type / size / change pairs of one concept; `flt`: its
        answer_filter."""
        if not pos and not unc:  # explicit negatives only: a resolved finding still answers 'change'
            if self._change and resolved:
                self._plan_change(add, ms, resolved, False, flt)
            return
        attr_idx = pos or (unc if self.hedge else None)
        hedged = not pos
        if attr_idx and attrs and self._attrs_on:
            self._plan_attributes(add, ms, attr_idx, hedged, flt)
        if self._change and (attrs or resolved):
            chg = []
            for i in pos:
                if ms[i].get("change"):
                    chg.append(i)
            chg += resolved
            if chg:
                self._plan_change(add, ms, chg, False, flt)
            elif self.hedge and not pos:
                for i in unc:
                    if ms[i].get("change") and ms[i].get("change") != "resolved":
                        chg.append(i)
                if chg:
                    self._plan_change(add, ms, chg, True, flt)

    # The _plan helpers loop instead of using comprehensions: plans are built on first sight of a
    # combination of values, so their cost shows on new data; they see one or two mentions.

    def _plan_attributes(self, add, ms: Sequence[Mapping], attr_idx: list[int], hedged: bool, flt: tuple) -> None:
        """choose / location / severity / type / size, each when some mention carries the attribute."""
        types = self.types
        if "choose" in types:
            idx = []
            side = None
            for i in attr_idx:
                lat = ms[i].get("laterality")
                if lat in SIDES:
                    idx.append(i)
                    side = lat if side is None or side == lat else "bilateral"
            if idx:
                add("choose", self._hedge(str(self.v_choose.get(side, side)), hedged), idx)
        if "location" in types:
            idx = []
            for i in attr_idx:
                if ms[i].get("location") or ms[i].get("laterality") in SIDES:
                    idx.append(i)
            answer = self._location_cached([ms[i] for i in idx], flt) if idx else None
            if answer:
                add("location", self._hedge(answer, hedged), idx)
        for qtype, attr, vocab in self.attr_specs:
            if qtype in flt[3]:
                continue
            idx = []
            values: list = []
            for i in attr_idx:
                v = ms[i].get(attr)
                if v:
                    kept = [x for x in _items((v,)) if not _given(qtype, str(vocab.get(x, x)), flt)]
                    if kept:
                        idx.append(i)
                        values += kept
            if idx:
                items = _items(values)
                if attr == "size" and len(items) > 1:  # "2.1 x 2 cm", not also "2.1 cm"
                    items = [x for x in items if not any(y != x and _dims(x) < _dims(y) for y in items)]
                answer = self.and_.join([str(vocab.get(v, v)) for v in items])
                add(qtype, self._hedge(answer, hedged), idx)

    def _plan_change(self, add, ms: Sequence[Mapping], idx: list[int], hedged: bool, flt: tuple) -> None:
        words = self.v_change_device if flt[0] == "device" else self.v_change
        changes = distinct([ms[i]["change"] for i in idx])
        if len(changes) > 1:
            # changed in different ways: say where ("left base unchanged and left mid lung new")
            items = []
            for c in changes:
                place = self._location_answer([ms[i] for i in idx if ms[i]["change"] == c
                                               and (ms[i].get("location") or ms[i].get("laterality"))], flt)
                items.append(f"{place} {words.get(c, c)}" if place else str(words.get(c, c)))
            answer = self.and_.join(distinct(items))
        else:
            answer = str(words.get(changes[0], changes[0]))
        add("change", self._hedge(answer, hedged), idx)

    def _location_answer(self, ms: Sequence[Mapping], flt: tuple | None = None) -> str | None:
        """'left lower lobe', 'bilateral bases', 'right side', 'left base and right upper lobe',
        'left internal jugular and cavoatrial junction' (a side only where it means something)."""
        by_loc: dict[str, set[str]] = {}
        lat_only: set[str] = set()
        for m in ms:
            loc, s = m.get("location"), sides(m.get("laterality"))
            locs = [x for x in _items((loc,)) if flt is None or not _given("location", x, flt)] if loc else ()
            if locs:
                for x in locs:
                    by_loc.setdefault(x, set()).update(s)
            else:
                lat_only.update(s)
        # a place another of the answer's places names more precisely goes: "cervical spine", not "... and spine"
        for loc in [x for x in by_loc if any(y != x and y.endswith(" " + x) for y in by_loc)]:
            del by_loc[loc]
        phrases: list[str] = []
        covered: set[str] = set()
        for loc, s in by_loc.items():
            word = self.v_location.get(loc, loc)
            if loc in self.loc_unsided:  # "lingula", "SVC": a side adds nothing
                phrases.append(self.loc_only.format(location=word))
                covered |= BOTH
                continue
            if s >= BOTH:
                phrases.append(self.loc_bilat.format(location_plural=self.v_location_plural.get(loc, word), location=word))
            elif s:
                for side in sorted(s):
                    phrases.append(self.loc_lat.format(laterality=self.v_side.get(side, side), location=word))
            else:
                phrases.append(self.loc_only.format(location=word))
            covered |= s
        if lat_only - covered:
            key = "bilateral" if lat_only >= BOTH else next(iter(lat_only))
            phrases.append(str(self.loc_lat_only.get(key, key)))
        phrases = distinct(phrases)
        return self.and_.join(phrases) if phrases else None

    def _location_cached(self, ms: list[Mapping], flt: tuple) -> str | None:
        """_location_answer(ms), cached on the ((location, laterality), ...) it reads when these are
        str / None (equal values of other types may print differently)."""
        pairs = tuple([(m.get("location"), m.get("laterality")) for m in ms])
        plain = all([type(loc) in PLAIN_TYPES and type(lat) in PLAIN_TYPES for loc, lat in pairs])
        key = (pairs, flt)
        answer = self._loc_cache.get(key, False) if plain else False
        if answer is False:
            answer = self._location_answer(ms, flt)
            if plain and len(self._loc_cache) < 100_000:
                self._loc_cache[key] = answer
        return answer
