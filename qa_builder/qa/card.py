"""Dataset statistics (OUT/stats.json) and the data card (OUT/data_card.md) of a qa table.

The card is `data_cards/qa_card_template.md` filled with string.Template ($name placeholders):
no templating dependency, and a user can edit the prose without touching code. No timestamps,
so the same table gives byte-identical files.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
from qa_builder.yamlio import load_yaml

from .generate import QUESTION_TYPES, QAConfig
from .schema import QA_SCHEMA_VERSION
from .splits import SPLITS

DATA_CARDS_DIR = Path(__file__).resolve().parents[2] / "data_cards"
DEFAULT_TEMPLATE = DATA_CARDS_DIR / "qa_card_template.md"
SOURCES_FILE = DATA_CARDS_DIR / "sources.yaml"


def _r(x: float) -> float:
    return round(float(x), 4)


_GRANULARITIES = ("coarse", "middle", "fine")


def _value_counts(array) -> list[tuple]:
    """[(value, count)] of one column (nulls as None)."""
    vc = pc.value_counts(array)
    return list(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()))


def _group_counts(table, keys: list[str]) -> list[tuple]:
    if table.num_rows == 0:
        return []
    agg = table.group_by(keys).aggregate([([], "count_all")])
    return list(zip(*(agg.column(k).to_pylist() for k in keys), agg.column("count_all").to_pylist()))


# The qa columns the statistics read.
STATS_COLUMNS = ("report_id", "subject_id", "granularity", "question_type", "answer", "concept", "evidence", "split")


def empty_partial_stats() -> dict[str, Any]:
    """partial_stats of no rows: the start of a merge."""
    return {
        "pairs": 0, "reports_with_pairs": 0, "reports_by_granularity": Counter(),
        "by_granularity": Counter(), "by_question_type": Counter(), "split_pairs": Counter(),
        "split_reports": Counter(), "split_subjects": {}, "by_concept": Counter(), "presence": Counter(),
        "answer_words": Counter(), "fine_pairs": 0, "fine_with_evidence": 0, "fine_evidence_mentions": 0,
    }


def partial_stats(qa: pa.Table | pa.RecordBatch) -> dict[str, Any]:
    """Mergeable counts of some qa rows (plain Python values, picklable).

    `qa-build` computes one per batch in its workers and merges them (`merge_partial_stats`), so
    the card never re-reads qa.parquet. Exact only when all rows of a report are in one part
    (report-level distinct counts are summed), which holds for qa-build's batches and for a whole table.
    """
    t = pa.Table.from_batches([qa]) if isinstance(qa, pa.RecordBatch) else qa
    p = empty_partial_stats()
    if t.num_rows == 0:
        return p
    p["pairs"] = t.num_rows
    p["reports_with_pairs"] = _distinct(t, "report_id")
    by_gran = t.group_by("granularity").aggregate([([], "count_all"), ("report_id", "count_distinct")])
    for g, pairs, reports in zip(*(by_gran.column(k).to_pylist() for k in
                                   ("granularity", "count_all", "report_id_count_distinct"))):
        p["by_granularity"][g] = pairs
        p["reports_by_granularity"][g] = reports
    p["by_question_type"].update(dict(_value_counts(t.column("question_type"))))
    by_split = t.group_by("split").aggregate([([], "count_all"), ("report_id", "count_distinct"),
                                              ("subject_id", "distinct")])
    for split, pairs, reports, subjects in zip(*(by_split.column(k).to_pylist() for k in
                                                 ("split", "count_all", "report_id_count_distinct",
                                                  "subject_id_distinct"))):
        p["split_pairs"][split] = pairs
        p["split_reports"][split] = reports
        p["split_subjects"][split] = {s for s in subjects if s is not None}
    words = pc.list_value_length(pc.utf8_split_whitespace(t.column("answer")))
    p["answer_words"].update({(g, w): c for g, w, c in _group_counts(
        pa.table({"g": t.column("granularity"), "w": words}), ["g", "w"])})
    fine = t.select(["question_type", "concept", "answer", "evidence"]).filter(pc.equal(t.column("granularity"), "fine"))
    if fine.num_rows:
        p["by_concept"].update(dict(_value_counts(fine.column("concept").drop_null())))
        presence = fine.filter(pc.equal(fine.column("question_type"), "presence"))
        p["presence"].update({(c, a): k for c, a, k in _group_counts(presence, ["concept", "answer"])})
        ev_len = pc.list_value_length(fine.column("evidence")).to_numpy(zero_copy_only=False)
        p["fine_pairs"] = fine.num_rows
        p["fine_with_evidence"] = int((ev_len > 0).sum())
        p["fine_evidence_mentions"] = int(ev_len.sum())
    return p


def merge_partial_stats(into: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """Add `part` to `into` (both from partial_stats); returns `into`."""
    for key, value in part.items():
        if key == "split_subjects":
            for split, subjects in value.items():
                into[key].setdefault(split, set()).update(subjects)
        elif isinstance(value, Counter):
            into[key].update(value)
        else:
            into[key] += value
    return into


def _percentile(hist: list[tuple[int, int]], q: float) -> float:
    """np.percentile(values, q) ('linear') from a sorted [(value, count)] histogram."""
    n = sum(c for _, c in hist)
    pos = q / 100 * (n - 1)
    lo, frac = int(pos), pos - int(pos)

    def kth(k: int) -> int:  # the k-th smallest value, 0-based
        seen = 0
        for value, count in hist:
            seen += count
            if k < seen:
                return value
        return hist[-1][0]

    a = kth(lo)
    return a + (kth(lo + 1) - a) * frac if frac else float(a)


def finish_stats(p: Mapping[str, Any], reports_count: int, *, config: QAConfig | None = None,
                 yes: str = "yes", no: str = "no", possibly: str = "possibly",
                 qa_parquet_path: str | Path | None = None, rejects_count: int | None = None) -> dict[str, Any]:
    """stats.json content from merged partial counts (see compute_stats for the arguments)."""
    n = p["pairs"]
    stats: dict[str, Any] = {"schema_version": QA_SCHEMA_VERSION, "reports": int(reports_count)}
    if rejects_count is not None:
        stats["rejects"] = int(rejects_count)
    stats["pairs"] = n
    stats["reports_with_pairs"] = p["reports_with_pairs"]
    stats["pairs_per_report"] = _r(n / reports_count) if reports_count else 0.0
    # share of reports with >= 1 pair of each granularity (fine: the headline coverage number)
    stats["coverage"] = {g: _r(p["reports_by_granularity"].get(g, 0) / reports_count) if reports_count else 0.0
                         for g in _GRANULARITIES}
    stats["by_granularity"] = {g: p["by_granularity"].get(g, 0) for g in _GRANULARITIES}
    by_type = p["by_question_type"]
    order = [q for q in QUESTION_TYPES if q in by_type] + sorted(q for q in by_type if q not in QUESTION_TYPES)
    stats["by_question_type"] = {q: by_type[q] for q in order}
    split_rows = {s: {"pairs": 0, "reports": 0, "subjects": 0} for s in SPLITS}
    for s in sorted(p["split_pairs"]):
        split_rows[s] = {"pairs": p["split_pairs"][s], "reports": p["split_reports"][s],
                         "subjects": len(p["split_subjects"].get(s, ()))}
    stats["by_split"] = split_rows
    stats["by_concept"] = {c: k for c, k in sorted(p["by_concept"].items(), key=lambda x: (-x[1], x[0]))}

    balance: dict[str, dict[str, Any]] = {}
    for (concept, answer), count in sorted(p["presence"].items(), key=lambda x: ("" if x[0][0] is None else x[0][0], x[0][1])):
        b = balance.setdefault(concept, {"yes": 0, "no": 0, "possibly": 0})
        key = "yes" if answer == yes else "no" if answer == no else "possibly" if answer == possibly else None
        if key:
            b[key] += count
    for b in balance.values():
        b["yes_share"] = _r(b["yes"] / (b["yes"] + b["no"])) if b["yes"] + b["no"] else None
    stats["presence_balance"] = {c: balance[c] for c in sorted(
        balance, key=lambda c: (-(balance[c]["yes"] + balance[c]["no"] + balance[c]["possibly"]), c))}

    lengths: dict[str, Any] = {}
    for g in _GRANULARITIES:
        hist = sorted((w, c) for (gg, w), c in p["answer_words"].items() if gg == g)
        if hist:
            total = sum(c for _, c in hist)
            mean = sum(w * c for w, c in hist) / total
            lengths[g] = {"mean": _r(mean), "min": int(hist[0][0]), "p50": _r(_percentile(hist, 50)),
                          "p90": _r(_percentile(hist, 90)), "p99": _r(_percentile(hist, 99)),
                          "max": int(hist[-1][0])}
    stats["answer_words"] = lengths

    if p["fine_pairs"]:
        stats["fine_evidence"] = {"with_evidence_share": _r(p["fine_with_evidence"] / p["fine_pairs"]),
                                  "mean_mentions": _r(p["fine_evidence_mentions"] / p["fine_pairs"])}
    if qa_parquet_path is not None and Path(qa_parquet_path).exists():
        size = Path(qa_parquet_path).stat().st_size
        stats["qa_parquet_bytes"] = size
        stats["qa_parquet_bytes_per_1000_reports"] = int(round(size * 1000 / reports_count)) if reports_count else None
    if config is not None:
        stats["config"] = config.to_dict()
    return stats


def _distinct(table: pa.Table, column: str) -> int:
    return int(pc.count_distinct(table.column(column)).as_py()) if table.num_rows else 0


def compute_stats(qa_table: pa.Table, reports_count: int, *, config: QAConfig | None = None,
                  yes: str = "yes", no: str = "no", possibly: str = "possibly",
                  qa_parquet_path: str | Path | None = None, rejects_count: int | None = None) -> dict[str, Any]:
    """Counts, balance, lengths and coverage of a qa table (the content of stats.json).

    reports_count: reports in reports.parquet (the coverage denominator).
    yes / no / possibly: the answer words of the template language (QAGenerator.yes ...).
    qa_parquet_path: when given, the file size is reported (bytes per 1,000 reports).
    """
    return finish_stats(partial_stats(qa_table), reports_count, config=config, yes=yes, no=no, possibly=possibly,
                        qa_parquet_path=qa_parquet_path, rejects_count=rejects_count)


# --------------------------------------------------------------------------------------------
# Markdown


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.3f}".rstrip("0").rstrip(".")
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _accuracy_section(accuracy: Mapping[str, Any] | None) -> str:
    """Render qa-eval's result whatever its nesting: scalars as bullets, a mapping of flat mappings
    (per label) as a table, deeper mappings recursively under a bold heading."""
    if not accuracy:
        return "Not measured: no gold file was given (`qa-eval OUT --gold FILE` measures it)."
    return _render_nested(accuracy, "")


def _is_flat(v: Any) -> bool:
    return isinstance(v, Mapping) and not any(isinstance(x, Mapping) for x in v.values())


def _render_nested(d: Mapping[str, Any], prefix: str) -> str:
    lines: list[str] = []
    blocks: list[str] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and all(_is_flat(v) for v in value.values()):
            cols: list[str] = []
            for v in value.values():
                cols += [c for c in v if c not in cols]
            blocks.append(f"**{name}**\n\n" + _table([""] + cols, [[k] + [v.get(c) for c in cols] for k, v in value.items()]))
        elif _is_flat(value):
            lines.append(f"- {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()))
        elif isinstance(value, Mapping):
            blocks.append(_render_nested(value, f"{name} / "))
        else:
            lines.append(f"- {name}: {_fmt(value)}")
    return "\n\n".join(([("\n".join(lines))] if lines else []) + blocks)


def _fmt(v: Any) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)


def load_source_info(name: str, sources_file: str | Path = SOURCES_FILE) -> dict[str, Any]:
    """Preset description of a corpus (data_cards/sources.yaml): 'mimic', 'openi', 'csv', ..."""
    with open(sources_file, encoding="utf-8") as fh:
        sources = load_yaml(fh) or {}
    if name not in sources:
        raise KeyError(f"no source preset {name!r} in {sources_file}; known: {sorted(sources)}")
    return dict(sources[name])


def render_card(stats: Mapping[str, Any], template_path: str | Path | None = None,
                source_info: Mapping[str, Any] | None = None,
                accuracy: Mapping[str, Any] | None = None,
                answer_accuracy: Mapping[str, Any] | None = None,
                difference: Mapping[str, Any] | None = None) -> str:
    """The data card markdown: the template with every $placeholder filled from stats/source/accuracy.

    answer_accuracy: the manifest's `overrides` block (`qa-build --overrides`); its section is only
    there when given, so a card without it keeps every byte."""
    src = dict(source_info or {})
    reports = stats.get("reports", 0)
    cov = stats.get("coverage", {})
    summary = _table(["", ""], [
        ["reports", reports],
        *([["rejected inputs", stats["rejects"]]] if "rejects" in stats else []),
        ["QA pairs", stats.get("pairs", 0)],
        ["pairs per report", stats.get("pairs_per_report")],
        ["coverage: reports with ≥ 1 fine pair", _pct(cov.get("fine"))],
        ["coverage: reports with ≥ 1 middle pair", _pct(cov.get("middle"))],
        ["coverage: reports with ≥ 1 coarse pair", _pct(cov.get("coarse"))],
        *([["qa.parquet bytes per 1,000 reports", stats["qa_parquet_bytes_per_1000_reports"]]]
          if stats.get("qa_parquet_bytes_per_1000_reports") is not None else []),
    ])
    pairs = max(stats.get("pairs", 0), 1)
    gran = _table(["granularity", "pairs", "share"],
                  [[g, c, _pct(c / pairs)] for g, c in stats.get("by_granularity", {}).items()])
    qtypes = _table(["question type", "granularity", "answer type", "pairs"],
                    [[q, *QUESTION_TYPES.get(q, ("?", "?")), c] for q, c in stats.get("by_question_type", {}).items()])
    splits = _table(["split", "pairs", "reports", "patients (subject ids)"],
                    [[s, v["pairs"], v["reports"], v["subjects"] or None]  # None: no patient ids
                     for s, v in stats.get("by_split", {}).items()])
    balance = stats.get("presence_balance", {})
    concepts = _table(["concept", "fine pairs", "presence yes", "presence no", "presence possibly", "yes share"],
                      [[c, n, balance.get(c, {}).get("yes", 0), balance.get(c, {}).get("no", 0),
                        balance.get(c, {}).get("possibly", 0), _pct(balance.get(c, {}).get("yes_share"))]
                       for c, n in stats.get("by_concept", {}).items()])
    lengths = _table(["granularity", "mean", "min", "median", "p90", "p99", "max"],
                     [[g, v["mean"], v["min"], v["p50"], v["p90"], v["p99"], v["max"]]
                      for g, v in stats.get("answer_words", {}).items()])
    config = stats.get("config")
    split_method = "MIMIC-CXR official split file (by study, then by patient), hash of the patient id otherwise" \
        if config and config.get("split_file") else \
        "stable hash (blake2b) of (seed, patient id); the report id where the patient is unknown"
    fields = {
        "title": src.get("title") or f"QA pairs from {src.get('name', 'radiology reports')}",
        "source_name": src.get("name", "unknown"),
        "source_description": src.get("description", "–"),
        "source_licence": src.get("licence", "unknown: check before sharing"),
        "source_url": src.get("url", "–"),
        "source_citation": src.get("citation", "–"),
        "source_redistribution": src.get("redistribution", "–"),
        "source_input": src.get("input", "–"),
        "summary_table": summary,
        "granularity_table": gran,
        "question_type_table": qtypes,
        "split_table": splits,
        "split_method": split_method,
        "concept_table": concepts,
        "answer_length_table": lengths,
        "accuracy_section": _accuracy_section(accuracy),
        "answer_accuracy_section": _answer_accuracy_section(answer_accuracy),
        "difference_section": _difference_section(difference),
        "config_json": json.dumps(config, indent=2, sort_keys=True) if config else "{}",
        "schema_version": stats.get("schema_version", ""),
    }
    text = Path(template_path or DEFAULT_TEMPLATE).read_text(encoding="utf-8")
    for name in ("answer_accuracy_section", "difference_section"):
        if fields[name] and f"${name}" not in text:
            text = text.rstrip("\n") + f"\n${name}\n"  # a user template without the placeholder
    return string.Template(text).safe_substitute(fields)


def _difference_section(block: Mapping[str, Any] | None) -> str:
    """diff_qa.parquet in the card: how studies were paired, pairs per type and source, days between."""
    if not block or not block.get("studies", {}).get("paired"):
        return ""
    studies = block["studies"]
    by_type = block.get("rows_by_type_and_source", {})
    sources = ("stated", "derived", "mixed")
    rows = [[t, *(v.get(s, 0) for s in sources), sum(v.values())] for t, v in by_type.items()]
    total = {s: sum(v.get(s, 0) for v in by_type.values()) for s in sources}
    n = max(sum(total.values()), 1)
    return "\n\n## Difference QA (diff_qa.parquet)\n\n" + "\n\n".join([
        f"Each study is paired with its patient's previous study (dates from "
        f"`{block.get('dates') or 'none'}`; a prior older than {block.get('max_prior_days'):g} days is none). Answers are the current report's own comparison "
        "(stated) or the difference of the two reports' findings (derived); silence is never read as absence.",
        _table(["studies", "count"], [[k.replace("_", " "), v] for k, v in studies.items()]),
        _table(["question type", *sources, "pairs"], rows),
        f"Stated {_pct(total['stated'] / n)}, derived {_pct(total['derived'] / n)}, a list of both "
        f"{_pct(total['mixed'] / n)}.",
        _table(["days between", "pairs of studies"], [list(b) for b in block.get("days_between", [])]),
    ])


def _answer_accuracy_section(block: Mapping[str, Any] | None) -> str:
    if not block:
        return ""
    from qa_builder.review.score import card_section

    return "\n\n" + card_section(block)


def write_data_card(out_dir: str | Path, qa_table: pa.Table | Mapping[str, Any], reports_count: int, *,
                    config: QAConfig | None = None, source_info: Mapping[str, Any] | None = None,
                    accuracy: Mapping[str, Any] | None = None, template_path: str | Path | None = None,
                    rejects_count: int | None = None, answer_accuracy: Mapping[str, Any] | None = None,
                    difference: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write OUT/stats.json and OUT/data_card.md (call after OUT/qa.parquet is written); return stats.

    qa_table: the qa table, or its counts from partial_stats (merged over batches)."""
    from .generate import get_generator  # the answer words of the configured language

    out = Path(out_dir)
    gen = get_generator(config or QAConfig())
    counts = qa_table if isinstance(qa_table, Mapping) else partial_stats(qa_table)
    stats = finish_stats(counts, reports_count, config=config, yes=gen.yes, no=gen.no, possibly=gen.possibly,
                         qa_parquet_path=out / "qa.parquet", rejects_count=rejects_count)
    if accuracy:
        stats["parser_accuracy"] = dict(accuracy)
    if answer_accuracy:  # the numbers of the card's section; the row lists stay in manifest.json
        score = answer_accuracy["score"]
        stats["answer_accuracy"] = {"file": answer_accuracy["file"], "sha256": answer_accuracy["sha256"],
                                    "counts": answer_accuracy["counts"], "by_type": score["by_type"],
                                    "table_estimate": score["table_estimate"], "headline": score["headline"]}
    if difference and difference.get("studies", {}).get("paired"):  # manifest.json has the counts either way
        stats["difference"] = dict(difference)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "data_card.md").write_text(render_card(stats, template_path, source_info, accuracy, answer_accuracy,
                                                  difference), encoding="utf-8")
    return stats
