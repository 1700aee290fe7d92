"""Data access for ``qa-inspect``: opens an OUT directory with DuckDB, validates filters,
computes the summary statistics and draws samples with highlighted evidence.

Everything here is renderer-agnostic; ``terminal.py`` and ``report.py`` only format what this returns.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

REQUIRED_TABLES = ("reports", "findings", "labels", "qa")
OPTIONAL_TABLES = ("rejects", "diff_qa")
ALL_TABLES = REQUIRED_TABLES + OPTIONAL_TABLES

# Columns the inspector reads; anything else in the schema is optional here.
REQUIRED_COLUMNS = {
    "reports": ("report_id",),
    "findings": ("report_id", "mention_id", "sentence_id", "sentence", "start", "end", "concept", "certainty"),
    "labels": ("report_id", "scheme", "label", "value"),
    "qa": ("qa_id", "report_id", "granularity", "question_type", "question", "answer", "concept",
           "evidence", "evidence_text", "split"),
    "rejects": ("reason",),
    "diff_qa": ("qa_id", "report_id", "question_type", "question", "answer", "source", "days_between"),
}

# filter option name -> qa column
FILTER_COLUMNS = {
    "concept": "concept",
    "question_type": "question_type",
    "split": "split",
    "report": "report_id",
    "granularity": "granularity",
}
# Values that are always valid (they may simply match nothing in a given OUT).
CANONICAL_VALUES = {
    "granularity": ("coarse", "middle", "fine"),
    "split": ("train", "validate", "test"),
    "question_type": ("report", "region", "presence", "abnormality", "location", "severity", "type",
                      "size", "change", "choose"),
}
GRANULARITY_ORDER = CANONICAL_VALUES["granularity"]
SPLIT_ORDER = CANONICAL_VALUES["split"]

YES_NO_SQL = r"""CASE
    WHEN regexp_matches(lower(trim(coalesce(answer, ''))), '^yes\b') THEN 'yes'
    WHEN regexp_matches(lower(trim(coalesce(answer, ''))), '^no\b') THEN 'no'
    ELSE 'other' END"""


class InspectError(Exception):
    """A user-facing problem (missing OUT, bad filter, bad SQL): printed as one line, exit code 2."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message (DuckDB messages span several lines)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Filters:
    concept: str | None = None
    question_type: str | None = None
    split: str | None = None
    report: str | None = None
    granularity: str | None = None

    def items(self) -> list[tuple[str, str]]:
        return [(k, getattr(self, k)) for k in FILTER_COLUMNS if getattr(self, k) is not None]

    def __bool__(self) -> bool:
        return bool(self.items())

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.items()) or "none"


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class OutDir:
    """A qa-build output directory with DuckDB views ``reports, findings, labels, qa, rejects``."""

    def __init__(self, out: Path):
        self.path = Path(out)
        if not self.path.exists():
            raise InspectError(f"{self.path}: no such directory")
        if not self.path.is_dir():
            raise InspectError(f"{self.path}: not a directory")
        missing = [f"{t}.parquet" for t in REQUIRED_TABLES if not (self.path / f"{t}.parquet").is_file()]
        if missing:
            raise InspectError(f"{self.path}: missing {', '.join(missing)} (not a qa-build output directory?)")
        self.has_rejects = (self.path / "rejects.parquet").is_file()
        self.con = duckdb.connect(":memory:")
        self.columns: dict[str, set[str]] = {}
        for table in ALL_TABLES:
            file = self.path / f"{table}.parquet"
            try:
                if file.is_file():
                    self.con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({sql_str(str(file))})")
                elif table == "rejects":  # optional: an empty, typed stand-in keeps --sql queries working
                    self.con.execute("CREATE VIEW rejects AS SELECT NULL::VARCHAR AS source, "
                                     "NULL::VARCHAR AS report_id, NULL::VARCHAR AS reason WHERE false")
                else:  # diff_qa: a build from before difference QA
                    self.con.execute("CREATE VIEW diff_qa AS SELECT NULL::VARCHAR AS qa_id, NULL::VARCHAR AS report_id, "
                                     "NULL::VARCHAR AS question_type, NULL::VARCHAR AS question, "
                                     "NULL::VARCHAR AS answer, NULL::VARCHAR AS source, "
                                     "NULL::DOUBLE AS days_between WHERE false")
                self.columns[table] = {r[0] for r in self.con.execute(f"DESCRIBE {table}").fetchall()}
            except duckdb.Error as exc:
                raise InspectError(f"{file}: unreadable Parquet ({first_line(exc)})") from None
            lacking = [c for c in REQUIRED_COLUMNS[table] if c not in self.columns[table]]
            if lacking:
                raise InspectError(f"{file}: missing column(s) {', '.join(lacking)}")
        # Internal view with the file row number, so samples are shown in file order.
        qa_file = sql_str(str(self.path / "qa.parquet"))
        self.con.execute(f"CREATE TEMP VIEW _qa_rows AS SELECT * FROM read_parquet({qa_file}, file_row_number=true)")
        self.manifest = self._read_manifest()

    def _read_manifest(self) -> dict[str, Any] | None:
        file = self.path / "manifest.json"
        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return {"error": f"manifest.json unreadable: {exc}"}
        return data if isinstance(data, dict) else {"manifest": data}

    def col(self, table: str, name: str) -> str:
        """A quoted column reference, or NULL when an optional column is absent."""
        return _qi(name) if name in self.columns[table] else "NULL"

    def close(self) -> None:
        self.con.close()

    # -- queries -----------------------------------------------------------------------------------
    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def scalar(self, sql: str, params: list | None = None) -> Any:
        return self.con.execute(sql, params or []).fetchone()[0]

    def valid_values(self, name: str) -> list[str]:
        column = FILTER_COLUMNS[name]
        found = {r[0] for r in self.rows(f"SELECT DISTINCT {column} FROM qa WHERE {column} IS NOT NULL")}
        return sorted(found | set(CANONICAL_VALUES.get(name, ())))

    def check_filters(self, flt: Filters) -> None:
        for name, value in flt.items():
            if name == "report":
                hit = self.scalar("SELECT count(*) FROM (SELECT report_id FROM qa WHERE report_id = ? "
                                  "UNION ALL SELECT report_id FROM reports WHERE report_id = ?)", [value, value])
                if not hit:
                    n = self.scalar("SELECT count(DISTINCT report_id) FROM reports")
                    examples = [r[0] for r in self.rows(
                        "SELECT report_id FROM reports ORDER BY report_id LIMIT 8")]
                    raise InspectError(f"unknown --report {value!r}: not in reports.parquet or qa.parquet "
                                       f"({n:,} report ids, e.g. {', '.join(examples) or 'none'})")
                continue
            valid = self.valid_values(name)
            if value not in valid:
                shown = valid[:40]
                more = f", … (+{len(valid) - 40} more)" if len(valid) > 40 else ""
                close = difflib.get_close_matches(value, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InspectError(f"unknown {option_flag(name)} {value!r}; valid values: "
                                   f"{', '.join(shown) or '(none)'}{more}{hint}")

    def apply_filters(self, flt: Filters) -> None:
        """(Re)creates the temp views ``qa_f`` (filtered QA), ``scope`` (reports in scope),
        ``findings_s`` and ``labels_s``. --report and --split scope reports; the other filters only QA."""
        conds = [f"{FILTER_COLUMNS[k]} = {sql_str(v)}" for k, v in flt.items()]
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW qa_f AS SELECT * FROM _qa_rows{where}")
        scope_conds = []
        if flt.report is not None:
            scope_conds.append(f"report_id = {sql_str(flt.report)}")
        if flt.split is not None:
            scope_conds.append(f"report_id IN (SELECT report_id FROM qa WHERE split = {sql_str(flt.split)})")
        self.scoped = bool(scope_conds)
        scope_where = (" WHERE " + " AND ".join(scope_conds)) if scope_conds else ""
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW scope AS SELECT DISTINCT report_id FROM reports{scope_where}")
        for table in ("findings", "labels"):
            src = (f"SELECT * FROM {table} WHERE report_id IN (SELECT report_id FROM scope)"
                   if self.scoped else f"SELECT * FROM {table}")
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {table}_s AS {src}")


# -- statistics -------------------------------------------------------------------------------------
@dataclass
class Stats:
    table_rows: dict[str, int | None]
    manifest_rows: dict[str, Any]
    reject_reasons: list[tuple[str, int]]
    qa_total: int
    qa_matched: int
    by_granularity: list[tuple[str, int]]
    by_question_type: list[tuple[str, int]]
    by_answer_type: list[tuple[str, int]]
    by_split: list[tuple[str, int, int, int]]          # split, pairs, reports, subjects
    concepts: list[tuple[str, int, int, int, int, int]]  # concept, qa, mentions, pos, neg, unc
    presence: list[tuple[str, int, int, int]]          # concept, yes, no, other
    answer_lengths: list[tuple[int, int]]              # words, pairs
    labels: dict[str, list[tuple[str, int, int, int]]]  # scheme -> label, pos, neg, unc
    scope_reports: int
    scoped: bool


def _ordered(rows: list[tuple], order: tuple[str, ...]) -> list[tuple]:
    rank = {v: i for i, v in enumerate(order)}
    return sorted(rows, key=lambda r: (rank.get(r[0], len(rank)), -r[1], str(r[0])))


def manifest_row_counts(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Finds a ``{table: rows}`` mapping anywhere at the top level of the manifest (key names vary)."""
    if not manifest:
        return {}
    names = set(ALL_TABLES)
    for key in ("row_counts", "rows", "counts", "tables"):
        value = manifest.get(key)
        if isinstance(value, dict):
            found = {str(k).removesuffix(".parquet"): v for k, v in value.items()}
            if names & found.keys():
                return found
    for value in manifest.values():
        if isinstance(value, dict):
            found = {str(k).removesuffix(".parquet"): v for k, v in value.items()}
            if len(names & found.keys()) >= 2:
                return found
    return {}


def compute_stats(od: OutDir, flt: Filters, concept_filter: str | None = None) -> Stats:
    od.apply_filters(flt)
    table_rows: dict[str, int | None] = {}
    for t in ALL_TABLES:
        table_rows[t] = od.scalar(f"SELECT count(*) FROM {t}") if (t != "rejects" or od.has_rejects) else None
    reject_reasons = od.rows("SELECT coalesce(reason, '(null)'), count(*) FROM rejects "
                             "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10")
    qa_total = table_rows["qa"] or 0
    qa_matched = od.scalar("SELECT count(*) FROM qa_f")

    def counts(column: str) -> list[tuple[str, int]]:
        return od.rows(f"SELECT coalesce({column}, '(null)'), count(*) FROM qa_f GROUP BY 1 ORDER BY 2 DESC, 1")

    by_granularity = _ordered(counts("granularity"), GRANULARITY_ORDER)
    by_question_type = counts("question_type")
    by_answer_type = counts(od.col("qa", "answer_type")) if "answer_type" in od.columns["qa"] else []
    subj = od.col("qa", "subject_id")
    by_split = _ordered(od.rows(
        f"SELECT coalesce(split, '(null)'), count(*), count(DISTINCT report_id), count(DISTINCT {subj}) "
        "FROM qa_f GROUP BY 1"), SPLIT_ORDER)

    qa_concepts = dict(od.rows("SELECT concept, count(*) FROM qa_f WHERE concept IS NOT NULL GROUP BY 1"))
    mention_rows = od.rows(
        "SELECT concept, count(*), count_if(certainty = 'positive'), count_if(certainty = 'negative'), "
        "count_if(certainty = 'uncertain') FROM findings_s WHERE concept IS NOT NULL GROUP BY 1")
    mentions = {r[0]: r[1:] for r in mention_rows}
    names = set(qa_concepts) | set(mentions)
    if concept_filter is not None:
        names &= {concept_filter}
    concepts = sorted(
        ((c, qa_concepts.get(c, 0), *mentions.get(c, (0, 0, 0, 0))) for c in names),
        key=lambda r: (-r[1], -r[2], r[0]))

    presence = od.rows(
        f"SELECT concept, count_if(cls = 'yes'), count_if(cls = 'no'), count_if(cls = 'other') FROM "
        f"(SELECT concept, {YES_NO_SQL} AS cls FROM qa_f WHERE question_type = 'presence' AND concept IS NOT NULL) "
        "GROUP BY concept ORDER BY count(*) DESC, concept")
    answer_lengths = od.rows(
        r"SELECT n, count(*) FROM (SELECT CASE WHEN trim(coalesce(answer, '')) = '' THEN 0 "
        r"ELSE len(string_split_regex(trim(answer), '\s+')) END AS n FROM qa_f) GROUP BY n ORDER BY n")
    labels: dict[str, list[tuple[str, int, int, int]]] = {}
    for scheme, label, pos, neg, unc in od.rows(
            "SELECT scheme, label, count_if(value = 1), count_if(value = 0), count_if(value = -1) "
            "FROM labels_s GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2"):
        labels.setdefault(str(scheme), []).append((str(label), pos, neg, unc))
    return Stats(
        table_rows=table_rows,
        manifest_rows=manifest_row_counts(od.manifest),
        reject_reasons=reject_reasons,
        qa_total=qa_total,
        qa_matched=qa_matched,
        by_granularity=by_granularity,
        by_question_type=by_question_type,
        by_answer_type=by_answer_type,
        by_split=by_split,
        concepts=concepts,
        presence=presence,
        answer_lengths=answer_lengths,
        labels=labels,
        scope_reports=od.scalar("SELECT count(*) FROM scope"),
        scoped=od.scoped,
    )


def histogram_bins(lengths: list[tuple[int, int]], max_bins: int = 30) -> list[tuple[str, int]]:
    """Bins ``(length, count)`` pairs into at most ``max_bins`` labelled bins; the tail past the
    99th percentile goes into one ``≥X`` bin."""
    if not lengths:
        return []
    total = sum(c for _, c in lengths)
    running, cap = 0, lengths[-1][0]
    for value, count in lengths:
        running += count
        if running >= 0.99 * total:
            cap = value
            break
    overflow = sum(c for v, c in lengths if v > cap)
    width = max(1, -(-(cap + 1) // max_bins))  # ceil
    n_bins = cap // width + 1
    bins = [0] * n_bins
    for value, count in lengths:
        if value <= cap:
            bins[value // width] += count
    out = [(str(i * width) if width == 1 else f"{i * width}–{i * width + width - 1}", c) for i, c in enumerate(bins)]
    if overflow:
        out.append((f"≥{cap + 1}", overflow))
    return out


# -- samples ----------------------------------------------------------------------------------------
Segment = tuple[str, bool]  # (text, highlighted)


def highlight_segments(sentence: str, spans: list[tuple[int, int]]) -> list[Segment]:
    """Splits ``sentence`` into plain / highlighted pieces; spans are clamped and merged."""
    n = len(sentence)
    clean = sorted((max(0, min(n, int(s))), max(0, min(n, int(e)))) for s, e in spans if s is not None and e is not None)
    merged: list[list[int]] = []
    for s, e in clean:
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out: list[Segment] = []
    pos = 0
    for s, e in merged:
        if s > pos:
            out.append((sentence[pos:s], False))
        out.append((sentence[s:e], True))
        pos = e
    if pos < n:
        out.append((sentence[pos:], False))
    return out


@dataclass
class Sample:
    qa_id: str
    report_id: str
    granularity: str | None
    question_type: str | None
    split: str | None
    concept: str | None
    region: str | None
    answer_type: str | None
    question: str
    answer: str
    evidence_ids: list[int]
    evidence_text: str | None
    sentences: list[list[Segment]] = field(default_factory=list)  # from findings, spans highlighted

    @property
    def evidence_segments(self) -> list[Segment]:
        """Evidence sentences joined by spaces; falls back to evidence_text (unhighlighted)."""
        if self.sentences:
            out: list[Segment] = []
            for i, segs in enumerate(self.sentences):
                if i:
                    out.append((" ", False))
                out.extend(segs)
            return out
        return [(self.evidence_text, False)] if self.evidence_text else []


def fetch_samples(od: OutDir, n: int, seed: int) -> list[Sample]:
    """``n`` QA pairs from ``qa_f``, drawn deterministically by ``seed``, shown in file order."""
    if n <= 0:
        return []
    rows = od.rows(
        f"SELECT qa_id, report_id, granularity, question_type, split, concept, {od.col('qa', 'region')}, "
        f"{od.col('qa', 'answer_type')}, question, answer, evidence, evidence_text, file_row_number FROM qa_f "
        "ORDER BY hash(qa_id || ?), qa_id LIMIT ?", [f"#{seed}", int(n)])
    rows.sort(key=lambda r: r[-1])
    samples = [Sample(*r[:10], evidence_ids=[int(x) for x in (r[10] or []) if x is not None], evidence_text=r[11])
               for r in rows]
    wanted = [(s.qa_id, s.report_id, s.evidence_ids) for s in samples if s.evidence_ids]
    if not wanted:
        return samples
    table = pa.table({
        "qa_id": pa.array([w[0] for w in wanted], pa.string()),
        "report_id": pa.array([w[1] for w in wanted], pa.string()),
        "evidence": pa.array([w[2] for w in wanted], pa.list_(pa.int32())),
    })
    od.con.register("_sample_evidence", table)
    try:
        section = "f.section" if "section" in od.columns["findings"] else "NULL"
        hits = od.rows(
            f'SELECT s.qa_id, f.mention_id, {section}, f.sentence_id, f.sentence, f."start", f."end" '
            "FROM (SELECT qa_id, report_id, unnest(evidence) AS mention_id FROM _sample_evidence) s "
            "JOIN findings f ON f.report_id = s.report_id AND f.mention_id = s.mention_id "
            "ORDER BY s.qa_id, f.mention_id")
    finally:
        od.con.unregister("_sample_evidence")
    grouped: dict[str, dict[tuple, tuple[str, list[tuple[int, int]]]]] = {}
    for qa_id, _mid, sec, sid, sentence, start, end in hits:
        if sentence is None:
            continue
        by_sentence = grouped.setdefault(qa_id, {})
        key = (sec, sid, sentence)
        by_sentence.setdefault(key, (sentence, []))[1].append((start, end))
    for s in samples:
        for sentence, spans in grouped.get(s.qa_id, {}).values():  # insertion order = first mention order
            s.sentences.append(highlight_segments(sentence, spans))
    return samples
