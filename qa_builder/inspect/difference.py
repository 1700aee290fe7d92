"""``qa-inspect OUT --difference``: diff_qa.parquet at a glance (pairs per type and source, days
between the two studies, a seeded sample of pairs)."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from .data import OutDir

DAY_BINS = ((1, "<= 1"), (7, "<= 7"), (30, "<= 30"), (90, "<= 90"), (180, "<= 180"), (365, "<= 365"))


def render_difference(od: OutDir, console: Console, n: int, seed: int) -> None:
    total = od.scalar("SELECT count(*) FROM diff_qa")
    if not total:
        console.print("diff_qa: no difference pairs (no study dates, or no patient with two studies; see "
                      "manifest.json 'difference')")
        return
    by = Table(title=f"diff_qa: {total:,} pairs", box=box.SIMPLE)
    for c in ("question type", "stated", "derived", "mixed", "pairs"):
        by.add_column(c, justify="left" if c == "question type" else "right")
    for t, stated, derived, mixed, pairs in od.rows(
            "SELECT question_type, count(*) FILTER (WHERE source = 'stated'), count(*) FILTER (WHERE source = 'derived'), "
            "count(*) FILTER (WHERE source = 'mixed'), count(*) FROM diff_qa GROUP BY 1 ORDER BY 1"):
        by.add_row(t, f"{stated:,}", f"{derived:,}", f"{mixed:,}", f"{pairs:,}")
    console.print(by)
    cases = " ".join(f"WHEN days_between <= {limit} THEN '{name}'" for limit, name in DAY_BINS)
    days = Table(title="days between current and prior study (per study pair)", box=box.SIMPLE)
    days.add_column("days")
    days.add_column("pairs of studies", justify="right")
    for name, count, _ in od.rows(
            f"SELECT CASE {cases} ELSE '> 365' END AS bin, count(DISTINCT report_id), min(days_between) "
            f"FROM diff_qa GROUP BY 1 ORDER BY 3"):
        days.add_row(name, f"{count:,}")
    console.print(days)
    sample = Table(title=f"{n} sample pairs (seed {seed})", box=box.SIMPLE, show_lines=False)
    for c in ("report", "prior", "days", "question", "answer", "source"):
        sample.add_column(c, overflow="fold")
    for row in od.rows(
            "SELECT report_id, prior_report_id, round(days_between, 1), question, answer, source FROM diff_qa "
            "ORDER BY hash(qa_id || ?) LIMIT ?", [str(seed), n]):
        sample.add_row(*(str(v) for v in row))
    console.print(sample)
