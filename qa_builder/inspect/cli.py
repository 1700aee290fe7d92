"""Typer entry point for ``qa-inspect``. Point the console script at ``qa_builder.inspect.cli:main``
(or call ``run_inspect`` from another typer command)."""
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Inspect a qa-build output directory: summaries, samples, SQL, HTML report.")


@app.command()
def inspect(
    out: Path = typer.Argument(..., help="qa-build output directory (reports/findings/labels/qa/rejects .parquet)"),
    concept: Optional[str] = typer.Option(None, "--concept", help="only QA pairs about this concept"),
    question_type: Optional[str] = typer.Option(None, "--question-type", help="only this question_type"),
    split: Optional[str] = typer.Option(None, "--split", help="only this split (train/validate/test)"),
    report: Optional[str] = typer.Option(None, "--report", help="only this report_id"),
    granularity: Optional[str] = typer.Option(None, "--granularity", help="coarse, middle or fine"),
    sql: Optional[str] = typer.Option(None, "--sql", help="run DuckDB SQL over views reports, findings, "
                                                          "labels, qa, rejects and print the result"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write a self-contained HTML report here"),
    n: int = typer.Option(10, "-n", "--n", min=0, help="number of sample QA pairs to print"),
    difference: bool = typer.Option(False, "--difference", help="show diff_qa.parquet (difference QA) instead"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
) -> None:
    from . import run_inspect

    code = run_inspect(out, concept=concept, question_type=question_type, split=split, report=report,
                       granularity=granularity, sql=sql, html=html, n=n, seed=seed, difference=difference)
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
