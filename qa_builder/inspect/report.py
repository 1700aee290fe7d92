"""Self-contained HTML report for ``qa-inspect --html``: one file, inline CSS, inline SVG plots,
a tiny inline script for the sample filter box; no network access and no external assets."""
from __future__ import annotations

import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from . import svg
from .data import Filters, Sample, Stats, histogram_bins
from .terminal import manifest_highlights

TOP_CONCEPTS = 30

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2328;font:14px/1.45 "DejaVu Sans","Liberation Sans",Helvetica,Arial,sans-serif}
header{background:#1f2a44;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header .path{color:#c9d3ea;font-family:"DejaVu Sans Mono",monospace;font-size:13px;word-break:break-all}
header dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:10px 0 0;font-size:13px}
header dt{color:#9fb0d6}header dd{margin:0;word-break:break-all}
.chips{margin-top:8px}.chip{display:inline-block;background:#f59e0b;color:#1f2328;border-radius:10px;padding:1px 9px;margin-right:6px;font-size:12px}
main{max-width:1240px;margin:0 auto;padding:16px 20px 40px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.card{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:10px 16px;min-width:150px}
.card .v{font-size:22px;font-weight:bold}.card .k{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
section.panel{background:#fff;border:1px solid #dfe3e8;border-radius:8px;padding:12px 16px;overflow:hidden}
section.panel h2{font-size:15px;margin:0 0 8px}
section.panel .note{color:#57606a;font-size:12px;margin:0 0 6px}
section.wide{grid-column:1/-1}
svg.chart{display:block;max-width:100%;height:auto}
table.data{border-collapse:collapse;width:100%;font-size:13px}
table.data th,table.data td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:left;vertical-align:top}
table.data th{background:#f6f8fa;position:sticky;top:0}
table.data td.num,table.data th.num{text-align:right;font-variant-numeric:tabular-nums}
table.samples{table-layout:fixed}
table.samples td{word-wrap:break-word}
mark{background:#ffe066;padding:0 1px;border-radius:2px}
.bad{color:#de2d26;font-weight:bold}
.filterbar{display:flex;gap:12px;align-items:center;margin:4px 0 10px}
.filterbar input{flex:1;max-width:480px;padding:6px 10px;border:1px solid #c4cad1;border-radius:6px;font-size:14px}
.muted{color:#8a939c}
.schemes{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:8px 24px}
.schemes>div{min-width:0}
details pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px}
"""

# Client-side filter for the sample table (no data inside the script; nothing to escape).
SCRIPT = """
(function(){
  var box=document.getElementById('sample-filter'),count=document.getElementById('sample-count');
  var rows=Array.prototype.slice.call(document.querySelectorAll('#samples tbody tr'));
  var text=rows.map(function(r){return r.textContent.toLowerCase();});
  function apply(){
    var q=box.value.toLowerCase().trim(),n=0;
    rows.forEach(function(r,i){var ok=!q||text[i].indexOf(q)>=0;r.style.display=ok?'':'none';if(ok)n++;});
    count.textContent=n;
  }
  box.addEventListener('input',apply);
  // report.html#q=TEXT opens with the filter pre-filled (shareable links)
  if(location.hash.indexOf('#q=')===0){box.value=decodeURIComponent(location.hash.slice(3));apply();}
})();
"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("—" if value is None else e(value))


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "—"


def _panel(title: str, body: str, note: str | None = None, wide: bool = False) -> str:
    cls = "panel wide" if wide else "panel"
    note_html = f'<p class="note">{e(note)}</p>' if note else ""
    return f'<section class="{cls}"><h2>{e(title)}</h2>{note_html}{body}</section>'


def _evidence_html(sample: Sample) -> str:
    segs = sample.evidence_segments
    if not segs:
        return '<span class="muted">—</span>'
    return "".join(f"<mark>{e(t)}</mark>" if marked else e(t) for t, marked in segs)


def _labels_table(stats: Stats) -> str:
    if not stats.labels:
        return '<p class="muted">no labels in scope</p>'
    parts = []
    for scheme, rows in stats.labels.items():
        body = []
        for label, pos, neg, unc in rows:
            share = pos / stats.scope_reports if stats.scope_reports else 0.0
            bar = (f'<svg width="80" height="10" aria-hidden="true"><rect width="80" height="10" fill="#eef1f4"/>'
                   f'<rect width="{round(80 * share)}" height="10" fill="{svg.TEAL}" shape-rendering="crispEdges"/></svg>')
            body.append(f"<tr><td>{e(label)}</td><td class=num>{_n(pos)}</td><td class=num>{_n(neg)}</td>"
                        f"<td class=num>{_n(unc)}</td><td class=num>{_pct(pos, stats.scope_reports)}</td>"
                        f"<td>{bar}</td></tr>")
        parts.append(f'<div><h3 style="font-size:13px;margin:8px 0 4px">{e(scheme)}</h3>'
                     '<table class="data"><thead><tr><th>label</th><th class=num>positive</th>'
                     '<th class=num>negative</th><th class=num>uncertain</th><th class=num>prevalence</th>'
                     f'<th></th></tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    return '<div class="schemes">' + "".join(parts) + "</div>"


def _tables_table(stats: Stats) -> str:
    has_manifest = bool(stats.manifest_rows)
    head = "<tr><th>table</th><th class=num>rows</th>" + ("<th class=num>manifest</th>" if has_manifest else "") + "</tr>"
    body = []
    for name, rows in stats.table_rows.items():
        cells = f"<td>{e(name)}.parquet</td><td class=num>{_n(rows) if rows is not None else 'absent'}</td>"
        if has_manifest:
            expected = stats.manifest_rows.get(name)
            bad = expected is not None and expected != rows
            cells += (f"<td class=num>{_n(expected) if expected is not None else ''}"
                      f"{' <span class=bad>✗</span>' if bad else ''}</td>")
        body.append(f"<tr>{cells}</tr>")
    reasons = "".join(f"<tr><td>{e(r)}</td><td class=num>{_n(c)}</td></tr>" for r, c in stats.reject_reasons)
    rejects = (f'<h3 style="font-size:13px;margin:10px 0 4px">Reject reasons</h3><table class="data"><thead><tr>'
               f'<th>reason</th><th class=num>count</th></tr></thead><tbody>{reasons}</tbody></table>'
               if reasons else "")
    return f'<table class="data"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>{rejects}'


def _samples_table(samples: list[Sample], matched: int) -> str:
    rows = []
    for s in samples:
        tag = s.concept or s.region
        rows.append(
            f"<tr><td>{e(s.qa_id)}</td><td>{e(s.granularity)}<br><span class=muted>{e(s.question_type)}</span></td>"
            f"<td>{e(s.split)}</td><td>{e(tag) if tag else '<span class=muted>—</span>'}</td>"
            f"<td>{e(s.question)}</td><td>{e(s.answer)}</td><td>{_evidence_html(s)}</td></tr>")
    return (
        '<div class="filterbar"><input id="sample-filter" type="search" placeholder="filter rows (any text)…" '
        f'aria-label="filter samples"><span><b id="sample-count">{len(samples)}</b> of {len(samples):,} rows shown '
        f'<span class="muted">(sampled from {matched:,} matching pairs)</span></span></div>'
        '<table class="data samples" id="samples"><colgroup><col style="width:9%"><col style="width:9%">'
        '<col style="width:7%"><col style="width:11%"><col style="width:22%"><col style="width:16%">'
        '<col style="width:26%"></colgroup><thead><tr><th>qa_id</th><th>granularity / type</th><th>split</th>'
        '<th>concept / region</th><th>question</th><th>answer</th><th>evidence</th></tr></thead>'
        f'<tbody>{"".join(rows)}</tbody></table>')


def build_html(out_path: Path, stats: Stats, samples: list[Sample], flt: Filters,
               manifest: dict[str, Any] | None) -> str:
    title = f"QA inspection — {out_path.name or out_path}"
    head_dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in manifest_highlights(manifest, limit=12))
    chips = "".join(f'<span class="chip">{e(k)} = {e(v)}</span>' for k, v in flt.items())
    header = (f'<header><h1>{e(title)}</h1><div class="path">{e(out_path)}</div>'
              + (f"<dl>{head_dl}</dl>" if head_dl else '<div class="muted" style="margin-top:6px">no manifest.json</div>')
              + (f'<div class="chips">filters: {chips}</div>' if chips else "") + "</header>")

    tr = stats.table_rows
    inputs = (tr["reports"] or 0) + (tr["rejects"] or 0)
    cards = [("reports", _n(tr["reports"])),
             ("rejects", f'{_n(tr["rejects"])} <span class="muted" style="font-size:13px">'
                         f'({_pct(tr["rejects"] or 0, inputs)})</span>' if tr["rejects"] is not None else "absent"),
             ("finding mentions", _n(tr["findings"])), ("label rows", _n(tr["labels"])),
             ("QA pairs", _n(stats.qa_matched) + (f' <span class="muted" style="font-size:13px">of '
                                                  f'{stats.qa_total:,}</span>' if flt else ""))]
    cards_html = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{e(k)}</div><div class="v">{v}</div></div>' for k, v in cards) + "</div>"

    split_colors = [svg.SPLIT_COLORS.get(name, svg.FALLBACK) for name, *_ in stats.by_split]
    concepts = [(c, qa) for c, qa, *_ in stats.concepts if qa > 0][:TOP_CONCEPTS]
    presence = sorted(stats.presence, key=lambda r: -(r[1] + r[2] + r[3]))[:TOP_CONCEPTS]
    hist = histogram_bins(stats.answer_lengths)
    panels = [
        _panel("Question types", svg.hbar_chart(stats.by_question_type, color=svg.BLUE, title="Question types"),
               note=f"{stats.qa_matched:,} QA pairs"),
        _panel("Granularity and splits",
               svg.hbar_chart(stats.by_granularity, color=svg.TEAL, title="Granularity", bar_height=16)
               + svg.vbar_chart([(name, pairs) for name, pairs, *_ in stats.by_split], colors=split_colors,
                                title="QA pairs per split", height=180)
               + "<p class=note>" + " · ".join(f"{e(name)}: {reports:,} reports" + (f", {subjects:,} subjects" if subjects else "")
                                               for name, _p, reports, subjects in stats.by_split) + "</p>"),
        _panel(f"Concepts (top {min(TOP_CONCEPTS, len(concepts))} of {sum(1 for c in stats.concepts if c[1])})",
               svg.hbar_chart(concepts, color=svg.BLUE, title="QA pairs per concept", bar_height=14, gap=4),
               note="QA pairs per finding concept"),
        _panel("Presence questions: yes / no balance",
               svg.stacked_hbar_chart([(c, [y, n, o]) for c, y, n, o in presence], series=["yes", "no", "other"],
                                      colors=[svg.YES, svg.NO, svg.OTHER], title="yes/no balance per concept",
                                      bar_height=14, gap=4),
               note="share of answers per concept (top 30 by count)"),
        _panel("Answer length", svg.vbar_chart(hist, colors=svg.PINK, title="Answer length histogram",
                                               x_title="answer length (words)"),
               note="QA pairs by number of words in the answer"),
        _panel("Tables", _tables_table(stats)),
        _panel("Label prevalence", _labels_table(stats), wide=True,
               note=f"prevalence = positive / {stats.scope_reports:,} reports"
                    + (" in scope" if stats.scoped else "")),
        _panel("Samples", _samples_table(samples, stats.qa_matched), wide=True),
    ]
    manifest_html = ""
    if manifest:
        manifest_html = ('<details style="margin-top:16px"><summary>manifest.json</summary><pre>'
                         + e(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True, default=str))
                         + "</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{e(title)}</title><style>{CSS}</style></head><body>{header}<main>{cards_html}"
            f'<div class="grid">{"".join(panels)}</div>{manifest_html}</main>'
            f"<script>{SCRIPT}</script></body></html>\n")


def write_atomic(path: Path, text: str) -> None:
    """Writes via a temp file in the same directory and ``os.replace`` so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
