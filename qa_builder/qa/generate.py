"""QA pairs from one parsed report: coarse (whole report), middle (region), fine (finding).

Rules (the answers say only what the report says):
* Only current mentions (temporality != 'historical') in FINDINGS / IMPRESSION count.
* Per concept, positive beats uncertain beats negative. A mention whose change is 'resolved'
  (positive or negative) counts as an explicit negative now, and answers the change question.
* presence 'yes' needs a positive mention. 'no' needs an explicit negative that covers the whole
  chest: unlateralised or bilateral, or one left and one right ("no right effusion" alone says
  nothing about the left, so it yields only the verify pair "... on the right?" -> no).
* Uncertain-only concepts (uncertain_policy): 'hedge' -> presence "possibly", attribute answers
  wrapped as "<answer>, if present (the report is uncertain)", "possible X" in the abnormality
  list; 'skip' -> no pair rests on the hedged mention (an explicit one-sided negative still
  answers its verify pair), and no abnormality pair when the report hedges. Never a 'yes'.
* Attribute pairs (location, choose, severity, type, size, change) only when a positive mention
  (else, with 'hedge', an uncertain one) carries the attribute; values are the report's.
* abnormality: the positive (and hedged) concepts of kind 'finding' (not devices or normal
  variants), in concepts.yaml order; "none" only when the report has explicit negatives and no
  positive or uncertain finding. The list uses all concepts whatever the scheme, so it is never
  silently incomplete.
* scheme 'chexpert' / 'chestxray14' keeps per-concept pairs for concepts whose mentions carry a
  label of that scheme; 'all' keeps every concept.
* middle: a sentence with finding mentions belongs to the regions of their concepts; a sentence
  without (e.g. "The osseous structures are intact.") to the regions its keywords name
  (concepts.yaml `regions`); sentences no region claims are left to the coarse pairs.
* Every middle / fine pair lists its evidence mention ids (a region whose sentences carry no
  mention has empty evidence and its sentences as evidence_text).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from hashlib import blake2b as _blake2b
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import tuples_to_table
from .splits import DEFAULT_FRACTIONS, SplitMap, check_fractions, load_split_file, split_for_report, stable_hash
from .vocab import ConceptInfo, check_question_templates, load_concepts, load_templates, unknown_concept

GRANULARITIES: tuple[str, ...] = ("coarse", "middle", "fine")

# question_type -> (granularity, answer_type)
QUESTION_TYPES: dict[str, tuple[str, str]] = {
    "report": ("coarse", "open"),
    "impression": ("coarse", "open"),
    "region": ("middle", "open"),
    "abnormality": ("fine", "open"),
    "presence": ("fine", "closed"),
    "verify": ("fine", "closed"),
    "choose": ("fine", "closed"),
    "location": ("fine", "open"),
    "severity": ("fine", "open"),
    "type": ("fine", "open"),
    "size": ("fine", "open"),
    "change": ("fine", "open"),
}
_FINE_TYPES = frozenset(t for t, (g, _) in QUESTION_TYPES.items() if g == "fine")
# Closed questions answered yes/no: what balancing acts on.
YES_NO_TYPES: frozenset[str] = frozenset({"presence", "verify"})
# When max_pairs_per_report trims, types are taken round-robin in this order (report first).
CAP_PRIORITY: tuple[str, ...] = (
    "report", "abnormality", "presence", "region", "location", "choose", "verify",
    "change", "severity", "type", "size", "impression",
)
SCHEMES: tuple[str, ...] = ("all", "chexpert", "chestxray14")
EVIDENCE_SECTIONS: frozenset[str] = frozenset({"findings", "impression"})


@dataclass(frozen=True)
class QAConfig:
    # Which granularities to emit: any of 'coarse', 'middle', 'fine'.
    granularities: tuple[str, ...] = GRANULARITIES
    # Which question types to emit (keys of QUESTION_TYPES); None = every type of the granularities.
    question_types: tuple[str, ...] | None = None
    # Keep at most this many pairs per report (round-robin over types, seeded); None = no cap.
    max_pairs_per_report: int | None = None
    # Corpus-level: trim the majority answer of each (question type, concept) yes/no group to
    # ceil(balance_ratio * minority) by a seeded ranking. Drops pairs, never invents them.
    # Applied by build_qa / balance_yes_no / balance_table, not by generate_qa (one report).
    balance_yes_no: bool = False
    balance_ratio: float = 1.0
    # Concepts the report only hedges: 'hedge' (answer "possibly", "..., if present") or 'skip'.
    uncertain_policy: str = "hedge"
    # Concepts that get per-concept pairs: 'all', or only those with a 'chexpert' / 'chestxray14' label.
    scheme: str = "all"
    # Seeds paraphrase choice, split hashing, capping and balancing.
    seed: int = 0
    # (train, validate, test) fractions for hashed patient-level splits.
    split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    # Official split CSV (MIMIC mimic-cxr-2.0.0-split.csv), honoured by study, then by subject.
    split_file: str | None = None
    # Template language ('en' -> templates/en.yaml) or a path to a template YAML file.
    language: str = "en"
    # Extra template YAML files merged on top (paraphrases appended unless the file says mode: replace).
    extra_templates: tuple[str, ...] = ()
    # Alternative concepts.yaml (display names, regions, region keywords).
    concepts_file: str | None = None

    def __post_init__(self) -> None:
        # Coerce lists or "a,b" strings (from a CLI or JSON) to tuples: the config must stay
        # hashable, it keys the generator cache.
        def tup(v: Any) -> tuple | None:
            if v is None:
                return None
            if isinstance(v, str):
                return tuple(x.strip() for x in v.split(",") if x.strip())
            return tuple(v)

        object.__setattr__(self, "granularities", tup(self.granularities))
        object.__setattr__(self, "question_types", tup(self.question_types))
        object.__setattr__(self, "extra_templates", tup(self.extra_templates) or ())
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in tup(self.split_fractions) or ()))
        bad = [g for g in self.granularities if g not in GRANULARITIES]
        if bad or not self.granularities:
            raise ValueError(f"granularities must be a non-empty subset of {GRANULARITIES}, got {self.granularities}")
        if self.question_types is not None:
            bad = [t for t in self.question_types if t not in QUESTION_TYPES]
            if bad:
                raise ValueError(f"unknown question types {bad}; known: {sorted(QUESTION_TYPES)}")
        if self.max_pairs_per_report is not None and self.max_pairs_per_report < 1:
            raise ValueError("max_pairs_per_report must be >= 1 or None")
        if self.uncertain_policy not in ("hedge", "skip"):
            raise ValueError(f"uncertain_policy must be 'hedge' or 'skip', got {self.uncertain_policy!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if not self.enabled_types():
            raise ValueError("no question type left: check granularities and question_types together")
        if not self.balance_ratio >= 1.0:
            raise ValueError("balance_ratio must be >= 1.0")
        check_fractions(self.split_fractions)

    def enabled_types(self) -> frozenset[str]:
        wanted = set(QUESTION_TYPES) if self.question_types is None else set(self.question_types)
        return frozenset(t for t in wanted if QUESTION_TYPES[t][0] in self.granularities)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# One report


class _Agg:
    """Current mentions of one concept in one report, by certainty."""

    __slots__ = ("info", "pos", "unc", "neg", "resolved", "in_scheme", "neg_cover", "lateral", "attrs")

    def __init__(self, info: ConceptInfo) -> None:
        self.info = info
        self.pos: list[Mapping] = []
        self.unc: list[Mapping] = []
        self.neg: list[Mapping] = []  # explicit negatives, including resolved mentions
        self.resolved: list[Mapping] = []
        self.in_scheme = False  # some mention carries a label of the configured scheme
        self.neg_cover: frozenset[str] = _NO_SIDE  # sides the negatives rule out
        self.lateral = False  # some positive/uncertain/negative mention has a side
        self.attrs = False  # some positive/uncertain mention has an attribute (shortcut)


_BOTH = frozenset({"left", "right"})
_NO_SIDE: frozenset[str] = frozenset()
_SIDES = {"left": frozenset({"left"}), "right": frozenset({"right"}), "bilateral": _BOTH}
_WORD = re.compile(r"[a-z0-9]+")
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd multiplier: spreads (report hash ^ key hash) over the high bits


def _sides(lat: Any) -> frozenset[str]:
    return _SIDES.get(lat, _NO_SIDE)


def _clean(text: Any) -> str | None:
    """Collapse whitespace (MIMIC hard-wraps at 80 columns); empty -> None (never '')."""
    if text is None:
        return None
    s = str(text)
    if "\n" in s or "  " in s or "\t" in s or "\r" in s or s[:1].isspace() or s[-1:].isspace():
        s = " ".join(s.split())
    return s or None


def _evidence(ms: Sequence[Mapping]) -> tuple[list[int], str]:
    """(sorted mention ids, their sentences in report order) of a non-empty mention list."""
    if len(ms) == 1:
        m = ms[0]
        return [m["mention_id"]], m["sentence"]
    by_sid = {m["sentence_id"]: m["sentence"] for m in ms}
    return sorted({m["mention_id"] for m in ms}), " ".join([by_sid[s] for s in sorted(by_sid)])


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


class QAGenerator:
    """Holds everything precomputed for one QAConfig; ``rows`` / ``generate`` run per report."""

    def __init__(self, config: QAConfig):
        self.config = config
        self.types = config.enabled_types()
        self.hedge = config.uncertain_policy == "hedge"
        self.seed = config.seed
        self.fractions = tuple(config.split_fractions)
        self.split_map: SplitMap | None = load_split_file(config.split_file) if config.split_file else None

        self.concepts, region_keywords = load_concepts(config.concepts_file)
        self.region_keywords = region_keywords
        tpl = load_templates(config.language, tuple(config.extra_templates))
        self.templates = tpl
        questions = tpl.get("questions") or {}
        check_question_templates(questions, set(self.types))
        self.questions: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in questions.items()}

        for cid, override in (tpl.get("concepts") or {}).items():
            base = self.concepts.get(cid) or unknown_concept(cid, region_keywords)
            fields = {k: str(v) for k, v in (override or {}).items() if k in ("name", "np", "the")}
            self.concepts[cid] = replace(base, **fields)

        ans = tpl.get("answers") or {}
        for key in ("yes", "no", "possibly", "none", "hedge_item", "hedge_attribute"):
            if key not in ans:
                raise ValueError(f"templates: answers.{key} is missing")
        self.yes, self.no, self.possibly, self.none = str(ans["yes"]), str(ans["no"]), str(ans["possibly"]), str(ans["none"])
        self.hedge_item, self.hedge_attr = str(ans["hedge_item"]), str(ans["hedge_attribute"])
        self.sep, self.and_ = str(ans.get("list_sep", ", ")), str(ans.get("and", " and "))

        values = tpl.get("values") or {}
        self.v_side: dict = values.get("side") or {"left": "left", "right": "right"}
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
        self._presence, self._verify, self._change = ("presence" in self.types, "verify" in self.types,
                                                      "change" in self.types)
        self.attr_specs = [
            (qtype, attr, values.get(attr) or {})
            for qtype, attr in (("severity", "severity"), ("type", "descriptor"), ("size", "size"))
            if qtype in self.types
        ]
        self._attrs_on = "choose" in self.types or "location" in self.types or bool(self.attr_specs)
        region_names = tpl.get("regions") or {}
        self.region_names = {r: str(region_names.get(r, r.replace("_", " "))) for r in region_keywords}
        # Middle pairs for every region but 'other' (a grab bag with no sensible question).
        self.region_order = [r for r in region_keywords if r != "other"]

        # Region keywords match whole words or two-word phrases ("soft tissues"). Each distinct word
        # or bigram is matched against the patterns once and cached, so a new sentence costs a
        # tokenisation and a few dict lookups instead of a scan with a 100-branch regex.
        parts = [f"(?P<{r}>{'|'.join(pats)})" for r, pats in region_keywords.items() if pats]
        self._region_re = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        self._token_cache: dict[str, frozenset[str]] = {}
        self._sent_cache: dict[str, tuple[str | None, str]] = {}
        self._kw_cache: dict[str, frozenset[str]] = {}
        self._q_cache: dict[tuple[str, str], tuple[tuple[str, ...], int]] = {}
        self._key_hash: dict[tuple, int] = {}

    # ---- small cached helpers ---------------------------------------------------------------

    def concept(self, cid: str) -> ConceptInfo:
        info = self.concepts.get(cid)
        if info is None:
            info = self.concepts[cid] = unknown_concept(cid, self.region_keywords)
        return info

    def _pick(self, base: int, *key: str) -> int:
        """32-bit value from the report's hash and a key: one blake2b per report, not per question."""
        kh = self._key_hash.get(key)
        if kh is None:
            kh = self._key_hash[key] = stable_hash(*key)
        return (((base ^ kh) * _GOLDEN) & _MASK64) >> 32

    def question(self, qtype: str, base: int, key: str, info: ConceptInfo | None = None,
                 region: str | None = None, side: str | None = None) -> str:
        """Paraphrase chosen by a stable hash of (seed, report_id) mixed with (question type, key).

        `key` (concept, region or concept:side) must determine the other arguments: the formatted
        variants are cached per (question type, key).
        """
        entry = self._q_cache.get((qtype, key))
        if entry is None:
            entry = self._q_cache[(qtype, key)] = self._variants(qtype, key, info, region, side)
        variants, kh = entry
        if len(variants) == 1:
            return variants[0]
        return variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % len(variants)]

    def _variants(self, qtype: str, key: str, info: ConceptInfo | None, region: str | None,
                  side: str | None) -> tuple[tuple[str, ...], int]:
        variants = self.questions[qtype]
        if info is not None and info.plural and self.questions.get(qtype + "_plural"):
            variants = self.questions[qtype + "_plural"]
        fields = {"side": self.v_side.get(side, side) if side else ""}
        if info is not None:
            fields.update(name=info.name, np=info.np, the=info.the)
        if region is not None:
            fields["region"] = self.region_names.get(region, region)
        texts = []
        for v in variants:
            text = v.format_map(defaultdict(str, fields))
            texts.append(text[:1].upper() + text[1:])
        return tuple(texts), stable_hash(qtype, key)

    def _token_regions(self, token: str) -> frozenset[str]:
        hit = self._token_cache.get(token)
        if hit is None:
            m = self._region_re.fullmatch(token) if self._region_re else None
            # groupdict, not lastgroup: a user pattern may contain its own (unnamed) groups
            hit = frozenset(k for k, v in m.groupdict().items() if v is not None) if m else _NO_SIDE
            if len(self._token_cache) < 500_000:
                self._token_cache[token] = hit
        return hit

    def _sentence(self, raw: str) -> tuple[str | None, str]:
        """(clean text, lower-cased text), cached: sentences of normal reports repeat a lot."""
        hit = self._sent_cache.get(raw)
        if hit is None:
            text = _clean(raw)
            hit = (text, text.lower() if text else "")
            if len(self._sent_cache) < 100_000:
                self._sent_cache[raw] = hit
        return hit

    def keyword_regions(self, norm: str) -> frozenset[str]:
        """Regions the keywords of a lower-cased sentence name (words and two-word phrases)."""
        hit = self._kw_cache.get(norm)
        if hit is None:
            regions: set[str] = set()
            words = _WORD.findall(norm)
            tok = self._token_regions
            for i, w in enumerate(words):
                regions |= tok(w)
                if i:
                    regions |= tok(words[i - 1] + " " + w)
            hit = frozenset(regions)
            if len(self._kw_cache) < 100_000:
                self._kw_cache[norm] = hit
        return hit

    def _hedge(self, answer: str, hedged: bool) -> str:
        return self.hedge_attr.format(answer=answer) if hedged else answer

    def _location_answer(self, ms: Sequence[Mapping]) -> str | None:
        """'left lower lobe', 'bilateral bases', 'right side', 'left base and right upper lobe'."""
        by_loc: dict[str, set[str]] = {}
        lat_only: set[str] = set()
        for m in ms:
            loc, sides = m.get("location"), _sides(m.get("laterality"))
            if loc:
                by_loc.setdefault(loc, set()).update(sides)
            else:
                lat_only.update(sides)
        phrases: list[str] = []
        covered: set[str] = set()
        for loc, sides in by_loc.items():
            word = self.v_location.get(loc, loc)
            if loc in self.loc_unsided:  # "lingula", "SVC": a side adds nothing
                phrases.append(self.loc_only.format(location=word))
                covered |= _BOTH
                continue
            if sides >= _BOTH:
                phrases.append(self.loc_bilat.format(location_plural=self.v_location_plural.get(loc, word), location=word))
            elif sides:
                for s in sorted(sides):
                    phrases.append(self.loc_lat.format(laterality=self.v_side.get(s, s), location=word))
            else:
                phrases.append(self.loc_only.format(location=word))
            covered |= sides
        if lat_only - covered:
            key = "bilateral" if lat_only >= _BOTH else next(iter(lat_only))
            phrases.append(str(self.loc_lat_only.get(key, key)))
        phrases = _distinct(phrases)
        return self.and_.join(phrases) if phrases else None

    # ---- generation -------------------------------------------------------------------------

    def generate(self, report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping]) -> list[dict]:
        """QA rows as dicts keyed by the qa.parquet columns."""
        rid, subject, split, pairs = self._pairs(report, sentences, mentions)
        qt = QUESTION_TYPES
        return [
            {"qa_id": f"{rid}:{n}", "report_id": rid, "subject_id": subject, "granularity": qt[p[0]][0],
             "question_type": p[0], "question": p[2], "answer": p[3], "answer_type": qt[p[0]][1],
             "concept": p[4], "region": p[5], "evidence": p[6], "evidence_text": p[7], "split": split}
            for n, p in enumerate(pairs)
        ]

    def rows(self, report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping]) -> list[tuple]:
        """QA rows as tuples in QA_COLUMNS order (the fast path: no dict per row)."""
        rid, subject, split, pairs = self._pairs(report, sentences, mentions)
        qt = QUESTION_TYPES
        return [
            (f"{rid}:{n}", rid, subject, qt[p[0]][0], p[0], p[2], p[3], qt[p[0]][1], p[4], p[5], p[6], p[7], split)
            for n, p in enumerate(pairs)
        ]

    def _pairs(self, report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping]) -> tuple:
        """(report_id, subject_id, split, pairs); a pair is (question_type, key, question, answer,
        concept, region, evidence ids, evidence_text), key = concept / region / concept:side."""
        rid = str(report["report_id"])
        subject = report.get("subject_id")
        subject = None if subject is None else str(subject)
        study = report.get("study_id")
        split = split_for_report(rid, subject, None if study is None else str(study), self.fractions, self.seed, self.split_map)
        # the only per-report hash (= stable_hash(seed, rid)); questions and capping mix from it
        base = int.from_bytes(_blake2b(f"{self.seed}\x1f{rid}".encode(), digest_size=8).digest(), "big")
        types = self.types
        pairs: list[tuple] = []
        if "report" in types or "impression" in types:
            self._coarse(base, report, mentions, pairs)
        if "region" in types:
            self._middle(base, sentences, mentions, pairs)
        if types & _FINE_TYPES:
            self._fine(base, mentions, pairs)
        cap = self.config.max_pairs_per_report
        if cap is not None and len(pairs) > cap:
            pairs = self._cap(base, pairs, cap)
        return rid, subject, split, pairs

    def _coarse(self, base: int, report: Mapping, mentions: Sequence[Mapping], pairs: list) -> None:
        findings, impression = _clean(report.get("findings")), _clean(report.get("impression"))
        main_section = "findings" if findings else "impression"
        main = findings or impression
        if main and "report" in self.types:
            ids = sorted([m["mention_id"] for m in mentions if m["section"] == main_section])
            pairs.append(("report", "", self.question("report", base, ""), main, None, None, ids, None))
        if findings and impression and "impression" in self.types:
            ids = sorted([m["mention_id"] for m in mentions if m["section"] == "impression"])
            pairs.append(("impression", "", self.question("impression", base, ""), impression, None, None, ids, None))

    def _middle(self, base: int, sentences: Sequence[Mapping], mentions: Sequence[Mapping], pairs: list) -> None:
        """Sentences (in the given, i.e. report, order) grouped by region; evidence = mentions of that region."""
        by_sid: dict[Any, list[tuple[Any, str]]] = {}
        concepts = self.concepts
        for m in mentions:
            info = concepts.get(m["concept"]) or self.concept(m["concept"])
            by_sid.setdefault(m["sentence_id"], []).append((m["mention_id"], info.region))
        texts: dict[str, list[str]] = {}
        evidence: dict[str, list] = {}
        added: dict[str, frozenset[str]] = {}  # lower-cased sentence -> regions it was added to
        sentence = self._sentence
        for s in sentences:
            if s["section"] not in EVIDENCE_SECTIONS:
                continue
            text, norm = sentence(s["sentence"])
            if text is None:
                continue
            ms = by_sid.get(s["sentence_id"])
            if ms:
                # A sentence with mentions is about their regions; its other keywords are mostly
                # landmarks ("opacity overlying the left 5th rib" is not a bones sentence).
                regions = frozenset([r for _, r in ms])
                for mid, r in ms:
                    if r in evidence:
                        evidence[r].append(mid)
                    else:
                        evidence[r] = [mid]
            else:
                regions = self.keyword_regions(norm)
            prev = added.get(norm)
            if prev is not None:  # impressions often repeat a findings sentence: add it once per region
                added[norm] = prev | regions
                regions = regions - prev
            else:
                added[norm] = regions
            for r in regions:
                if r in texts:
                    texts[r].append(text)
                else:
                    texts[r] = [text]
        question = self.question
        for r in self.region_order:
            if r in texts:
                answer = " ".join(texts[r])
                ids = evidence.get(r)
                pairs.append(("region", r, question("region", base, r, region=r), answer, None, r,
                              sorted(set(ids)) if ids else [], answer))

    def _fine(self, base: int, mentions: Sequence[Mapping], pairs: list) -> None:
        types, hedge, scheme = self.types, self.hedge, self.config.scheme
        aggs: dict[str, _Agg] = {}
        for m in mentions:
            if m.get("temporality") == "historical" or m["section"] not in EVIDENCE_SECTIONS:
                continue
            cid = m["concept"]
            agg = aggs.get(cid)
            if agg is None:
                agg = aggs[cid] = _Agg(self.concepts.get(cid) or self.concept(cid))
            if scheme != "all" and m.get(scheme) is not None:
                agg.in_scheme = True
            cert = m["certainty"]
            lat = m.get("laterality")
            # a resolved finding (positive or negative wording) is an explicit negative now
            resolved = cert != "uncertain" and m.get("change") == "resolved"
            if resolved:
                agg.resolved.append(m)
            if cert == "negative" or resolved:
                agg.neg.append(m)
                # "no right effusion" covers only the right; unlateralised / bilateral cover both
                if lat is None:
                    agg.neg_cover = _BOTH
                elif lat in _SIDES:
                    agg.neg_cover = agg.neg_cover | _SIDES[lat]
                    agg.lateral = True
            elif cert == "positive" or cert == "uncertain":
                (agg.pos if cert == "positive" else agg.unc).append(m)
                if lat in _SIDES:
                    agg.lateral = True
                if not agg.attrs and (lat or m.get("location") or m.get("severity") or m.get("descriptor")
                                      or m.get("size") or m.get("change")):
                    agg.attrs = True

        if "abnormality" in types:
            self._abnormality(base, aggs, pairs)

        presence, verify, change = self._presence, self._verify, self._change
        attrs_on = self._attrs_on
        yes, no = self.yes, self.no
        question = self.question
        for cid, agg in aggs.items():
            if scheme != "all" and not agg.in_scheme:
                continue
            info = agg.info
            region = info.region
            pos, unc, neg = agg.pos, agg.unc, agg.neg

            if not pos and not unc:  # the common case: an explicit negative ("No pneumothorax.")
                if presence and agg.neg_cover >= _BOTH:
                    pairs.append(("presence", cid, question("presence", base, cid, info), no, cid, region, *_evidence(neg)))
                if verify and agg.lateral:
                    self._verify_pairs(base, cid, info, pos, neg, pairs)
                if change and agg.resolved:
                    self._change_pair(base, cid, info, agg.resolved, False, pairs)
                continue

            # attribute answers come from the positive mentions, else (hedge policy) the uncertain ones
            attr_ms = pos or (unc if hedge else None)
            attr_ev = _evidence(attr_ms) if attr_ms else None
            hedged = not pos
            if presence:
                if pos:
                    pairs.append(("presence", cid, question("presence", base, cid, info), yes, cid, region, *attr_ev))
                elif hedge:
                    pairs.append(("presence", cid, question("presence", base, cid, info), self.possibly, cid, region, *attr_ev))
            if verify and agg.lateral and (pos or neg):
                self._verify_pairs(base, cid, info, pos, neg, pairs)
            if attr_ms and agg.attrs and attrs_on:
                self._attribute_pairs(base, cid, info, attr_ms, attr_ev, hedged, pairs)
            if change and (agg.attrs or agg.resolved):
                ms = [m for m in pos if m.get("change")] + agg.resolved
                if ms:
                    self._change_pair(base, cid, info, ms, False, pairs)
                elif hedge and not pos:
                    ms = [m for m in unc if m.get("change") and m.get("change") != "resolved"]
                    if ms:
                        self._change_pair(base, cid, info, ms, True, pairs)

    def _verify_pairs(self, base: int, cid: str, info: ConceptInfo, pos: list, neg: list, pairs: list) -> None:
        """Verify pairs ("Is there X on the left?"): yes from a positive mention on that side, no from
        an explicit negative on that side (and no positive there)."""
        for side in ("left", "right"):
            ms = [m for m in pos if side in _sides(m.get("laterality"))]
            answer = self.yes
            if not ms:
                ms = [m for m in neg if side in _sides(m.get("laterality"))]
                answer = self.no
            if ms:
                key = f"{cid}:{side}"
                pairs.append(("verify", key, self.question("verify", base, key, info, side=side), answer, cid,
                              info.region, *_evidence(ms)))

    def _attribute_pairs(self, base: int, cid: str, info: ConceptInfo, attr_ms: list, attr_ev: tuple,
                         hedged: bool, pairs: list) -> None:
        """choose / location / severity / type / size, each when some mention carries the attribute."""
        types, region, n_all = self.types, info.region, len(attr_ms)
        if "choose" in types:
            ms = [m for m in attr_ms if m.get("laterality") in _SIDES]
            if ms:
                sides = _NO_SIDE.union(*[_SIDES[m["laterality"]] for m in ms])
                side = "bilateral" if sides >= _BOTH else next(iter(sides))
                pairs.append(("choose", cid, self.question("choose", base, cid, info),
                              self._hedge(str(self.v_choose.get(side, side)), hedged), cid, region,
                              *(attr_ev if len(ms) == n_all else _evidence(ms))))
        if "location" in types:
            ms = [m for m in attr_ms if m.get("location") or m.get("laterality") in _SIDES]
            answer = self._location_answer(ms) if ms else None
            if answer:
                pairs.append(("location", cid, self.question("location", base, cid, info),
                              self._hedge(answer, hedged), cid, region, *(attr_ev if len(ms) == n_all else _evidence(ms))))
        for qtype, attr, vocab in self.attr_specs:
            ms = [m for m in attr_ms if m.get(attr)]
            if ms:
                answer = self.and_.join([str(vocab.get(v, v)) for v in _distinct(m[attr] for m in ms)])
                pairs.append((qtype, cid, self.question(qtype, base, cid, info),
                              self._hedge(answer, hedged), cid, region, *(attr_ev if len(ms) == n_all else _evidence(ms))))

    def _change_pair(self, base: int, cid: str, info: ConceptInfo, ms: list, hedged: bool, pairs: list) -> None:
        answer = self.and_.join([str(self.v_change.get(v, v)) for v in _distinct(m["change"] for m in ms)])
        pairs.append(("change", cid, self.question("change", base, cid, info), self._hedge(answer, hedged), cid,
                      info.region, *_evidence(ms)))

    def _abnormality(self, base: int, aggs: Mapping[str, _Agg], pairs: list) -> None:
        found: list[ConceptInfo] = []
        hedged: list[ConceptInfo] = []
        ms: list[Mapping] = []
        negs: list[Mapping] = []
        for agg in aggs.values():
            info = agg.info
            negs.extend(agg.neg)
            if info.kind != "finding":  # devices and normal variants are not abnormalities
                continue
            if agg.pos:
                found.append(info)
                ms.extend(agg.pos)
            elif agg.unc:
                hedged.append(info)
                ms.extend(agg.unc)
        if hedged and not self.hedge:
            return  # 'skip': a list that leaves out a hedged finding would overstate normality
        if found or hedged:
            items = [i.name for i in sorted(found, key=_concept_order)]
            items += [self.hedge_item.format(item=i.name) for i in sorted(hedged, key=_concept_order)]
            answer = self.sep.join(items)
        elif negs:
            answer, ms = self.none, negs
        else:
            return
        ids, text = _evidence(ms)
        pairs.append(("abnormality", "", self.question("abnormality", base, ""), answer, None, None, ids, text))

    def _cap(self, base: int, pairs: list, cap: int) -> list:
        """Keep `cap` pairs: round-robin over question types (CAP_PRIORITY), seeded order within a type."""
        by_type: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_type.setdefault(p[0], []).append(i)
        queues = [
            sorted(by_type[t], key=lambda i: self._pick(base, "cap", pairs[i][0], pairs[i][1]))
            for t in CAP_PRIORITY if t in by_type
        ]
        keep: list[int] = []
        depth = 0
        while len(keep) < cap:
            for q in queues:
                if depth < len(q) and len(keep) < cap:
                    keep.append(q[depth])
            depth += 1
        return [pairs[i] for i in sorted(keep)]


def _concept_order(info: ConceptInfo) -> tuple[int, str]:
    """concepts.yaml order; concepts it lacks after, by id."""
    return (info.order, info.id)


@lru_cache(maxsize=8)
def get_generator(config: QAConfig) -> QAGenerator:
    """The generator for a config, built once (templates, regexes, split file) and reused."""
    return QAGenerator(config)


DEFAULT_CONFIG = QAConfig()


def generate_qa(report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping],
                config: QAConfig = DEFAULT_CONFIG) -> list[dict]:
    """QA rows (qa.parquet columns, split filled) for one report. Deterministic; no balancing.

    `sentences` are the report's {sentence_id, section, sentence} in report order; `mentions` its
    findings.parquet rows.
    """
    return get_generator(config).generate(report, sentences, mentions)


# --------------------------------------------------------------------------------------------
# Corpus level: balancing and the whole table


def _balance_drop(qtypes: Sequence[str], concepts: Sequence[str | None], answers: Sequence[str],
                  qa_ids: Sequence[str], yes: str, no: str, ratio: float, seed: int) -> set[int]:
    """Positions to drop: per (question type, concept), the majority answer beyond ceil(ratio * minority),
    lowest-ranked first by a stable hash of (seed, qa_id), so the choice does not depend on row order."""
    groups: dict[tuple, tuple[list[int], list[int]]] = {}
    for i, (t, c, a) in enumerate(zip(qtypes, concepts, answers)):
        if t in YES_NO_TYPES and (a == yes or a == no):
            g = groups.get((t, c))
            if g is None:
                g = groups[(t, c)] = ([], [])
            g[a == no].append(i)
    drop: set[int] = set()
    for g_yes, g_no in groups.values():
        major = g_no if len(g_no) > len(g_yes) else g_yes
        limit = math.ceil(ratio * min(len(g_yes), len(g_no)))
        if len(major) > limit:
            prefix = f"balance\x1f{seed}\x1f"
            ranked = sorted(major, key=lambda i: _blake2b((prefix + qa_ids[i]).encode(), digest_size=8).digest())
            drop.update(ranked[limit:])
    return drop


def balance_yes_no(rows: Sequence[dict], config: QAConfig = DEFAULT_CONFIG) -> list[dict]:
    """Drop surplus majority yes/no pairs per (question type, concept); order kept, nothing added."""
    gen = get_generator(config)
    drop = _balance_drop([r["question_type"] for r in rows], [r["concept"] for r in rows],
                         [r["answer"] for r in rows], [r["qa_id"] for r in rows],
                         gen.yes, gen.no, config.balance_ratio, config.seed)
    return [r for i, r in enumerate(rows) if i not in drop]


def balance_table(table: pa.Table, config: QAConfig = DEFAULT_CONFIG) -> pa.Table:
    """balance_yes_no on a qa table (e.g. the workers' outputs concatenated in input order).

    Same selection as balance_yes_no; grouping is vectorised, only rows that may be dropped are
    hashed in Python.
    """
    gen = get_generator(config)
    mask = pc.and_(pc.is_in(table.column("question_type"), pa.array(sorted(YES_NO_TYPES))),
                   pc.is_in(table.column("answer"), pa.array([gen.yes, gen.no])))
    idx = pc.indices_nonzero(mask).to_numpy()
    if len(idx) == 0:
        return table
    sub = table.select(["question_type", "concept", "answer"]).take(idx)
    key = pc.binary_join_element_wise(sub.column("question_type"), pc.fill_null(sub.column("concept"), ""), "\x1f")
    group = pc.dictionary_encode(key).combine_chunks().indices.to_numpy()
    is_no = pc.equal(sub.column("answer"), gen.no).to_numpy(zero_copy_only=False)
    n_groups = int(group.max()) + 1
    n_no = np.bincount(group, weights=is_no, minlength=n_groups).astype(np.int64)
    n_yes = np.bincount(group, minlength=n_groups) - n_no
    limit = np.ceil(config.balance_ratio * np.minimum(n_yes, n_no)).astype(np.int64)
    major_is_no = n_no > n_yes
    major_size = np.where(major_is_no, n_no, n_yes)
    trim = major_size > limit
    # rows in the majority class of a group that must shrink: the only candidates for dropping
    cand = np.nonzero(trim[group] & (is_no == major_is_no[group]))[0]
    if len(cand) == 0:
        return table
    qa_ids = table.column("qa_id").take(pa.array(idx[cand])).to_pylist()
    prefix = f"balance\x1f{config.seed}\x1f"
    digests = [_blake2b((prefix + q).encode(), digest_size=8).digest() for q in qa_ids]
    by_group: dict[int, list[int]] = {}
    for j, gid in enumerate(group[cand].tolist()):
        by_group.setdefault(gid, []).append(j)
    keep = np.ones(table.num_rows, dtype=bool)
    for gid, js in by_group.items():
        js.sort(key=digests.__getitem__)
        for j in js[int(limit[gid]):]:
            keep[idx[cand[j]]] = False
    return table.filter(pa.array(keep))


def build_qa(records: Iterable[tuple[Mapping, Sequence[Mapping], Sequence[Mapping]]],
             config: QAConfig = DEFAULT_CONFIG, batch_reports: int = 8192) -> pa.Table:
    """(report, sentences, mentions) per report -> the qa table, balanced when the config says so.

    Rows keep input order. Converted to Arrow in batches so memory stays flat on big corpora.
    """
    gen = get_generator(config)
    tables: list[pa.Table] = []
    batch: list[tuple] = []
    for i, (report, sentences, mentions) in enumerate(records, 1):
        batch.extend(gen.rows(report, sentences, mentions))
        if i % batch_reports == 0:
            tables.append(tuples_to_table(batch))
            batch = []
    if batch or not tables:
        tables.append(tuples_to_table(batch))
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if config.balance_yes_no:
        table = balance_table(table, config)
    return table
