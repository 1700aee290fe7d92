"""Console scripts: `qa-build`, `qa-eval`, `qa-inspect`, `qa-review`.

Errors a user can fix (missing file, unreadable input, bad option) print one line and exit non-zero;
rows that cannot be parsed go to rejects.parquet and do not fail the run.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from qa_builder.lexicon import LexiconError

build_app = typer.Typer(add_completion=False, help="Parse radiology reports into findings, labels and QA tables.")
eval_app = typer.Typer(add_completion=False, help="Score a qa-build output against a 14-label gold file and/or a "
                                                  "clinician review sheet.")
review_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Review QA answers: sample pairs into a sheet for a clinician.")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class _BlockPandasImport:
    """Meta-path finder that makes `import pandas` fail (sys.modules["pandas"] = None is not enough:
    pyarrow's compiled imports take the None from sys.modules as the module)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas import skipped while qa-build loads pyarrow")
        return None


def _load_pyarrow_without_pandas() -> None:
    """Load the pyarrow parts qa-build uses without pandas (~0.25 s of every run, before the fork).

    pyarrow imports pandas only to recognise pandas inputs: on the first `pa.array()` call and when
    pyarrow.acero (Table.group_by) is first imported. qa-build passes lists and Arrow data. With the
    import blocked for those two steps, pyarrow notes "no pandas" for that check; anything that really
    needs pandas later (`to_pandas`, our own `import pandas`) imports it as usual: pyarrow retries
    then, and the block is lifted at once.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    sys.meta_path.insert(0, _BlockPandasImport)
    try:
        pa.array([], type=pa.int8())
        import pyarrow.acero  # noqa: F401  (Table.group_by imports it on first use)
    finally:
        sys.meta_path.remove(_BlockPandasImport)


@build_app.command()
def build(
    reports: Path = typer.Argument(..., help="CSV file, MIMIC-CXR files/ tree, Open-i XML folder or NLMCXR_reports.tgz"),
    out: Path = typer.Argument(..., help="output folder (created; locked while written; all tables switch at once)"),
    fmt: Optional[str] = typer.Option(None, "--format", help="force the input format: csv, mimic or openi"),
    id_column: Optional[str] = typer.Option(None, help="CSV id column (default: report_id, study_id, study, uid or id)"),
    workers: int = typer.Option(0, help="worker processes (0 = one per core)"),
    batch_size: int = typer.Option(512, help="reports per worker task; fixes the Parquet row groups"),
    granularities: str = typer.Option("coarse,middle,fine", help="QA granularities to emit"),
    question_types: Optional[str] = typer.Option(None, help="comma-separated question types (default: all)"),
    max_pairs: Optional[int] = typer.Option(None, help="at most this many QA pairs per report"),
    balance_yes_no: bool = typer.Option(False, help="drop surplus yes/no pairs per concept (never invents)"),
    uncertain_policy: str = typer.Option("hedge", help="hedged findings: 'hedge' (hedged answer) or 'skip'"),
    scheme: str = typer.Option("all", help="concepts with fine QA: all, chexpert or chestxray14"),
    split_file: Optional[Path] = typer.Option(None, help="MIMIC-CXR split CSV (mimic-cxr-2.0.0-split.csv) to honour"),
    seed: int = typer.Option(0, help="seed for paraphrase choice and splits"),
    placeholders: str = typer.Option("token", help="de-identification placeholders (XXXX, ___) in open answers: "
                                     "'token' (replaced by --placeholder-token) or 'drop' (their clauses left out)"),
    placeholder_token: str = typer.Option("___", help="what a run of placeholders becomes with --placeholders token"),
    difference: bool = typer.Option(True, help="difference QA against each study's prior (diff_qa.parquet)"),
    study_dates: Optional[Path] = typer.Option(None, help="CSV (.gz) with study_id, StudyDate[, StudyTime] for difference "
                                              "QA (default for a MIMIC files/ tree: mimic-cxr-2.0.0-metadata.csv beside it)"),
    study_date_column: Optional[str] = typer.Option(None, help="CSV input column with each study's date (difference QA)"),
    study_time_column: Optional[str] = typer.Option(None, help="CSV input column with each study's time"),
    max_prior_days: float = typer.Option(365.0, help="a prior older than this many days is no prior"),
    split_fractions: str = typer.Option("0.8,0.1,0.1", help="train,validate,test fractions of hashed patient splits"),
    balance_ratio: float = typer.Option(1.0, help="with --balance-yes-no: keep majority <= ratio x minority"),
    language: str = typer.Option("en", help="question template language (qa/templates/<language>.yaml) or a YAML path"),
    templates: list[Path] = typer.Option([], help="extra template YAML merged on top (repeatable)"),
    concepts: Optional[Path] = typer.Option(None, help="alternative concepts.yaml (display names, regions)"),
    source: Optional[str] = typer.Option(None, help="data-card preset for the corpus (see data_cards/sources.yaml)"),
    probable_as: str = typer.Option("positive", help="certainty of lean-present hedges ('likely X'): positive or uncertain"),
    gold: Optional[Path] = typer.Option(None, help="14-label gold CSV: adds measured accuracy to the data card"),
    gold_reports: Optional[Path] = typer.Option(None, help="reports CSV with MeSH codes for --gold (Hernia, laterality)"),
    sentence_cache: int = typer.Option(100_000, help="sentences memoised per worker (0 = parse every sentence)"),
    overrides: Optional[Path] = typer.Option(None, help="review sheet: drop its DROP/trivial pairs, set its corrected "
                                                        "answers, measure the build against it (manifest, data card)"),
    quiet: bool = typer.Option(False, help="no progress line"),
) -> None:
    from qa_builder.mentions import ParserConfig
    from qa_builder.pipeline import BuildConfig
    from qa_builder.pipeline import build as run_build
    from qa_builder.qa.generate import QAConfig
    from qa_builder.reports import InputError
    from qa_builder.tables import OutputError

    _load_pyarrow_without_pandas()
    if fmt not in (None, "csv", "mimic", "openi"):
        _fail(f"--format must be csv, mimic or openi, not {fmt!r}")
    if probable_as not in ("positive", "uncertain"):
        _fail("--probable-as must be positive or uncertain")
    if split_file is not None and not split_file.is_file():
        _fail(f"{split_file}: split file not found")
    if study_dates is not None and not study_dates.is_file():
        _fail(f"{study_dates}: study dates file not found")
    try:
        qa = QAConfig(granularities=granularities, question_types=question_types, max_pairs_per_report=max_pairs,
                      balance_yes_no=balance_yes_no, uncertain_policy=uncertain_policy, scheme=scheme,
                      seed=seed, split_file=str(split_file) if split_file else None,
                      split_fractions=split_fractions, balance_ratio=balance_ratio, language=language,
                      extra_templates=tuple(str(t) for t in templates),
                      concepts_file=str(concepts) if concepts else None, placeholders=placeholders,
                      placeholder_token=placeholder_token, difference=difference,
                      study_dates=str(study_dates) if study_dates else None, study_date_column=study_date_column,
                      study_time_column=study_time_column, max_prior_days=max_prior_days)
        config = BuildConfig(workers=workers, batch_size=max(1, batch_size), parser=ParserConfig(probable_as=probable_as, cache_size=max(0, sentence_cache)),
                             qa=qa, progress=not quiet, overrides=str(overrides) if overrides else None)
        finish = None
        if gold is not None:  # measured on the staged tables, so accuracy.json switches in with them
            def finish(folder: Path, manifest: dict) -> None:
                _write_accuracy(folder, gold, gold_reports, manifest, qa, source, shown=out)
        manifest = run_build(reports, out, config, fmt=fmt, id_column=id_column, source=source, finish=finish)
    except (InputError, LexiconError, ValueError, OutputError) as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except OSError as exc:  # reading the input failed in a way the readers do not turn into rejects
        _fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
              else (str(exc).splitlines() or [type(exc).__name__])[0])
    except KeyboardInterrupt:
        _fail("interrupted; OUT left unchanged", 130)
    for note in manifest["run"].get("repaired", []):
        typer.echo(f"qa-build: {note}", err=True)
    rows = manifest["rows"]
    typer.echo(
        f"{rows['reports']:,} reports, {rows['rejects']:,} rejected, {rows['findings']:,} mentions, "
        f"{rows['qa']:,} QA pairs -> {out} ({manifest['run']['wall_seconds']:.1f} s)"
    )
    if rows["reports"] == 0:
        _fail(f"no usable report in {reports}; see {out / 'rejects.parquet'}", 1)
    # Everything is written. Freezing the heap spares the interpreter's last garbage collection a
    # walk over the parser's long-lived objects (~0.15 s of every run); exit frees the memory anyway.
    gc.freeze()


def _write_accuracy(out: Path, gold: Path, gold_reports: Optional[Path], manifest: dict, qa, source,
                    shown: Optional[Path] = None) -> None:
    """accuracy.json and the data card with it, in `out` (the build's staged tables; errors name `shown`)."""
    from qa_builder.evaluate import EvalError, evaluate
    from qa_builder.pipeline import write_card

    try:
        result = evaluate(out, gold, gold_reports)
    except EvalError as exc:
        _fail(str(exc).replace(str(out), str(shown)) if shown is not None else str(exc))
    (out / "accuracy.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_card(out, source or manifest["format"], Path(manifest["input"]), qa, manifest["rows"], accuracy=result,
               answer_accuracy=manifest.get("overrides"), difference=manifest.get("difference"))


@eval_app.command()
def evaluate_cmd(
    out: Path = typer.Argument(..., help="a qa-build output folder"),
    gold: Optional[Path] = typer.Option(None, help="gold CSV: filename (CXR<uid>) + 14 label columns + normal"),
    reports: Optional[Path] = typer.Option(None, help="the reports CSV (MeSH column: Hernia and laterality)"),
    review: Optional[Path] = typer.Option(None, help="review sheet (verdicts, corrected answers): answer accuracy"),
    as_json: bool = typer.Option(False, "--json", help="print the full result as JSON"),
) -> None:
    from qa_builder.evaluate import EvalError, evaluate, format_table
    from qa_builder.review.score import evaluate_review
    from qa_builder.review.score import format_table as format_review
    from qa_builder.review.sheet import ReviewError

    if gold is None and review is None:
        _fail("give --gold FILE, --review SHEET or both")
    results: dict = {}
    try:
        if gold is not None:
            results["gold"] = evaluate(out, gold, reports)
        if review is not None:
            results["review"] = evaluate_review(out, review)
    except (EvalError, ReviewError) as exc:
        _fail(str(exc))
    if as_json:  # one result alone keeps its own shape (--gold's JSON is unchanged)
        typer.echo(json.dumps(results if len(results) > 1 else next(iter(results.values())), indent=2, sort_keys=True))
        return
    text = []
    if "gold" in results:
        text.append(format_table(results["gold"]))
    if "review" in results:
        text.append(format_review(results["review"]))
    typer.echo("\n\n".join(text))


@review_app.callback()
def review_callback() -> None:
    """Review QA answers: `qa-review sample` writes a sheet; `qa-eval --review` scores a build against the
    filled sheet; `qa-build --overrides` applies it."""


@review_app.command("sample")
def review_sample(
    out: Path = typer.Argument(..., help="a qa-build output folder"),
    n: int = typer.Option(100, "--n", help="pairs to sample"),
    seed: int = typer.Option(0, help="seed of the choice within each question type"),
    sheet: Path = typer.Option(..., "--out", help="the review sheet to write (CSV)"),
    html: Optional[Path] = typer.Option(None, help="also write review cards with the report text (one HTML file)"),
    types: Optional[str] = typer.Option(None, help="comma-separated question types (default: fine types and region)"),
    exclude: list[Path] = typer.Option([], help="earlier sheet whose pairs are not sampled again (repeatable)"),
) -> None:
    from qa_builder.review.cards import write_html
    from qa_builder.review.sample import sample
    from qa_builder.review.sheet import ReviewError, write_sheet

    if n < 1:
        _fail("--n must be at least 1")
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    try:
        rows, counts, available = sample(out, n, seed, wanted, exclude)
        write_sheet(rows, sheet)
        if html is not None:
            write_html(rows, out, html, f"qa-review: {sheet.name} ({out}, seed {seed})")
    except ReviewError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{exc.filename}: cannot write ({exc.strerror})")
    per_type = ", ".join(f"{t} {k}" for t, k in counts.items())
    typer.echo(f"{len(rows)} pairs sampled of {sum(available.values()):,} candidates ({per_type}) -> {sheet}"
               + (f", {html}" if html is not None else ""))


@review_app.command("diff")
def review_diff(
    old: Path = typer.Argument(..., help="a qa-build output folder (before a rule change)"),
    new: Path = typer.Argument(..., help="a qa-build output folder of the same reports (after)"),
    n: int = typer.Option(10, "--n", help="examples of each kind of change"),
    seed: int = typer.Option(0, help="seed of the example choice"),
    question_type: Optional[str] = typer.Option(None, "--type", help="only this question type"),
    sentences: int = typer.Option(20, help="changed sentences to print"),
) -> None:
    """What changed between two builds: pairs by review key, mentions by sentence."""
    from qa_builder.review.diff import diff_builds, format_diff
    from qa_builder.review.sheet import ReviewError

    try:
        typer.echo(format_diff(diff_builds(old, new, n, seed, question_type), sentences))
    except ReviewError as exc:
        _fail(str(exc))


def build_main() -> None:
    build_app(prog_name="qa-build")


def eval_main() -> None:
    eval_app(prog_name="qa-eval")


def review_main() -> None:
    review_app(prog_name="qa-review")


def inspect_main() -> None:
    from qa_builder.inspect.cli import main

    main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(build_main())
