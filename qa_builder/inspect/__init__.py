"""``qa-inspect OUT``: summaries, samples, ad-hoc SQL and a self-contained HTML report over a
qa-build output directory (reports / findings / labels / qa / rejects Parquet tables).

Exit codes: 0 ok; 2 for any problem with the input or the options (missing OUT or tables, unknown
filter value, bad SQL, unwritable HTML path), reported as one line without a traceback.
"""
from __future__ import annotations

from pathlib import Path

import duckdb
from rich.console import Console

from .data import Filters, InspectError, OutDir, compute_stats, fetch_samples, first_line

__all__ = ["run_inspect", "InspectError", "HTML_SAMPLE_ROWS", "SQL_ROW_LIMIT"]

HTML_SAMPLE_ROWS = 300
SQL_ROW_LIMIT = 1000


def _error(console: Console, message: str) -> int:
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True, style="bold red")
    return 2


def run_inspect(out: Path, *, concept: str | None = None, question_type: str | None = None,
                split: str | None = None, report: str | None = None, granularity: str | None = None,
                sql: str | None = None, html: Path | None = None, n: int = 10, seed: int = 0,
                console: Console | None = None, html_rows: int = HTML_SAMPLE_ROWS, difference: bool = False) -> int:
    """Prints summaries and ``n`` sample pairs (or the result of ``sql``) for the tables in ``out``;
    with ``html`` also writes the HTML report. Returns the process exit code."""
    out_console = console if console is not None else Console()
    err_console = console if console is not None else Console(stderr=True)
    flt = Filters(concept=concept, question_type=question_type, split=split, report=report,
                  granularity=granularity)
    od = None
    try:
        od = OutDir(Path(out))
        if sql is not None:
            return _run_sql(od, sql, out_console, err_console, html=html, flt=flt, n=n, seed=seed,
                            html_rows=html_rows)
        if difference:
            from .difference import render_difference
            render_difference(od, out_console, n, seed)
            return 0
        od.check_filters(flt)
        stats = compute_stats(od, flt, concept_filter=concept)
        samples = fetch_samples(od, n, seed)
        from .terminal import render
        render(out_console, str(out), stats, samples, flt, od.manifest, n)
        if html is not None:
            _write_html(od, Path(out), Path(html), stats, flt, seed, html_rows, n, samples, out_console)
        return 0
    except InspectError as exc:
        return _error(err_console, str(exc))
    except duckdb.Error as exc:
        return _error(err_console, f"{Path(out)}: {first_line(exc)}")
    except OSError as exc:
        return _error(err_console, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    finally:
        if od is not None:
            od.close()


def _write_html(od: OutDir, out: Path, html: Path, stats, flt: Filters, seed: int, html_rows: int,
                n: int, samples, console: Console) -> None:
    from .report import build_html, write_atomic
    rows = samples if n == html_rows else fetch_samples(od, html_rows, seed)
    write_atomic(html, build_html(out, stats, rows, flt, od.manifest))
    console.print(f"wrote {html}", markup=False, highlight=False, soft_wrap=True, style="dim")


def _run_sql(od: OutDir, sql: str, console: Console, err_console: Console, *, html, flt, n, seed,
             html_rows) -> int:
    from .terminal import render_sql
    try:
        result = od.con.execute(sql)
    except duckdb.Error as exc:
        return _error(err_console, f"SQL failed: {first_line(exc)}")
    if result.description is None:  # a statement without a result set
        console.print("(no result set)", style="dim")
    else:
        columns = [d[0] for d in result.description]
        try:
            rows = result.fetchmany(SQL_ROW_LIMIT + 1)
        except duckdb.Error as exc:
            return _error(err_console, f"SQL failed: {first_line(exc)}")
        more = len(rows) > SQL_ROW_LIMIT
        render_sql(console, columns, rows[:SQL_ROW_LIMIT], more)
    if html is not None:
        od.check_filters(flt)
        stats = compute_stats(od, flt, concept_filter=flt.concept)
        _write_html(od, od.path, Path(html), stats, flt, seed, html_rows, 0, [], console)
    return 0
