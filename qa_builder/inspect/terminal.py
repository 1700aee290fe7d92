"""Rich terminal rendering for ``qa-inspect``."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich import box
from rich.columns import Columns
from rich.markup import escape
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .data import Filters, Sample, Stats

HIGHLIGHT = "bold black on yellow"
TOP_CONCEPTS = 20
TOP_PRESENCE = 20


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("—" if value is None else str(value))


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "—"


def manifest_highlights(manifest: dict[str, Any] | None, limit: int = 10) -> list[tuple[str, str]]:
    """Short ``key: value`` pairs from the manifest: scalars, and one level of small dicts, with
    version / input / time keys first."""
    if not manifest:
        return []
    items: list[tuple[str, str]] = []
    for key, value in manifest.items():
        if isinstance(value, dict):
            if len(value) <= 6 and all(not isinstance(v, (dict, list)) for v in value.values()):
                items.append((str(key), ", ".join(f"{k}={v}" for k, v in value.items())))
        elif isinstance(value, list):
            if len(value) <= 4 and all(not isinstance(v, (dict, list)) for v in value):
                items.append((str(key), ", ".join(map(str, value))))
        else:
            items.append((str(key), str(value)))

    def rank(item: tuple[str, str]) -> int:
        k = item[0].lower()
        for i, word in enumerate(("version", "input", "wall", "time", "row", "count", "config")):
            if word in k:
                return i
        return 99

    items.sort(key=rank)
    return [(k, v if len(v) <= 90 else v[:89] + "…") for k, v in items[:limit]]


def evidence_text(sample: Sample) -> Text:
    text = Text()
    for chunk, marked in sample.evidence_segments:
        text.append(chunk, style=HIGHLIGHT if marked else None)
    if not text:
        text.append("—", style="dim")
    return text


def _count_table(title: str, rows: list[tuple[str, int]], total: int, header: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_style="bold", title_justify="left")
    table.add_column(header)
    table.add_column("pairs", justify="right")
    table.add_column("%", justify="right")
    for name, count in rows:
        table.add_row(Text(str(name)), _n(count), _pct(count, total))
    return table


def render(console: Console, out_path: str, stats: Stats, samples: list[Sample], flt: Filters,
           manifest: dict[str, Any] | None, n: int) -> None:
    console.rule(f"[bold]qa-inspect[/] {escape(out_path)}", style="cyan")
    for key, value in manifest_highlights(manifest):
        console.print(Text.assemble((f"{key}: ", "dim"), value))

    # tables
    tables = Table(title="Tables", box=box.SIMPLE_HEAD, title_style="bold", title_justify="left")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    if stats.manifest_rows:
        tables.add_column("manifest", justify="right")
    for name, rows in stats.table_rows.items():
        cells = [f"{name}.parquet", _n(rows) if rows is not None else "[dim]absent[/]"]
        if stats.manifest_rows:
            expected = stats.manifest_rows.get(name)
            mark = "" if expected is None or expected == rows else " [red]✗ mismatch[/]"
            cells.append((_n(expected) if expected is not None else "") + mark)
        tables.add_row(*cells)
    inputs = (stats.table_rows["reports"] or 0) + (stats.table_rows["rejects"] or 0)
    side = [tables]
    if stats.table_rows["rejects"] is not None:
        rej = Table(title=f"Rejects: {_n(stats.table_rows['rejects'])} of {_n(inputs)} inputs "
                          f"({_pct(stats.table_rows['rejects'] or 0, inputs)})",
                    box=box.SIMPLE_HEAD, title_style="bold", title_justify="left", min_width=40)
        rej.add_column("reason")
        rej.add_column("count", justify="right")
        for reason, count in stats.reject_reasons:
            rej.add_row(Text(str(reason)), _n(count))
        side.append(rej)
    console.print(Columns(side, padding=(0, 4)))

    if flt:
        console.print(Text.assemble(("filters: ", "bold"), flt.describe(), "  →  ",
                                    (f"{stats.qa_matched:,}", "bold"), f" of {stats.qa_total:,} QA pairs match"))
    else:
        console.print(Text.assemble(("QA pairs: ", "bold"), f"{stats.qa_total:,}"))

    total = stats.qa_matched
    splits = Table(title="Splits", box=box.SIMPLE_HEAD, title_style="bold", title_justify="left")
    for col, just in (("split", "left"), ("pairs", "right"), ("%", "right"), ("reports", "right"),
                      ("subjects", "right")):
        splits.add_column(col, justify=just)
    for name, pairs, reports, subjects in stats.by_split:
        splits.add_row(Text(str(name)), _n(pairs), _pct(pairs, total), _n(reports),
                       _n(subjects) if subjects else "—")  # — : no subject ids in this source
    blocks = [_count_table("Granularity", stats.by_granularity, total, "granularity"), splits]
    if stats.by_answer_type:
        blocks.append(_count_table("Answer type", stats.by_answer_type, total, "answer_type"))
    console.print(Columns(blocks, padding=(0, 4)))
    console.print(_count_table("Question types", stats.by_question_type, total, "question_type"))

    concepts = Table(title=f"Top concepts ({min(TOP_CONCEPTS, len(stats.concepts))} of {len(stats.concepts)})",
                     box=box.SIMPLE_HEAD, title_style="bold", title_justify="left",
                     caption="mentions (pos/neg/unc): findings.parquet rows" + (" in scope" if stats.scoped else ""),
                     caption_justify="left")
    for col in ("concept", "QA pairs", "mentions", "pos", "neg", "unc"):
        concepts.add_column(col, justify="left" if col == "concept" else "right")
    for concept, qa, mentions, pos, neg, unc in stats.concepts[:TOP_CONCEPTS]:
        concepts.add_row(Text(str(concept)), _n(qa), _n(mentions), _n(pos), _n(neg), _n(unc))
    presence = Table(title="Presence questions: yes/no balance", box=box.SIMPLE_HEAD, title_style="bold",
                     title_justify="left")
    for col in ("concept", "yes", "no", "other", "yes %"):
        presence.add_column(col, justify="left" if col == "concept" else "right")
    for concept, yes, no, other in stats.presence[:TOP_PRESENCE]:
        share = _pct(yes, yes + no)
        skew = yes + no >= 10 and not (0.1 <= yes / (yes + no) <= 0.9)
        presence.add_row(Text(str(concept)), _n(yes), _n(no), _n(other), f"[red]{share}[/]" if skew else share)
    if len(stats.presence) > TOP_PRESENCE:
        presence.caption = f"{len(stats.presence) - TOP_PRESENCE} more concepts not shown"
    console.print(Columns([concepts, presence], padding=(0, 4)))

    label_tables = []
    for scheme, rows in stats.labels.items():
        t = Table(title=f"Labels: {scheme}", box=box.SIMPLE_HEAD, title_style="bold", title_justify="left",
                  caption=f"prevalence = positive / {stats.scope_reports:,} reports", caption_justify="left")
        for col in ("label", "pos", "neg", "unc", "prevalence"):
            t.add_column(col, justify="left" if col == "label" else "right")
        for label, pos, neg, unc in rows:
            t.add_row(Text(label), _n(pos), _n(neg), _n(unc), _pct(pos, stats.scope_reports))
        label_tables.append(t)
    if label_tables:
        console.print(Columns(label_tables, padding=(0, 4)))
    else:
        console.print(Text("labels.parquet: no labels in scope", style="dim"))

    if n <= 0:
        return
    console.rule(f"Samples ({len(samples)} of {stats.qa_matched:,})", style="cyan")
    if not samples:
        console.print(Text("no QA pairs match the filters", style="yellow"))
    for s in samples:
        where = " · ".join(str(v) for v in (s.granularity, s.question_type, s.split,
                                            s.concept or s.region) if v)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row("Q", Text(s.question))
        grid.add_row("A", Text(s.answer, style="green"))
        grid.add_row("E", evidence_text(s))
        console.print(Panel(Group(grid), title=Text(s.qa_id, style="bold"), title_align="left",
                            subtitle=Text(where, style="dim"), subtitle_align="right", box=box.ROUNDED,
                            expand=True))


def _cell(value: Any) -> Text:
    return Text("null", style="dim") if value is None else Text(str(value))


def render_sql(console: Console, columns: list[str], rows: list[tuple], more: bool) -> None:
    """A table, or psql-style expanded records (one ``column  value`` block per row) when the
    table would not fit the console width."""
    natural = sum(min(max([len(c)] + [len(str(r[i])) for r in rows[:200]]), 40) + 3
                  for i, c in enumerate(columns)) + 1
    if natural <= console.width or len(columns) <= 1:
        table = Table(box=box.SIMPLE_HEAD)
        for i, col in enumerate(columns):
            numeric = any(r[i] is not None for r in rows) and all(
                isinstance(r[i], (int, float, Decimal)) and not isinstance(r[i], bool) for r in rows if r[i] is not None)
            table.add_column(col, overflow="fold", min_width=min(len(col), 12),
                             justify="right" if numeric else "left")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        console.print(table)
    else:
        for i, row in enumerate(rows, 1):
            console.rule(f"record {i}", style="dim", align="left")
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", no_wrap=True)
            grid.add_column(overflow="fold")
            for col, value in zip(columns, row):
                grid.add_row(col, _cell(value))
            console.print(grid)
    shown = len(rows)
    if more:
        console.print(Text(f"(first {shown:,} rows shown; the result has more: add a LIMIT or aggregate)",
                           style="dim"))
    else:
        console.print(Text(f"({shown:,} row{'s' if shown != 1 else ''})", style="dim"))
