"""Difference QA: what changed between a study and the same patient's previous one (diff_qa.parquet).

* Order: studies are ordered per subject by their date and time (MIMIC-CXR's metadata CSV, or a date
  column of a CSV input); never by id. A study without a date, or sharing its timestamp with another
  study of the subject, gets no prior and is no prior; a prior more than `max_prior_days` before is none.
* Per concept, a report says a finding is `present`, `absent` (an unqualified negative, or resolved) or
  `uncertain` (hedged, a differential, a guess), or nothing (silence is not absence); qualified
  negations ("no large effusion") say nothing. Its own comparison word ("increased", "new", "unchanged",
  "resolved") is kept with it.
* Answers, in this order: (a) `stated`: the current report's own comparison word for the finding;
  (b) `derived`: the two reports' states: absent -> present is "new", present -> absent "resolved"
  (a device: "removed"), present in both "still present" (no size was compared), hedged on either side
  "uncertain". A finding one report does not mention gets no derived answer.
* Questions (templates `difference` in templates/<language>.yaml): per finding "Has X changed ...?";
  the list of what changed (new, resolved, increased, decreased, unchanged findings); "Is there any new
  finding?" (yes only from a new finding; no only when every finding of the current report is accounted
  for and none is new); "Which findings have resolved?" ("none" only when every finding of the prior is
  accounted for). Evidence holds mention ids of both reports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pyarrow as pa

from .common import choice
from .config import EVIDENCE_SECTIONS
from .splits import stable_hash
from .vocab import ConceptInfo

DIFF_TYPES = ("diff_concept", "diff_summary", "diff_new", "diff_resolved")
CHANGES = ("new", "resolved", "increased", "decreased", "unchanged")

DIFF_SCHEMA = pa.schema(
    [
        pa.field("qa_id", pa.string(), nullable=False),
        pa.field("report_id", pa.string(), nullable=False),
        pa.field("subject_id", pa.string()),
        pa.field("study_id", pa.string()),
        pa.field("prior_report_id", pa.string(), nullable=False),
        pa.field("prior_study_id", pa.string()),
        pa.field("days_between", pa.float64(), nullable=False),
        pa.field("question_type", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("concept", pa.string()),
        pa.field("evidence_current", pa.list_(pa.field("element", pa.int32(), nullable=False)), nullable=False),
        pa.field("evidence_prior", pa.list_(pa.field("element", pa.int32(), nullable=False)), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ],
    metadata={b"radqa.table": b"diff_qa", b"radqa.schema_version": b"1"},
)


@dataclass(frozen=True)
class ConceptState:
    status: str                  # present | absent | uncertain
    change: str | None           # the report's own comparison word for it, if any
    evidence: tuple[int, ...]    # mention ids


def concept_states(mentions: Iterable[Mapping]) -> dict[str, ConceptState]:
    """Per concept, what one report says now (current FINDINGS / IMPRESSION mentions)."""
    rank = {"absent": 0, "uncertain": 1, "present": 2}
    found: dict[str, list] = {}
    for m in mentions:
        if m["section"] not in EVIDENCE_SECTIONS or m.get("temporality") == "historical":
            continue
        cert, change = m["certainty"], m.get("change")
        if cert == "negative" and m.get("qualifier") is not None:
            continue  # "no large effusion" says nothing about a small one
        if change == "resolved" and cert != "uncertain":
            status = "absent"
        elif cert == "positive" and not (m.get("differential") or m.get("probable")):
            status = "present"
        elif cert in ("positive", "uncertain"):
            status = "uncertain"
        else:
            status, change = "absent", None
        best = found.get(m["concept"])
        if best is None or rank[status] > rank[best[0]]:
            found[m["concept"]] = [status, change if status != "uncertain" else None, [m["mention_id"]]]
        else:
            if rank[status] == rank[best[0]]:
                best[2].append(m["mention_id"])
                if best[1] is None and status != "uncertain":
                    best[1] = change
                elif change == "resolved":
                    best[1] = "resolved"
    return {c: ConceptState(s, ch, tuple(ids)) for c, (s, ch, ids) in found.items()}


# -- order ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyRef:
    report_id: str
    subject_id: str | None
    study_id: str | None
    when: dt.datetime | None


def parse_when(date: str | None, time: str | None = None) -> dt.datetime | None:
    """YYYYMMDD (or YYYY-MM-DD, optionally with a time) plus an optional HHMMSS[.f] -> datetime."""
    if date is None:
        return None
    text = str(date).strip()
    if not text:
        return None
    try:
        if len(text) == 8 and text.isdigit():
            day = dt.datetime.strptime(text, "%Y%m%d")
        else:
            day = dt.datetime.fromisoformat(text.replace("/", "-"))
    except ValueError:
        return None
    if time is not None and str(time).strip():
        t = str(time).strip()
        whole, _, frac = t.partition(".")
        whole = whole.zfill(6)[-6:]
        try:
            day = day.replace(hour=int(whole[:2]), minute=int(whole[2:4]), second=int(whole[4:6]),
                              microsecond=int((frac + "000000")[:6]) if frac.isdigit() else 0)
        except ValueError:
            return None
    return day


def pair_studies(studies: Sequence[StudyRef], max_prior_days: float) -> tuple[dict[str, tuple[str, float]], dict[str, int]]:
    """{report_id: (prior report_id, days between)} and counts by reason of the studies without a prior
    (first_of_subject, no_subject, no_date, same_timestamp, prior_too_old)."""
    counts = {"paired": 0, "first_of_subject": 0, "no_subject": 0, "no_date": 0, "same_timestamp": 0,
              "prior_too_old": 0}
    by_subject: dict[str, list[StudyRef]] = {}
    for s in studies:
        if s.subject_id is None:
            counts["no_subject"] += 1
        elif s.when is None:
            counts["no_date"] += 1
        else:
            by_subject.setdefault(s.subject_id, []).append(s)
    pairs: dict[str, tuple[str, float]] = {}
    for refs in by_subject.values():
        refs.sort(key=lambda s: (s.when, s.report_id))
        times = [s.when for s in refs]
        for i, s in enumerate(refs):
            tied = (i > 0 and times[i - 1] == s.when) or (i + 1 < len(refs) and times[i + 1] == s.when)
            if tied:
                counts["same_timestamp"] += 1
                continue
            if i == 0:
                counts["first_of_subject"] += 1
                continue
            prior = refs[i - 1]
            if i > 1 and times[i - 2] == prior.when:
                counts["same_timestamp"] += 1  # which of the two tied studies came last is unknown
                continue
            days = (s.when - prior.when).total_seconds() / 86400.0
            if days > max_prior_days:
                counts["prior_too_old"] += 1
                continue
            pairs[s.report_id] = (prior.report_id, days)
            counts["paired"] += 1
    return pairs, counts


# -- questions ------------------------------------------------------------------------------------

def answer_for(cur: ConceptState | None, prior: ConceptState | None, device: bool) -> tuple[str, str] | None:
    """(change word, stated | derived) of one finding, or None when the reports do not say."""
    if cur is not None and cur.change is not None and cur.status != "uncertain":
        word = cur.change
        return ("removed" if device and word == "resolved" else word), "stated"
    if cur is None or prior is None:
        return None
    if "uncertain" in (cur.status, prior.status):
        return "uncertain", "derived"
    if prior.status == "absent" and cur.status == "present":
        return "new", "derived"
    if prior.status == "present" and cur.status == "absent":
        return ("removed" if device else "resolved"), "derived"
    if prior.status == "present" and cur.status == "present":
        return "still present", "derived"
    return None  # absent in both: nothing to ask


class DifferenceQuestions:
    """Wording and rows of the difference pairs of one config (templates `difference`)."""

    def __init__(self, templates: Mapping, concepts: Mapping[str, ConceptInfo], seed: int, sep: str, yes: str, no: str,
                 none: str):
        block = templates.get("difference") or {}
        questions = block.get("questions") or {}
        for qtype in DIFF_TYPES:
            if not questions.get(qtype):
                raise ValueError(f"templates: difference.questions.{qtype} is missing")
        self.questions = {k: tuple(v) for k, v in questions.items()}
        words = block.get("answers") or {}
        self.words = {"still present": "still present", "uncertain": "uncertain", **{c: c for c in CHANGES},
                      "removed": "removed", **{str(k): str(v) for k, v in words.items() if k != "item"}}
        self.item = str(words.get("item", "{change} {name}"))
        self.concepts, self.seed, self.sep = concepts, seed, sep
        self.yes, self.no, self.none = yes, no, none

    def _question(self, qtype: str, report_id: str, key: str, info: ConceptInfo | None = None) -> str:
        variants = self.questions[qtype]
        if info is not None and info.plural and self.questions.get(qtype + "_plural"):
            variants = self.questions[qtype + "_plural"]
        base = stable_hash(self.seed, report_id)
        text = choice((variants, stable_hash("diff", qtype, key), len(variants)), base)
        if info is not None:
            text = text.format(name=info.name, np=info.np, the=info.the)
        return text[:1].upper() + text[1:]

    def rows(self, cur_id: str, subject: str | None, study: str | None, prior_id: str, prior_study: str | None,
             days: float, split: str, cur: Mapping[str, ConceptState], prior: Mapping[str, ConceptState]) -> list[tuple]:
        """DIFF_SCHEMA rows of one (current, prior) pair."""
        out: list[tuple] = []
        head = (subject, study, prior_id, prior_study, round(days, 4))
        answered: dict[str, tuple[str, str]] = {}
        concepts = sorted(set(cur) | set(prior), key=lambda c: self._order(c))
        for cid in concepts:
            info = self.concepts.get(cid)
            if info is None or info.kind == "variant":
                continue
            got = answer_for(cur.get(cid), prior.get(cid), info.kind == "device")
            if got is None:
                continue
            answered[cid] = got
            word, source = got
            out.append(self._row(cur_id, len(out), head, "diff_concept", self._question("diff_concept", cur_id, cid, info),
                                 self.words.get(word, word), source, cid, cur.get(cid), prior.get(cid), split))
        # the list of what changed
        items, sources, ev_c, ev_p = [], set(), [], []
        for cid, (word, source) in answered.items():
            if word in CHANGES or word == "removed":
                info = self.concepts[cid]
                items.append(self.item.format(change=self.words.get(word, word), name=info.name))
                sources.add(source)
                ev_c += (cur.get(cid) or _EMPTY).evidence
                ev_p += (prior.get(cid) or _EMPTY).evidence
        if items:
            out.append(self._row(cur_id, len(out), head, "diff_summary", self._question("diff_summary", cur_id, ""),
                                 self.sep.join(items), _source(sources), None, ev_c, ev_p, split))
        # any new finding: yes from one; no only when every current finding is accounted for
        new = [c for c, (w, _) in answered.items() if w == "new"]
        current = [c for c, s in cur.items() if s.status != "absent" and c in self.concepts
                   and self.concepts[c].kind != "variant"]
        if new or (current and all(c in answered and answered[c][0] != "uncertain" for c in current)):
            src = _source({answered[c][1] for c in (new or current)})
            ev = [i for c in (new or current) for i in cur[c].evidence]
            out.append(self._row(cur_id, len(out), head, "diff_new", self._question("diff_new", cur_id, ""),
                                 self.yes if new else self.no, src, None, ev, [], split))
        # resolved findings: the list, or none when every prior finding is accounted for
        resolved = [c for c, (w, _) in answered.items() if w in ("resolved", "removed")]
        before = [c for c, s in prior.items() if s.status == "present" and c in self.concepts
                  and self.concepts[c].kind != "variant"]
        if resolved or (before and all(c in answered and answered[c][0] != "uncertain" for c in before)):
            names = [self.concepts[c].name for c in resolved]
            src = _source({answered[c][1] for c in (resolved or before)})
            out.append(self._row(cur_id, len(out), head, "diff_resolved", self._question("diff_resolved", cur_id, ""),
                                 self.sep.join(names) if names else self.none, src, None,
                                 [i for c in resolved for i in (cur.get(c) or _EMPTY).evidence],
                                 [i for c in (resolved or before) for i in (prior.get(c) or _EMPTY).evidence], split))
        return out

    def _order(self, cid: str) -> tuple[int, str]:
        info = self.concepts.get(cid)
        return (info.order if info is not None else 1 << 30, cid)

    @staticmethod
    def _row(cur_id: str, n: int, head: tuple, qtype: str, question: str, answer: str, source: str,
             concept: str | None, ev_cur, ev_prior, split: str) -> tuple:
        if isinstance(ev_cur, ConceptState) or ev_cur is None:
            ev_cur = list(ev_cur.evidence) if ev_cur is not None else []
        if isinstance(ev_prior, ConceptState) or ev_prior is None:
            ev_prior = list(ev_prior.evidence) if ev_prior is not None else []
        subject, study, prior_id, prior_study, days = head
        return (f"{cur_id}:d{n}", cur_id, subject, study, prior_id, prior_study, days, qtype, question, answer, source,
                concept, sorted(set(ev_cur)), sorted(set(ev_prior)), split)


_EMPTY = ConceptState("absent", None, ())


def _source(sources: set[str]) -> str:
    return "stated" if sources == {"stated"} else "derived" if sources == {"derived"} else "mixed"


# -- a corpus -------------------------------------------------------------------------------------
#
# Workers send, per report, (report id, subject, study, date, time, split, encoded states): a few dozen
# bytes, so the parent holds a whole corpus's states (MIMIC-CXR: ~227k reports) without Python objects per
# mention, and pairs them once every report is read.

_SEP_CONCEPT, _SEP_FIELD = "\x1e", "\x1f"


def encode_states(states: Mapping[str, ConceptState]) -> str:
    return _SEP_CONCEPT.join(_SEP_FIELD.join((c, s.status, s.change or "", ",".join(map(str, s.evidence))))
                             for c, s in states.items())


def decode_states(text: str) -> dict[str, ConceptState]:
    out: dict[str, ConceptState] = {}
    for part in text.split(_SEP_CONCEPT) if text else ():
        c, status, change, ids = part.split(_SEP_FIELD)
        out[c] = ConceptState(status, change or None, tuple(int(i) for i in ids.split(",")) if ids else ())
    return out


def load_study_dates(path: str | Path) -> dict[str, dt.datetime]:
    """study_id -> date and time from a CSV (or .csv.gz) with columns study_id, StudyDate and optionally
    StudyTime: MIMIC-CXR's mimic-cxr-2.0.0-metadata.csv (one row per image; a study's earliest)."""
    import csv
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    out: dict[str, dt.datetime] = {}
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "study_id" not in cols or "StudyDate" not in cols:
                raise ValueError(f"{path}: study dates need the columns study_id and StudyDate (found {cols[:8]})")
            for row in reader:
                when = parse_when(row.get("StudyDate"), row.get("StudyTime"))
                sid = (row.get("study_id") or "").strip()
                if sid and when is not None and (sid not in out or when < out[sid]):
                    out[sid] = when
    except OSError as exc:
        raise ValueError(f"{path}: cannot read study dates ({exc.strerror or exc})") from None
    return out


def find_study_dates(reports: Path) -> Path | None:
    """MIMIC-CXR's metadata CSV beside a files/ tree (the tree itself, its parent or grandparent)."""
    reports = Path(reports)
    for folder in (reports, reports.parent, reports.parent.parent):
        for name in ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def build_difference(entries: Sequence[tuple], questions: DifferenceQuestions, dates: Mapping[str, dt.datetime] | None,
                     max_prior_days: float) -> tuple[list[tuple], dict]:
    """DIFF_SCHEMA rows (current reports in input order) and the manifest's summary of the pairing.

    `entries`: (report_id, subject_id, study_id, date text, time text, split, encoded states) per report;
    `dates`: study_id -> datetime (a dates file), else the entries' own date and time text."""
    refs, by_id = [], {}
    for e in entries:
        rid, subject, study = e[0], e[1], e[2]
        when = dates.get(str(study)) if dates is not None and study is not None else parse_when(e[3], e[4])
        refs.append(StudyRef(rid, subject, study, when))
        by_id[rid] = e
    pairs, counts = pair_studies(refs, max_prior_days)
    rows: list[tuple] = []
    days_hist: dict[str, int] = {}
    for e in entries:
        got = pairs.get(e[0])
        if got is None:
            continue
        prior_id, days = got
        p = by_id[prior_id]
        rows += questions.rows(e[0], e[1], e[2], prior_id, p[2], days, e[5], decode_states(e[6]), decode_states(p[6]))
        days_hist[_days_bin(days)] = days_hist.get(_days_bin(days), 0) + 1
    summary = {"studies": counts, "max_prior_days": max_prior_days,
               "days_between": [[b, days_hist.get(b, 0)] for b in DAYS_BINS]}   # a list: JSON keeps its order
    return rows, summary


DAYS_BINS = ("<= 1", "<= 7", "<= 30", "<= 90", "<= 180", "<= 365", "> 365")


def _days_bin(days: float) -> str:
    for b, limit in zip(DAYS_BINS, (1, 7, 30, 90, 180, 365)):
        if days <= limit:
            return b
    return DAYS_BINS[-1]
