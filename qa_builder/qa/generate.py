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
from operator import itemgetter, lt as _LT
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import QA_COLUMNS, tuples_to_table
from .splits import (DEFAULT_FRACTIONS, SplitMap, assign_split, check_fractions, load_split_file, split_for_report,
                     stable_hash)
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
# Question types asked once per report, keyed '' (not per concept or region).
_UNKEYED_TYPES = frozenset({"report", "impression", "abnormality"})


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


class _ConceptQA:
    """What the fine pairs of one concept need on every report, looked up once per (generator,
    concept): display data, the presence question entry and (filled on first use, see
    QAGenerator._concept_entry) the entries of its other questions."""

    __slots__ = ("cid", "info", "region", "is_finding", "sort_key", "name", "presence", "entries")
    # presence: (paraphrases, key hash, their number, concept id, region), or None without presence pairs

    def __init__(self, gen: "QAGenerator", cid: str, info: ConceptInfo) -> None:
        self.cid = cid
        self.info = info
        self.region = info.region
        self.is_finding = info.kind == "finding"  # devices and normal variants are not abnormalities
        self.sort_key = _concept_order(info)
        self.name = info.name
        self.presence = (*gen._q_entry("presence", cid, info), cid, info.region) if "presence" in gen.types else None
        self.entries: dict[str, tuple] = {}


_BOTH = frozenset({"left", "right"})
_NO_SIDE: frozenset[str] = frozenset()
_SIDES = {"left": frozenset({"left"}), "right": frozenset({"right"}), "bilateral": _BOTH}
_WORD = re.compile(r"[a-z0-9]+")
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # odd multiplier: spreads (report hash ^ key hash) over the high bits


# What a concept's fine pairs read of a mention besides its evidence fields (see QAGenerator._plan).
_MENTION_KEYS = ("certainty", "laterality", "location", "severity", "descriptor", "size", "change")
_MENTION_VALUES = itemgetter(*_MENTION_KEYS)
_PLAIN_TYPES = frozenset({str, type(None)})


def _mention_values(m: Mapping) -> tuple:
    """_MENTION_VALUES(m) for a mention lacking optional fields (certainty is required)."""
    return (m["certainty"],) + tuple([m.get(k) for k in _MENTION_KEYS[1:]])


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
    """(sorted mention ids, their sentences in report order) of a non-empty mention list.

    Same as sorted({ids}) and " ".join(sentence per sentence id, last one wins, by id), with the
    one- and two-mention cases (most calls) done without comprehensions or sorting.
    """
    n = len(ms)
    if n == 1:
        m = ms[0]
        return [m["mention_id"]], m["sentence"]
    if n == 2:
        a, b = ms
        ia, ib = a["mention_id"], b["mention_id"]
        sa, sb = a["sentence_id"], b["sentence_id"]
        ids = [ia] if ia == ib else [ia, ib] if ia < ib else [ib, ia]
        if sa == sb:
            return ids, b["sentence"]
        return ids, (a["sentence"] + " " + b["sentence"]) if sa < sb else (b["sentence"] + " " + a["sentence"])
    mids = set()
    add = mids.add
    by_sid = {}
    for m in ms:
        add(m["mention_id"])
        by_sid[m["sentence_id"]] = m["sentence"]
    if len(by_sid) == 1:
        return sorted(mids), " ".join(by_sid.values())
    return sorted(mids), " ".join([by_sid[s] for s in sorted(by_sid)])


def _choice(entry: tuple[tuple[str, ...], int, int], base: int) -> str:
    """The paraphrase of a (variants, key hash, number of variants) entry for the report hash `base`.
    (The same expression is inlined in the per-pair loops.)"""
    variants, kh, n = entry
    return variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % n]


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
        self._want_coarse = "report" in self.types or "impression" in self.types
        self._want_middle = "region" in self.types
        self._want_fine = bool(self.types & _FINE_TYPES)
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
        self._sent_cache: dict[str, list] = {}
        self._kw_cache: dict[str, frozenset[str]] = {}
        self._q_cache: dict[tuple[str, str], tuple[tuple[str, ...], int, int]] = {}
        self._key_hash: dict[tuple, int] = {}

        # Per-report fast path (rows): everything that does not depend on the report is looked up
        # here or cached on first use, so the per-pair work is a hash mix, a tuple and an append.
        self._cq: dict[str, _ConceptQA] = {}  # concept id -> its fine-pair constants
        # question entries filled on first use: per region; of the once-per-report types (report,
        # impression, abnormality: key '')
        self._region_q: dict[str, tuple] = {}
        self._report_q: dict[str, tuple] = {}
        # stable_hash(seed, rid) = blake2b of "<seed>\x1f<rid>": the seed part is hashed once here and
        # the hasher copied per report (cheaper than a new hasher with its keyword arguments)
        self._base_hasher = _blake2b(f"{self.seed}\x1f".encode(), digest_size=8)
        self._sfx: tuple[str, ...] = ()  # ":0", ":1", ...: qa_id = report_id + _sfx[n] (see _ensure_sfx)
        # _plan by the values of a concept's one mention / by the tuple of its mentions' values
        # (with scheme labels: (values, per-mention has-a-label flags))
        self._plans1: dict[tuple, tuple] = {}
        self._plans: dict[tuple, tuple] = {}
        self._splits: dict[str, str] = {}  # subject (or report) id -> split, without a split file
        self._loc_cache: dict[tuple, str | None] = {}  # see _location_cached
        # every concept's region is a key of region_keywords (load_concepts checks; unknown -> other)
        self._one_region = {r: frozenset((r,)) for r in region_keywords}

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
        return _choice(self._q_entry(qtype, key, info, region, side), base)

    def _q_entry(self, qtype: str, key: str, info: ConceptInfo | None = None, region: str | None = None,
                 side: str | None = None) -> tuple[tuple[str, ...], int, int]:
        """(formatted paraphrases, stable_hash(qtype, key), their number) of a question, cached per
        (qtype, key)."""
        entry = self._q_cache.get((qtype, key))
        if entry is None:
            entry = self._q_cache[(qtype, key)] = self._variants(qtype, key, info, region, side)
        return entry

    def _variants(self, qtype: str, key: str, info: ConceptInfo | None, region: str | None,
                  side: str | None) -> tuple[tuple[str, ...], int, int]:
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
        return tuple(texts), stable_hash(qtype, key), len(texts)

    def _token_regions(self, token: str) -> frozenset[str]:
        hit = self._token_cache.get(token)
        if hit is None:
            m = self._region_re.fullmatch(token) if self._region_re else None
            # groupdict, not lastgroup: a user pattern may contain its own (unnamed) groups
            hit = frozenset(k for k, v in m.groupdict().items() if v is not None) if m else _NO_SIDE
            if len(self._token_cache) < 500_000:
                self._token_cache[token] = hit
        return hit

    def _sentence(self, raw: str) -> list:
        """[clean text, lower-cased text, keyword regions or None until first needed], cached:
        sentences of normal reports repeat a lot."""
        hit = self._sent_cache.get(raw)
        if hit is None:
            text = _clean(raw)
            hit = [text, text.lower() if text else "", None]
            if len(self._sent_cache) < 100_000:
                self._sent_cache[raw] = hit
        return hit

    def keyword_regions(self, norm: str) -> frozenset[str]:
        """Regions the keywords of a lower-cased sentence name (words and two-word phrases)."""
        hit = self._kw_cache.get(norm)
        if hit is None:
            regions: set[str] = set()
            words = _WORD.findall(norm)
            cache, tok = self._token_cache, self._token_regions
            prev = None
            for w in words:  # each word, then the bigram it ends; most name no region
                r = cache.get(w)
                if r is None:
                    r = tok(w)
                if r:
                    regions |= r
                if prev is not None:
                    bigram = prev + " " + w
                    r = cache.get(bigram)
                    if r is None:
                        r = tok(bigram)
                    if r:
                        regions |= r
                prev = w
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
    #
    # The per-report path is written for speed (qa-build's budget is ~500 µs of CPU per report, QA
    # included) without changing a byte of output:
    # * rows are built as final QA_COLUMNS tuples where a pair is found (qa_id = report_id + ":<n>",
    #   n = the row's position: every stage appends to one list in output order);
    # * one pass over the mentions collects what all granularities need;
    # * per concept, question paraphrases and display data are looked up once (_ConceptQA);
    # * a concept's fine pairs are worked out once per combination of mention values (_plan) and
    #   replayed with the report's evidence and question wording;
    # * the common cases (a plain negative, a sentence with one mention, one or two evidence
    #   mentions) take short paths without comprehensions: on CPython 3.11 each comprehension is
    #   a function call, which costs more than the loop over 1-2 items.
    # The rules themselves are in _coarse, _middle and _plan (fine); tests/test_qa_generate.py pins
    # them down.

    def generate(self, report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping]) -> list[dict]:
        """QA rows as dicts keyed by the qa.parquet columns."""
        return [dict(zip(QA_COLUMNS, row)) for row in self.rows(report, sentences, mentions)]

    def rows(self, report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping]) -> list[tuple]:
        """QA rows as tuples in QA_COLUMNS order (the fast path: no dict per row)."""
        if not isinstance(mentions, (list, tuple)):
            mentions = list(mentions)  # walked more than once below
        rid = str(report["report_id"])
        subject = report.get("subject_id")
        subject = None if subject is None else str(subject)
        if self.split_map is None:  # what split_for_report does without a split file
            who = subject if subject is not None else rid
            split = self._splits.get(who)
            if split is None:
                split = assign_split(who, self.fractions, self.seed)
                if len(self._splits) < 200_000:
                    self._splits[who] = split
        else:
            study = report.get("study_id")
            split = split_for_report(rid, subject, None if study is None else str(study), self.fractions, self.seed,
                                     self.split_map)
        # the only per-report hash (= stable_hash(seed, rid)); questions and capping mix from it
        hasher = self._base_hasher.copy()
        hasher.update(rid.encode())
        base = int.from_bytes(hasher.digest(), "big")
        head = (rid, subject, split, base)
        want_middle, want_fine = self._want_middle, self._want_fine

        # One pass over the mentions: mention ids of FINDINGS and of IMPRESSION (coarse);
        # (mention id, region) per sentence id (middle); current FINDINGS / IMPRESSION mentions per
        # concept, concepts in order of first mention (fine).
        cqs = self._cq
        f_ids: list = []
        i_ids: list = []
        by_sid: dict[Any, list[tuple[Any, str]]] = {}
        groups: dict[_ConceptQA, list[Mapping]] = {}
        want_coarse = self._want_coarse
        if want_coarse and want_middle and want_fine:  # the default: the same, without the flag tests
            for m in mentions:
                sec = m["section"]
                mid = m["mention_id"]
                if sec == "findings":
                    f_ids.append(mid)
                elif sec == "impression":
                    i_ids.append(mid)
                cq = cqs.get(m["concept"]) or self._concept_qa(m["concept"])
                sid = m["sentence_id"]
                if sid in by_sid:
                    by_sid[sid].append((mid, cq.region))
                else:
                    by_sid[sid] = [(mid, cq.region)]
                if sec in EVIDENCE_SECTIONS and m.get("temporality") != "historical":
                    if cq in groups:
                        groups[cq].append(m)
                    else:
                        groups[cq] = [m]
        else:
            for m in mentions:
                if want_coarse:
                    sec = m["section"]
                    if sec == "findings":
                        f_ids.append(m["mention_id"])
                    elif sec == "impression":
                        i_ids.append(m["mention_id"])
                    if not (want_middle or want_fine):
                        continue
                cq = cqs.get(m["concept"]) or self._concept_qa(m["concept"])
                if want_middle:
                    sid = m["sentence_id"]
                    if sid in by_sid:
                        by_sid[sid].append((m["mention_id"], cq.region))
                    else:
                        by_sid[sid] = [(m["mention_id"], cq.region)]
                if want_fine and m["section"] in EVIDENCE_SECTIONS and m.get("temporality") != "historical":
                    if cq in groups:
                        groups[cq].append(m)
                    else:
                        groups[cq] = [m]

        # upper bound on the rows: 2 coarse, one per region, abnormality, at most 9 per concept
        # (presence, verify x2, choose, location, severity, type, size, change)
        if len(self._sfx) < 3 + len(self.region_order) + 9 * len(mentions):
            self._ensure_sfx(3 + len(self.region_order) + 9 * len(mentions))
        out: list[tuple] = []
        vkeys: dict[int, str] = {}  # row position -> key of a verify row (concept:side), for _cap
        if want_coarse:
            self._coarse(head, report, f_ids, i_ids, out)
        if want_middle:
            self._middle(head, sentences, by_sid, out)
        if groups:
            self._fine(head, groups, out, vkeys)
        cap = self.config.max_pairs_per_report
        if cap is not None and len(out) > cap:
            out = self._cap(base, rid, out, vkeys, cap)
        return out

    def _ensure_sfx(self, n: int) -> None:
        # a new tuple, never grown in place: a generator may be shared between threads
        self._sfx = tuple(f":{i}" for i in range(max(n, 2 * len(self._sfx), 256)))

    def _report_entry(self, qtype: str) -> tuple:
        entry = self._report_q[qtype] = self._q_entry(qtype, "")
        return entry

    def _concept_qa(self, cid: str) -> _ConceptQA:
        cq = self._cq[cid] = _ConceptQA(self, cid, self.concepts.get(cid) or self.concept(cid))
        return cq

    def _coarse(self, head: tuple, report: Mapping, f_ids: list, i_ids: list, out: list) -> None:
        """report / impression pairs; f_ids, i_ids: ids of the FINDINGS / IMPRESSION mentions."""
        rid, subject, split, base = head
        sfx = self._sfx
        findings, impression = _clean(report.get("findings")), _clean(report.get("impression"))
        main = findings or impression
        if main and "report" in self.types:
            entry = self._report_q.get("report") or self._report_entry("report")
            out.append((rid + sfx[len(out)], rid, subject, "coarse", "report", _choice(entry, base), main, "open",
                        None, None, sorted(f_ids if findings else i_ids), None, split))
        if findings and impression and "impression" in self.types:
            entry = self._report_q.get("impression") or self._report_entry("impression")
            out.append((rid + sfx[len(out)], rid, subject, "coarse", "impression", _choice(entry, base), impression,
                        "open", None, None, sorted(i_ids), None, split))

    def _middle(self, head: tuple, sentences: Sequence[Mapping], by_sid: Mapping, out: list) -> None:
        """Sentences (in the given, i.e. report, order) grouped by region; evidence = mentions of that region."""
        rid, subject, split, base = head
        acc: dict[str, tuple[list[str], list]] = {}  # region -> (its sentences, its mention ids)
        added: dict[str, frozenset[str]] = {}  # lower-cased sentence -> regions it was added to
        sent_cache, one_region = self._sent_cache, self._one_region
        for s in sentences:
            if s["section"] not in EVIDENCE_SECTIONS:
                continue
            hit = sent_cache.get(s["sentence"]) or self._sentence(s["sentence"])
            text, norm, regions = hit
            if text is None:
                continue
            ms = by_sid.get(s["sentence_id"])
            # A sentence with mentions is about their regions; its other keywords are mostly
            # landmarks ("opacity overlying the left 5th rib" is not a bones sentence).
            if ms is None:
                if regions is None:  # keyword regions, cached with the sentence on first use
                    regions = hit[2] = self.keyword_regions(norm)
            elif len(ms) == 1:
                mid, r = ms[0]
                a = acc.get(r)
                if a is None:
                    a = acc[r] = ([], [])
                a[1].append(mid)
                regions = one_region[r]
                if norm not in added:  # the common case: one region, a sentence not seen before
                    added[norm] = regions
                    a[0].append(text)
                    continue
            else:
                regions = set()
                for mid, r in ms:
                    regions.add(r)
                    a = acc.get(r)
                    if a is None:
                        acc[r] = ([], [mid])
                    else:
                        a[1].append(mid)
                regions = frozenset(regions)
            prev = added.get(norm)
            if prev is not None:  # impressions often repeat a findings sentence: add it once per region
                added[norm] = prev | regions
                regions = regions - prev
            else:
                added[norm] = regions
            for r in regions:
                a = acc.get(r)
                if a is None:
                    acc[r] = ([text], [])
                else:
                    a[0].append(text)
        if not acc:
            return
        sfx, region_q = self._sfx, self._region_q
        for r in self.region_order:
            a = acc.get(r)
            if a is not None and a[0]:  # (a region with evidence always has a sentence)
                answer = " ".join(a[0])
                ids = a[1]
                # sorted(set(ids)), skipped when they are ascending already (sentences and
                # their mentions in report order, the usual case)
                if len(ids) > 1 and not (ids[0] < ids[1] if len(ids) == 2 else all(map(_LT, ids, ids[1:]))):
                    ids = sorted(set(ids))
                entry = region_q.get(r)
                if entry is None:
                    entry = region_q[r] = self._q_entry("region", r, region=r)
                variants, kh, n = entry
                out.append((rid + sfx[len(out)], rid, subject, "middle", "region",
                            variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % n], answer, "open",
                            None, r, ids, answer, split))

    def _fine(self, head: tuple, groups: Mapping[_ConceptQA, list], out: list, vkeys: dict) -> None:
        """Fine pairs: the abnormality list, then per concept (order of first mention) its pairs.

        Which pairs a concept gets, with which answers, depends only on its mentions' certainty and
        attribute values (_MENTION_KEYS), which repeat a lot across reports and concepts. So that is
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
        plans1, plans = self._plans1, self._plans

        # The abnormality pair comes first but depends on every concept: its row position is held
        # by a placeholder while the concepts are walked once (_abnormality fills or drops it).
        abnormality = "abnormality" in self.types
        if abnormality:
            slot = len(out)
            out.append(None)
        found: list[_ConceptQA] = []
        hedged: list[_ConceptQA] = []
        abn_ms: list[Mapping] = []
        negs: list[Mapping] = []

        for cq, ms in groups.items():
            # The plan of plain unlateralised negatives ("No pneumothorax.", also repeated in the
            # impression): presence 'no', all listed as negatives. Taken without a plan lookup.
            if plain:
                if len(ms) == 1:
                    m = ms[0]
                    if m["certainty"] == "negative" and m.get("laterality") is None and m.get("change") != "resolved":
                        negs.append(m)
                        if presence:
                            variants, kh, n, cid, region = cq.presence
                            out.append((rid + sfx[len(out)], rid, subject, "fine", "presence",
                                        variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % n], no,
                                        "closed", cid, region, [m["mention_id"]], m["sentence"], split))
                        continue
                else:
                    for m in ms:
                        if (m["certainty"] != "negative" or m.get("laterality") is not None
                                or m.get("change") == "resolved"):
                            break
                    else:
                        negs += ms
                        if presence:
                            ids, text = _evidence(ms)
                            variants, kh, n, cid, region = cq.presence
                            out.append((rid + sfx[len(out)], rid, subject, "fine", "presence",
                                        variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % n], no,
                                        "closed", cid, region, ids, text, split))
                        continue

            # plan key: the values of the one mention (plans1), or the tuple of their values (plans)
            single = len(ms) == 1
            try:
                key = _MENTION_VALUES(ms[0]) if single else tuple(map(_MENTION_VALUES, ms))
            except KeyError:  # a mention without some optional field: read it as None, like .get
                key = _mention_values(ms[0]) if single else tuple([_mention_values(m) for m in ms])
            if by_scheme:
                key = (key, tuple([m.get(scheme) is not None for m in ms]))
            cache = plans1 if single else plans
            plan = cache.get(key)
            if plan is None:
                plan = self._plan(ms, key[1] if by_scheme else None)
                # Values compare with ==: only cache plans of str/None values, so that 1 / 1.0 / True
                # (equal, but printed differently) never share one.
                values = key[0] if by_scheme else key
                if len(cache) < 100_000 and (_PLAIN_TYPES.issuperset(map(type, values)) if single else
                                             all([_PLAIN_TYPES.issuperset(map(type, v)) for v in values])):
                    cache[key] = plan

            neg_sel, abn_kind, abn_sel, specs, one_ev = plan
            if neg_sel is None:
                negs += ms
            elif neg_sel:
                negs += map(ms.__getitem__, neg_sel)
            if abn_kind and cq.is_finding:  # devices and normal variants are not abnormalities
                (found if abn_kind == 1 else hedged).append(cq)
                abn_ms += ms if abn_sel is None else map(ms.__getitem__, abn_sel)
            if not specs:
                continue
            cid, region, entries = cq.cid, cq.region, cq.entries
            if one_ev:  # every pair rests on all the mentions (always so with one mention)
                ids, text = ([ms[0]["mention_id"]], ms[0]["sentence"]) if single else _evidence(ms)
                for gran, qtype, qkey, answer, atype, sel in specs:
                    variants, kh, n, vkey = entries.get(qkey) or self._concept_entry(cq, qkey)
                    if vkey is not None:
                        vkeys[len(out)] = vkey
                    out.append((rid + sfx[len(out)], rid, subject, gran, qtype,
                                variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % n], answer, atype,
                                cid, region, ids, text, split))
                continue
            evs = {}  # mention selection -> its evidence, shared by the pairs of this concept
            for gran, qtype, qkey, answer, atype, sel in specs:
                ev = evs.get(sel)
                if ev is None:
                    ev = evs[sel] = _evidence(ms if sel is None else list(map(ms.__getitem__, sel)))
                variants, kh, n, vkey = entries.get(qkey) or self._concept_entry(cq, qkey)
                if vkey is not None:
                    vkeys[len(out)] = vkey
                out.append((rid + sfx[len(out)], rid, subject, gran, qtype,
                            variants[((((base ^ kh) * _GOLDEN) & _MASK64) >> 32) % n], answer, atype,
                            cid, region, ev[0], ev[1], split))

        if abnormality:
            self._abnormality(head, slot, found, hedged, abn_ms, negs, out, vkeys)

    def _concept_entry(self, cq: _ConceptQA, qkey: str) -> tuple:
        """(paraphrases, key hash, their number, verify key or None) of a concept's question
        ('presence', ..., 'verify:left'), stored on the concept."""
        if qkey.startswith("verify:"):
            side = qkey[7:]
            key = f"{cq.cid}:{side}"
            entry = cq.entries[qkey] = (*self._q_entry("verify", key, cq.info, side=side), key)
        else:
            entry = cq.entries[qkey] = (*self._q_entry(qkey, cq.cid, cq.info), None)
        return entry

    def _plan(self, ms: Sequence[Mapping], scheme_flags: tuple[bool, ...] | None) -> tuple:
        """The fine pairs of one concept, from its current mentions (report order), as replayable data:
        (its negatives, abnormality kind if it is a finding (0 none, 1 found, 2 hedged), its mentions,
        pair specs, whether every pair rests on all the mentions); a pair spec is (granularity,
        question type, question ('presence', ..., 'verify:left'), answer, answer type, evidence
        mentions). Mentions are given by position in `ms`; a selection of all of them is None.

        Reads only _MENTION_KEYS of the mentions (and scheme_flags: per mention, whether it carries a
        label of the scheme; None with scheme 'all'), so the plan holds for any concept whose mentions
        have the same values. The rules are the module docstring's.
        """
        hedge = self.hedge
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
        neg_cover = _NO_SIDE
        lateral = attrs = False
        for i, m in enumerate(ms):
            cert = m["certainty"]
            lat = m.get("laterality")
            # a resolved finding (positive or negative wording) is an explicit negative now
            res = cert != "uncertain" and m.get("change") == "resolved"
            if res:
                resolved.append(i)
            if cert == "negative" or res:
                neg.append(i)
                # "no right effusion" covers only the right; unlateralised / bilateral cover both
                if lat is None:
                    neg_cover = _BOTH
                elif lat in _SIDES:
                    neg_cover = neg_cover | _SIDES[lat]
                    lateral = True
            elif cert == "positive" or cert == "uncertain":
                (pos if cert == "positive" else unc).append(i)
                if lat in _SIDES:
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

        def add(qtype: str, answer: str, idx: list[int], qkey: str | None = None) -> None:
            gran, atype = QUESTION_TYPES[qtype]
            specs.append((gran, qtype, qkey or qtype, answer, atype, sel(idx)))

        presence, verify, change = self._presence, self._verify, self._change
        if scheme_flags is not None and not any(scheme_flags):
            pass  # the scheme keeps no pairs of this concept
        elif not pos and not unc:  # explicit negatives only
            if presence and neg_cover >= _BOTH:
                add("presence", self.no, neg)
            if verify and lateral:
                self._plan_verify(add, ms, pos, neg)
            if change and resolved:
                self._plan_change(add, ms, resolved, False)
        else:
            # attribute answers come from the positive mentions, else (hedge policy) the uncertain ones
            attr_idx = pos or (unc if hedge else None)
            hedged = not pos
            if presence:
                if pos:
                    add("presence", self.yes, attr_idx)
                elif hedge:
                    add("presence", self.possibly, attr_idx)
            if verify and lateral and (pos or neg):
                self._plan_verify(add, ms, pos, neg)
            if attr_idx and attrs and self._attrs_on:
                self._plan_attributes(add, ms, attr_idx, hedged)
            if change and (attrs or resolved):
                chg = []
                for i in pos:
                    if ms[i].get("change"):
                        chg.append(i)
                chg += resolved
                if chg:
                    self._plan_change(add, ms, chg, False)
                elif hedge and not pos:
                    for i in unc:
                        if ms[i].get("change") and ms[i].get("change") != "resolved":
                            chg.append(i)
                    if chg:
                        self._plan_change(add, ms, chg, True)
        return sel(neg) if neg else (), abn_kind, abn_sel, tuple(specs), all([spec[5] is None for spec in specs])

    # The _plan helpers loop instead of using comprehensions: plans are built on first sight of a
    # combination of values, so their cost shows on new data; they see one or two mentions.

    def _plan_verify(self, add, ms: Sequence[Mapping], pos: list[int], neg: list[int]) -> None:
        """Verify pairs ("Is there X on the left?"): yes from a positive mention on that side, no from
        an explicit negative on that side (and no positive there)."""
        for side in ("left", "right"):
            idx = []
            for i in pos:
                if side in _sides(ms[i].get("laterality")):
                    idx.append(i)
            answer = self.yes
            if not idx:
                for i in neg:
                    if side in _sides(ms[i].get("laterality")):
                        idx.append(i)
                answer = self.no
            if idx:
                add("verify", answer, idx, "verify:" + side)

    def _plan_attributes(self, add, ms: Sequence[Mapping], attr_idx: list[int], hedged: bool) -> None:
        """choose / location / severity / type / size, each when some mention carries the attribute."""
        types = self.types
        if "choose" in types:
            # the side the mentions with a side name: "bilateral" when they name both (or say so)
            idx = []
            side = None
            for i in attr_idx:
                lat = ms[i].get("laterality")
                if lat in _SIDES:
                    idx.append(i)
                    side = lat if side is None or side == lat else "bilateral"
            if idx:
                add("choose", self._hedge(str(self.v_choose.get(side, side)), hedged), idx)
        if "location" in types:
            idx = []
            for i in attr_idx:
                if ms[i].get("location") or ms[i].get("laterality") in _SIDES:
                    idx.append(i)
            answer = self._location_cached([ms[i] for i in idx]) if idx else None
            if answer:
                add("location", self._hedge(answer, hedged), idx)
        for qtype, attr, vocab in self.attr_specs:
            idx = []
            values: list = []
            for i in attr_idx:
                v = ms[i].get(attr)
                if v:
                    idx.append(i)
                    if v not in values:  # (_distinct: truthy values are never None)
                        values.append(v)
            if idx:
                answer = self.and_.join([str(vocab.get(v, v)) for v in values])
                add(qtype, self._hedge(answer, hedged), idx)

    def _plan_change(self, add, ms: Sequence[Mapping], idx: list[int], hedged: bool) -> None:
        answer = self.and_.join([str(self.v_change.get(v, v)) for v in _distinct([ms[i]["change"] for i in idx])])
        add("change", self._hedge(answer, hedged), idx)

    def _location_cached(self, ms: list[Mapping]) -> str | None:
        """_location_answer(ms), cached on the ((location, laterality), ...) it reads when these are
        str / None (equal values of other types may print differently)."""
        key = tuple([(m.get("location"), m.get("laterality")) for m in ms])
        plain = all([type(loc) in _PLAIN_TYPES and type(lat) in _PLAIN_TYPES for loc, lat in key])
        answer = self._loc_cache.get(key, False) if plain else False
        if answer is False:
            answer = self._location_answer(ms)
            if plain and len(self._loc_cache) < 100_000:
                self._loc_cache[key] = answer
        return answer

    def _abnormality(self, head: tuple, slot: int, found: list, hedged: list, ms: list, negs: list, out: list,
                     vkeys: dict) -> None:
        """Fill the abnormality placeholder at out[slot], or drop it and renumber the rows after it."""
        rid, subject, split, base = head
        answer = None
        if hedged and not self.hedge:
            pass  # 'skip': a list that leaves out a hedged finding would overstate normality
        elif found or hedged:
            if len(found) == 1 and not hedged:
                answer = found[0].name
            else:
                items = [cq.name for cq in sorted(found, key=_sort_key)]
                items += [self.hedge_item.format(item=cq.name) for cq in sorted(hedged, key=_sort_key)]
                answer = self.sep.join(items)
        elif negs:
            answer, ms = self.none, negs
        if answer is None:  # no abnormality pair: the rows after the slot move up one position
            del out[slot]
            sfx = self._sfx
            for i in range(slot, len(out)):
                out[i] = (rid + sfx[i],) + out[i][1:]
            moved = {i - 1: k for i, k in vkeys.items()}  # all verify rows come after the slot
            vkeys.clear()
            vkeys.update(moved)
            return
        ids, text = _evidence(ms)
        entry = self._report_q.get("abnormality") or self._report_entry("abnormality")
        out[slot] = (rid + self._sfx[slot], rid, subject, "fine", "abnormality", _choice(entry, base), answer, "open",
                     None, None, ids, text, split)

    def _cap(self, base: int, rid: str, rows: list, vkeys: Mapping[int, str], cap: int) -> list:
        """Keep `cap` rows: round-robin over question types (CAP_PRIORITY), seeded order within a type;
        kept rows are renumbered. The seeded order hashes (question type, key), key = the pair's
        concept / region / concept:side ('' for report, impression and abnormality)."""
        def key(i: int) -> str:
            row = rows[i]
            qtype = row[4]
            if qtype == "verify":
                k = vkeys[i]
            elif qtype == "region":
                k = row[9]
            elif qtype in _UNKEYED_TYPES:
                k = ""
            else:
                k = row[8]
            return self._pick(base, "cap", qtype, k)

        by_type: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_type.setdefault(row[4], []).append(i)
        queues = [sorted(by_type[t], key=key) for t in CAP_PRIORITY if t in by_type]
        keep: list[int] = []
        depth = 0
        while len(keep) < cap:
            for q in queues:
                if depth < len(q) and len(keep) < cap:
                    keep.append(q[depth])
            depth += 1
        sfx = self._sfx
        return [(rid + sfx[n],) + rows[i][1:] for n, i in enumerate(sorted(keep))]


def _sort_key(cq: _ConceptQA) -> tuple[int, str]:
    return cq.sort_key


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
