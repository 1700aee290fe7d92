"""Scoring a build against a review sheet (`qa-eval OUT --review SHEET`, and `qa-build --overrides`).

Each reviewed row gets one outcome:
- rows with an expected answer (corrected_answer is not DROP, verdict not trivial):
  as_corrected (found, same answer; `trimmed` counts the region answers matched by trimming only),
  different (found, another answer), lost (the key is not in the build); an awkward row whose
  corrected answer only repeats its own answer (content right, wording bad) answered otherwise is
  reworded instead of different: the sheet cannot say whether the wording was fixed or the content
  broken, so it is left out of the rate and listed for a person to check;
- drop rows (DROP or trivial): dropped (key absent) or still_asked.
Rate per type = as_corrected / (as_corrected + different + still_asked): of the reviewed pairs the
build still asks, the share answered right (reworded rows are in neither part).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from qa_builder.qa.generate import QUESTION_TYPES

from .keys import AnswerRules, Key, KeyReader
from .sheet import ReviewError, ReviewRow, duplicate_keys, read_sheet

OUTCOMES = ("as_corrected", "different", "reworded", "lost", "dropped", "still_asked")
Z95 = 1.959963984540054
# The targets: (result key, comparison, threshold).
TARGETS = {
    "expected_answered_as_corrected": (">=", 0.97),
    "drop_no_longer_asked": (">=", 0.90),
    "expected_lost": ("<=", 0.05),
    "lowest_type_rate": (">=", 0.90),
}


class Built(NamedTuple):
    """What a build has for a key."""
    answer: str
    question: str
    qa_id: str


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of k successes in n trials (None for n = 0)."""
    if n <= 0:
        return None
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def classify(row: ReviewRow, built: Built | None, rules: AnswerRules) -> tuple[str, bool]:
    """(outcome, trimmed) of one reviewed row."""
    if row.drop:
        return ("still_asked" if built is not None else "dropped"), False
    if built is None:
        return "lost", False
    kind = rules.match(built.answer, row.expected, row.key.question_type)
    if kind:
        return "as_corrected", kind == "trimmed"
    # The expected answer is the flawed wording itself: another answer may be the fix or a new error.
    return ("reworded" if row.reworded_only else "different"), False


def _rate(k: int, n: int) -> dict[str, Any]:
    ci = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": list(ci) if ci else None}


def _counts() -> dict[str, int]:
    return {"reviewed": 0, **{o: 0 for o in OUTCOMES}, "trimmed": 0, "right_at_review": 0}


def score(rows: Iterable[ReviewRow], found: Mapping[Key, Built], rules: AnswerRules,
          type_rows: Mapping[str, int], build_duplicates: Iterable[Key] = ()) -> dict[str, Any]:
    """The whole result (JSON-able). `found`: the build's pair per key (only keys of reviewed reports
    are needed); `type_rows`: the build's rows per question type (weights of the table estimate)."""
    rows = [r for r in rows if r.reviewed]
    by_type: dict[str, dict[str, int]] = {}
    lists: dict[str, list[dict]] = {"still_asked": [], "different": [], "reworded": [], "lost": [],
                                    "regressions": []}
    for r in rows:
        built = found.get(r.key)
        outcome, trimmed = classify(r, built, rules)
        c = by_type.setdefault(r.key.question_type, _counts())
        c["reviewed"] += 1
        c[outcome] += 1
        c["trimmed"] += trimmed
        c["right_at_review"] += r.right_at_review
        if outcome in ("still_asked", "different", "lost"):
            lists[outcome].append(_entry(r, built))
        elif outcome == "reworded":
            lists[outcome].append({**_entry(r, built), "note": r.note})
        if outcome == "different" and r.verdict == "correct":
            lists["regressions"].append(_entry(r, built))

    order = [t for t in QUESTION_TYPES if t in by_type] + sorted(t for t in by_type if t not in QUESTION_TYPES)
    types = {t: _type_result(by_type[t], type_rows.get(t, 0)) for t in order}
    total = _counts()
    for c in by_type.values():
        for k, v in c.items():
            total[k] += v

    expected_asked = total["as_corrected"] + total["different"]  # reworded rows: neither right nor wrong
    expected = expected_asked + total["reworded"] + total["lost"]
    drops = total["dropped"] + total["still_asked"]
    rated = {t: v["rate"]["rate"] for t, v in types.items() if v["rate"]["rate"] is not None}
    lowest = min(rated, key=lambda t: (rated[t], t)) if rated else None
    headline = {
        "expected_answered_as_corrected": _rate(total["as_corrected"], expected_asked),
        "drop_no_longer_asked": _rate(total["dropped"], drops),
        "expected_lost": _rate(total["lost"], expected),
        "lowest_type_rate": {**types[lowest]["rate"], "type": lowest} if lowest else _rate(0, 0),
    }
    for name, (op, target) in TARGETS.items():
        value = headline[name]["rate"]
        headline[name]["target"] = f"{op} {target:.0%}"
        headline[name]["met"] = None if value is None else (value >= target if op == ">=" else value <= target)
    return {
        "reviewed": total["reviewed"], "expected_rows": expected, "drop_rows": drops,
        "by_type": types, "total": _type_result(total, sum(type_rows.get(t, 0) for t in types)),
        "table_estimate": _table_estimate(types, type_rows), "headline": headline, "lists": lists,
        "duplicates": {"sheet": [list(k) for k in duplicate_keys(r.key for r in rows)],
                       "build": [list(k) for k in build_duplicates]},
    }


def _type_result(c: Mapping[str, int], table_rows: int) -> dict[str, Any]:
    asked = c["as_corrected"] + c["different"] + c["still_asked"]
    return {**c, "table_rows": table_rows, "rate": _rate(c["as_corrected"], asked),
            # at review time every reviewed pair was asked, and answered as the sheet shows
            "at_review": _rate(c["right_at_review"], c["reviewed"])}


def _table_estimate(types: Mapping[str, Mapping], type_rows: Mapping[str, int]) -> dict[str, Any]:
    """Per-type rates weighted by the build's rows per type; types without a rate are left out."""
    used = {t: type_rows.get(t, 0) for t, v in types.items() if v["rate"]["rate"] is not None and type_rows.get(t)}
    weight = sum(used.values())

    def weighted(field: str) -> float | None:
        vals = {t: types[t][field]["rate"] for t in used if types[t][field]["rate"] is not None}
        w = sum(used[t] for t in vals)
        return sum(vals[t] * used[t] for t in vals) / w if w else None

    left_out = {t: n for t, n in type_rows.items() if t not in used and n}
    return {"rate": weighted("rate"), "at_review": weighted("at_review"), "rows_covered": weight,
            "rows_total": sum(type_rows.values()), "left_out": dict(sorted(left_out.items()))}


def _entry(r: ReviewRow, built: Built | None) -> dict[str, Any]:
    return {"row": r.row, "report_id": r.key.report_id, "question_type": r.key.question_type,
            "subject": r.key.subject, "side": r.key.side, "question": built.question if built else r.question,
            "built": built.answer if built else None, "expected": r.expected if not r.drop else "DROP",
            "verdict": r.verdict, "category": r.category}


# -- from a build folder ----------------------------------------------------------------------

def build_templates(out: Path) -> tuple[str, tuple[str, ...]]:
    """(language, extra templates) the build in `out` was made with (manifest.json), else ('en', ())."""
    try:
        qa = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["config"]["qa"]
        return str(qa.get("language") or "en"), tuple(qa.get("extra_templates") or ())
    except (OSError, ValueError, KeyError, TypeError):
        return "en", ()


def read_build(out: Path, reader: KeyReader, report_ids: set[str] | None = None
               ) -> tuple[dict[Key, Built], list[Key], dict[str, int]]:
    """(pair per key, duplicated keys, rows per question type) of OUT/qa.parquet; keys only for
    `report_ids` when given (a sheet covers a few reports of a large table)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = out / "qa.parquet"
    if not path.exists():
        raise ReviewError(f"{path}: missing; run qa-build first")
    types = pq.read_table(path, columns=["question_type"]).column(0)
    vc = pc.value_counts(types)
    type_rows = dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))
    cols = ["qa_id", "report_id", "question_type", "question", "answer", "concept", "region"]
    filters = [("report_id", "in", sorted(report_ids))] if report_ids is not None else None
    table = pq.read_table(path, columns=cols, filters=filters) if report_ids != set() else None
    found: dict[Key, Built] = {}
    keys: list[Key] = []
    for r in table.to_pylist() if table is not None else ():
        key = row_key(reader, r)
        if key is None:
            continue
        keys.append(key)
        found.setdefault(key, Built(r["answer"], r["question"], r["qa_id"]))
    return found, duplicate_keys(keys), type_rows


def row_key(reader: KeyReader, r: Mapping[str, Any]) -> Key | None:
    """Key of a qa.parquet row (None when its question names no side / region it should)."""
    try:
        return reader.key(r["report_id"], r["question_type"], concept=r.get("concept"), question=r["question"],
                          region=r.get("region") if r["question_type"] == "region" else None)
    except ValueError:
        return None


def evaluate_review(out: str | Path, sheet: str | Path) -> dict[str, Any]:
    """qa-eval --review: the score of the build in `out` against `sheet`."""
    out = Path(out)
    language, extra = build_templates(out)
    reader = KeyReader.for_config(language, extra)
    rows = read_sheet(sheet, reader)
    found, dups, type_rows = read_build(out, reader, {r.key.report_id for r in rows})
    result = score(rows, found, AnswerRules.for_config(language, extra), type_rows, dups)
    result["sheet"] = str(sheet)
    result["unreviewed"] = sum(not r.reviewed for r in rows)
    return result


# -- rendering --------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _rate_cell(r: Mapping[str, Any]) -> str:
    if r["rate"] is None:
        return "–"
    lo, hi = r["ci95"]
    return f"{_pct(r['rate'])} [{_pct(lo)}, {_pct(hi)}]"


_HEADLINE_TEXT = {
    "expected_answered_as_corrected": "expected rows still asked, answered as corrected",
    "drop_no_longer_asked": "drop rows no longer asked",
    "expected_lost": "expected rows lost",
    "lowest_type_rate": "lowest per-type rate",
}


def format_table(result: Mapping[str, Any]) -> str:
    lines = [f"review sheet: {result.get('sheet', '?')}: {result['reviewed']} reviewed rows "
             f"({result['expected_rows']} with an expected answer, {result['drop_rows']} to drop"
             + (f"; {result['unreviewed']} not reviewed yet, skipped" if result.get("unreviewed") else "") + ")", ""]
    head = (f"{'type':<12}{'reviewed':>9}{'as corrected':>13}{'(trimmed)':>10}{'different':>10}{'reworded':>9}"
            f"{'lost':>6}{'dropped':>8}{'still asked':>12}   {'answered right [95% CI]':<26}{'at review [95% CI]':<26}"
            f"{'rows':>8}")
    lines.append(head)
    for name, t in [*result["by_type"].items(), ("all", result["total"])]:
        lines.append(f"{name:<12}{t['reviewed']:>9}{t['as_corrected']:>13}{t['trimmed']:>10}{t['different']:>10}"
                     f"{t['reworded']:>9}{t['lost']:>6}{t['dropped']:>8}{t['still_asked']:>12}   "
                     f"{_rate_cell(t['rate']):<26}{_rate_cell(t['at_review']):<26}{t['table_rows']:>8,}")
    est = result["table_estimate"]
    lines += ["", f"whole table (per-type rates weighted by this build's rows per type, {est['rows_covered']:,} of "
              f"{est['rows_total']:,} rows): {_pct(est['rate'])} answered right (at review: {_pct(est['at_review'])})"]
    if est["left_out"]:
        lines.append("  left out, no reviewed row: " + ", ".join(f"{t} ({n:,} rows)" for t, n in est["left_out"].items()))
    lines += ["", "targets:"]
    for name, h in result["headline"].items():
        what = _HEADLINE_TEXT[name] + (f": {h['type']}" if h.get("type") else "")
        met = "–" if h["met"] is None else ("met" if h["met"] else "NOT MET")
        lines.append(f"  {what:<52}{_pct(h['rate']):>7} ({h['k']}/{h['n']})  target {h['target']:<7} {met}")
    titles = {"still_asked": "drop rows still asked", "different": "expected rows answered differently",
              "reworded": "awkward rows (corrected answer = the flawed one) answered otherwise: "
                          "wording fixed or content broken? check by hand",
              "lost": "expected rows no longer asked (lost)",
              "regressions": "regressions: reviewed correct, now answered differently"}
    for name, title in titles.items():
        entries = result["lists"][name]
        lines += ["", f"{title}: {len(entries)}"]
        lines += [f"  {_entry_line(e, 'reviewed' if name == 'reworded' else 'expected')}" for e in entries]
    for where, dups in result["duplicates"].items():
        if dups:
            lines += ["", f"duplicate keys in the {where}: " + "; ".join("/".join(d) for d in dups)]
    return "\n".join(lines)


def _entry_line(e: Mapping[str, Any], expected: str = "expected") -> str:
    subject = (e["subject"] or "-") + (f"/{e['side']}" if e["side"] else "")
    built = "(not asked)" if e["built"] is None else repr(e["built"])
    return (f"{e['report_id']} {e['question_type']} {subject}: {e['question']!r} -> built {built}; "
            f"{expected} {e['expected']!r} [{e['verdict']}{', ' + e['category'] if e['category'] else ''}]"
            + (f" note: {e['note']}" if e.get("note") else ""))


def card_section(block: Mapping[str, Any]) -> str:
    """The data card's "Measured answer accuracy" section of a `qa-build --overrides` run."""
    s, c = block["score"], block["counts"]
    rows = []
    for name, t in [*s["by_type"].items(), ("all", s["total"])]:
        rows.append([name, t["reviewed"], f"{t['as_corrected']} ({t['trimmed']})", t["different"], t["reworded"],
                     t["lost"], t["dropped"], t["still_asked"], _rate_cell(t["rate"]), _rate_cell(t["at_review"]),
                     f"{t['table_rows']:,}"])
    header = ["question type", "reviewed", "as corrected (trimmed)", "different", "reworded", "lost", "dropped",
              "still asked", "answered right [95 % CI]", "at review", "rows"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                       *("| " + " | ".join(str(v) for v in r) + " |" for r in rows)])
    est = s["table_estimate"]
    left = ", ".join(f"{t} ({n:,} rows)" for t, n in est["left_out"].items())
    a = c["applied"]
    return "\n".join([
        "## Measured answer accuracy", "",
        f"Review sheet `{block['file']}` (sha256 `{block['sha256'][:12]}…`), scored on this build's pairs "
        "*before* the sheet's verdicts were applied. Answered right = as corrected / (as corrected + different "
        "+ still asked); trimmed = region answers that match only as a shortened version of the expected one; "
        "reworded = awkward rows whose corrected answer repeats the flawed one, answered otherwise (not rated).", "",
        table, "",
        f"Whole-table estimate (per-type rates weighted by each type's rows, {est['rows_covered']:,} of "
        f"{est['rows_total']:,} rows): {_pct(est['rate'])} answered right (at review: {_pct(est['at_review'])})."
        + (f" Left out, no reviewed row: {left}." if left else ""), "",
        f"{c['reviewed']} reviewed pairs applied: {a['dropped']} dropped, {a['corrected']} corrected, "
        f"{a['confirmed']} already agreed, {a['not_found']} not found in this build.",
    ])
