"""`qa-review sample --html`: one self-contained page of review cards (inline CSS, no script, no
network), one card per sampled pair: question, answer, and the report's FINDINGS / IMPRESSION
with the evidence sentences marked and the evidence mentions in bold.

The style follows qa_builder/inspect/report.py (same palette), without depending on it.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any, Iterable, Mapping

from qa_builder.sentences import split_sentences

from .sheet import VERDICTS

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2328;font:14px/1.45 "DejaVu Sans","Liberation Sans",Helvetica,Arial,sans-serif}
header{background:#1f2a44;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:4px 0 0;color:#c9d3ea;font-size:13px}
main{max-width:1000px;margin:0 auto;padding:16px 20px 40px}
section.card{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:12px 16px;margin-bottom:14px}
.meta{color:#57606a;font-size:12px;margin-bottom:6px;font-family:"DejaVu Sans Mono",monospace}
.qa{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0 0 8px}
.qa dt{color:#57606a;font-weight:bold}.qa dd{margin:0}
.qa dd.a{font-weight:bold}
.report h3{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a;margin:8px 0 2px}
.report p{margin:0}
mark{background:#ffe066;padding:0 1px;border-radius:2px}
mark strong{background:#f59e0b;border-radius:2px}
.verdict{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin-top:10px;border-top:1px dashed #c4cad1;padding-top:8px}
.verdict dt{color:#57606a}.verdict dd{margin:0;border-bottom:1px solid #c4cad1;min-height:1.3em}
.muted{color:#8a939c}
"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def write_html(rows: list[Mapping[str, Any]], out: str | Path, path: str | Path, title: str) -> None:
    """The cards of `rows` (sheet rows with their `evidence` mention ids) from the build in `out`."""
    reports, mentions = _load(Path(out), {r["report_id"] for r in rows})
    cards = [_card(i, r, reports.get(r["report_id"], {}), mentions) for i, r in enumerate(rows, 1)]
    head = (f"<header><h1>{e(title)}</h1><p>{len(rows)} pairs. Verdict per pair, in the sheet: "
            f"{e(' | '.join(VERDICTS))}; corrected_answer = the right answer, or DROP when the question should "
            "not be asked of this report. Marked: evidence sentences; bold: the evidence mentions.</p></header>")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{head}\n<main>\n" + "\n".join(cards) + "\n</main>\n</body>\n</html>\n")
    Path(path).write_text(page, encoding="utf-8")


def _load(out: Path, report_ids: set[str]) -> tuple[dict[str, dict], dict[tuple[str, int], dict]]:
    import pyarrow.parquet as pq

    if not report_ids:
        return {}, {}
    ids = sorted(report_ids)
    reports = {r["report_id"]: r for r in pq.read_table(out / "reports.parquet", columns=["report_id", "findings", "impression"],
                                                        filters=[("report_id", "in", ids)]).to_pylist()}
    cols = ["report_id", "mention_id", "section", "sentence", "start", "end"]
    mentions = {(m["report_id"], m["mention_id"]): m for m in
                pq.read_table(out / "findings.parquet", columns=cols, filters=[("report_id", "in", ids)]).to_pylist()}
    return reports, mentions


def _card(i: int, r: Mapping[str, Any], report: Mapping[str, Any], mentions: Mapping[tuple[str, int], dict]) -> str:
    rid = r["report_id"]
    # Evidence by (section, sentence text), not sentence id: robust to how ids are counted.
    spans: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for mid in r.get("evidence") or ():
        m = mentions.get((rid, mid))
        if m:
            spans[(m["section"], m["sentence"])].append((m["start"], m["end"]))
    # A region answered by sentences without a finding mention has no evidence ids, only evidence_text.
    loose = (r.get("evidence_text") or "") if not spans else ""
    subject = r.get("concept") or r.get("region") or ""
    meta = " · ".join(x for x in (f"#{i}", f"report {rid}", r["question_type"], subject, r.get("side"), r.get("qa_id")) if x)
    body = []
    for section in ("findings", "impression"):
        text = report.get(section)
        if text:
            sentences = [_sentence(s, spans.get((section, s)), bool(loose) and s in loose) for s in split_sentences(text)]
            body.append(f"<h3>{section}</h3><p>{' '.join(sentences)}</p>")
    if not body:
        body.append('<p class="muted">report text not found in reports.parquet</p>')
    fields = "".join(f"<dt>{c}</dt><dd></dd>" for c in ("verdict", "corrected_answer", "category", "note"))
    return (f'<section class="card" id="pair-{i}">\n<div class="meta">{e(meta)}</div>\n'
            f'<dl class="qa"><dt>Q</dt><dd>{e(r["question"])}</dd><dt>A</dt><dd class="a">{e(r["answer"])}</dd></dl>\n'
            f'<div class="report">{"".join(body)}</div>\n<dl class="verdict">{fields}</dl>\n</section>')


def _sentence(text: str, spans: Iterable[tuple[int, int]] | None, marked: bool) -> str:
    if spans is None:
        return f"<mark>{e(text)}</mark>" if marked else e(text)
    parts, pos = [], 0
    for start, end in sorted(set(spans)):
        if start < pos or end > len(text):  # overlapping or out of range: leave unbolded
            continue
        parts += [e(text[pos:start]), f"<strong>{e(text[start:end])}</strong>"]
        pos = end
    parts.append(e(text[pos:]))
    return f"<mark>{''.join(parts)}</mark>"
