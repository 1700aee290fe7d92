"""QA pairs from one parsed report: coarse (whole report), middle (region), fine (finding).

The rules live with their question family, each with its templates (templates/<language>.yaml):

- coarse.py       report, impression
- region.py       region (middle)
- closed.py       presence, verify
- attribute.py    choose, location, severity, type, size, change
- abnormality.py  the abnormality list
- fine.py         per-concept planning shared by the fine families
- balance.py      max_pairs_per_report and yes/no balancing
- wording.py      paraphrase choice; config.py: QAConfig and the question types

This module walks a report once and hands each family what it needs. Every middle / fine pair lists
its evidence mention ids.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from hashlib import blake2b as _blake2b
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

from .abnormality import AbnormalityList
from .attribute import AttributeQuestions
from .balance import PairCap, balance_table, balance_yes_no  # noqa: F401  (re-exported)
from .closed import ClosedQuestions
from .coarse import CoarseQuestions
from .config import (CAP_PRIORITY, DEFAULT_CONFIG, EVIDENCE_SECTIONS, FINE_TYPES, GRANULARITIES,  # noqa: F401
                     QUESTION_TYPES, SCHEMES, YES_NO_TYPES, QAConfig)
from .fine import ConceptQA, FineQuestions
from .region import RegionQuestions
from .schema import QA_COLUMNS, tuples_to_table
from .splits import SplitMap, assign_split, load_split_file, split_for_report
from .vocab import ConceptInfo, check_question_templates, load_concepts, load_same_fact, load_templates, unknown_concept
from .wording import Wording


class QAGenerator(Wording, CoarseQuestions, RegionQuestions, FineQuestions, ClosedQuestions, AttributeQuestions,
                  AbnormalityList, PairCap):
    """Holds everything precomputed for one QAConfig; ``rows`` / ``generate`` run per report."""

    def __init__(self, config: QAConfig):
        self.config = config
        self.types = config.enabled_types()
        self.hedge = config.uncertain_policy == "hedge"
        self.seed = config.seed
        self.fractions = tuple(config.split_fractions)
        self.split_map: SplitMap | None = load_split_file(config.split_file) if config.split_file else None

        self.concepts, region_keywords = load_concepts(config.concepts_file)
        self.same_fact = load_same_fact(config.concepts_file)  # concept -> (group, rank), see _asked_once
        self._fact_groups = [[c for c, _ in sorted(((c, gr[1]) for c, gr in self.same_fact.items() if gr[0] == g),
                                                  key=lambda x: x[1])]
                             for g in sorted({gr[0] for gr in self.same_fact.values()})]
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
        self._presence, self._verify, self._change = ("presence" in self.types, "verify" in self.types,
                                                      "change" in self.types)
        self._want_coarse = "report" in self.types or "impression" in self.types
        self._want_middle = "region" in self.types
        self._want_fine = bool(self.types & FINE_TYPES)

        concept_questions = tpl.get("concept_questions") or {}
        for cid, by_type in concept_questions.items():
            check_question_templates(by_type or {}, set())
        self._init_wording(concept_questions)
        self._init_regions(region_keywords, tpl.get("regions") or {})
        self._init_attributes(tpl, values)
        self._init_fine()
        # Per-report fast path (rows): everything that does not depend on the report is looked up
        # here or cached on first use, so the per-pair work is a hash mix, a tuple and an append.
        self._report_q: dict[str, tuple] = {}  # entries of the once-per-report types (key '')
        # stable_hash(seed, rid) = blake2b of "<seed>\x1f<rid>": the seed part is hashed once here and
        # the hasher copied per report (cheaper than a new hasher with its keyword arguments)
        self._base_hasher = _blake2b(f"{self.seed}\x1f".encode(), digest_size=8)
        self._sfx: tuple[str, ...] = ()  # ":0", ":1", ...: qa_id = report_id + _sfx[n] (see _ensure_sfx)
        self._splits: dict[str, str] = {}  # subject (or report) id -> split, without a split file

    def concept(self, cid: str) -> ConceptInfo:
        info = self.concepts.get(cid)
        if info is None:
            info = self.concepts[cid] = unknown_concept(cid, self.region_keywords)
        return info

    # ---- generation -------------------------------------------------------------------------
    #
    # The per-report path is written for speed (qa-build's budget is ~500 µs of CPU per report, QA
    # included) without changing a byte of output:
    # * rows are built as final QA_COLUMNS tuples where a pair is found (qa_id = report_id + ":<n>",
    #   n = the row's position: every stage appends to one list in output order);
    # * one pass over the mentions collects what all granularities need;
    # * per concept, question paraphrases and display data are looked up once (ConceptQA);
    # * a concept's fine pairs are worked out once per combination of mention values (fine._plan)
    #   and replayed with the report's evidence and question wording;
    # * the common cases (a plain negative, a sentence with one mention, one or two evidence
    #   mentions) take short paths without comprehensions: on CPython 3.11 each comprehension is
    #   a function call, which costs more than the loop over 1-2 items.

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
        split = self.split_of(rid, subject, report.get("study_id"))
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
        by_sid: dict[Any, list[tuple[Any, str, Mapping]]] = {}  # sentence id -> (mention id, region, mention)
        groups: dict[ConceptQA, list[Mapping]] = {}
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
                    by_sid[sid].append((mid, cq.region, m))
                else:
                    by_sid[sid] = [(mid, cq.region, m)]
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
                        by_sid[sid].append((m["mention_id"], cq.region, m))
                    else:
                        by_sid[sid] = [(m["mention_id"], cq.region, m)]
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
            if self._fact_groups and len(groups) > 1:
                self._asked_once(groups)
            self._fine(head, groups, out, vkeys)
        cap = self.config.max_pairs_per_report
        if cap is not None and len(out) > cap:
            out = self._cap(base, rid, out, vkeys, cap)
        return out

    def split_of(self, rid: str, subject: str | None, study) -> str:
        """The report's split (patient-level; the split file's when one is given)."""
        if self.split_map is None:  # what split_for_report does without a split file
            who = subject if subject is not None else rid
            split = self._splits.get(who)
            if split is None:
                split = assign_split(who, self.fractions, self.seed)
                if len(self._splits) < 200_000:
                    self._splits[who] = split
            return split
        return split_for_report(rid, subject, None if study is None else str(study), self.fractions, self.seed,
                                self.split_map)

    def _asked_once(self, groups: dict) -> None:
        """Of the concepts one statement (same sentence and span) gives, only the first of their
        same_fact group keeps those mentions for fine pairs ("Heart size is normal." asks cardiomegaly,
        not also an enlarged cardiac silhouette). Edits `groups` (concept -> its mentions) in place."""
        cqs = self._cq
        for group in self._fact_groups:
            present = []
            for cid in group:
                cq = cqs.get(cid)
                if cq is not None and cq in groups:
                    present.append(cq)
            if len(present) < 2:
                continue
            said: set = set()
            for cq in present:  # in rank order
                ms = groups[cq]
                kept = [m for m in ms if (m["sentence_id"], m.get("start"), m.get("end")) not in said]
                said.update((m["sentence_id"], m.get("start"), m.get("end")) for m in ms)
                if not kept:
                    del groups[cq]
                elif len(kept) < len(ms):
                    groups[cq] = kept

    def _ensure_sfx(self, n: int) -> None:
        # a new tuple, never grown in place: a generator may be shared between threads
        self._sfx = tuple(f":{i}" for i in range(max(n, 2 * len(self._sfx), 256)))

    def _report_entry(self, qtype: str) -> tuple:
        entry = self._report_q[qtype] = self._q_entry(qtype, "")
        return entry


@lru_cache(maxsize=8)
def get_generator(config: QAConfig) -> QAGenerator:
    """The generator for a config, built once (templates, regexes, split file) and reused."""
    return QAGenerator(config)


def generate_qa(report: Mapping, sentences: Sequence[Mapping], mentions: Sequence[Mapping],
                config: QAConfig = DEFAULT_CONFIG) -> list[dict]:
    """QA rows (qa.parquet columns, split filled) for one report. Deterministic; no balancing.

    `sentences` are the report's {sentence_id, section, sentence} in report order; `mentions` its
    findings.parquet rows.
    """
    return get_generator(config).generate(report, sentences, mentions)


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
