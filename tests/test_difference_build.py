"""Difference QA through qa-build (issue 16 wiring): dates file and date column, manifest counts, the card
section, one-line errors, --no-difference, and qa-inspect --difference."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qa_builder.tables import table_schemas

BIN = Path(sys.executable).parent
REPORTS = [  # subject, study, date, time, text
    ("p1", "s10", "20200105", "090000", "FINDINGS: Small right pleural effusion. No pneumothorax. Heart size normal."),
    ("p1", "s11", "20200301", "101500", "FINDINGS: The right pleural effusion has resolved. New left lower lobe "
                                        "consolidation. No pneumothorax."),
    ("p1", "s12", "20200302", "080000", "FINDINGS: Left lower lobe consolidation is unchanged. Small left pneumothorax. "
                                        "No effusion."),
    ("p2", "s20", "20200101", "", "FINDINGS: Cardiomegaly. Endotracheal tube in standard position."),
    ("p2", "s21", "20200101", "", "FINDINGS: Cardiomegaly. The endotracheal tube has been removed."),  # same date
    ("p3", "s30", "", "", "FINDINGS: No acute process."),                                                  # no date
    ("p3", "s31", "20210101", "", "FINDINGS: Mild pulmonary edema."),
]


def write(tmp_path: Path, with_dates_column: bool) -> tuple[Path, Path]:
    reports, dates = tmp_path / "reports.csv", tmp_path / "dates.csv"
    with reports.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["report_id", "subject_id", "study_id", "text"] + (["date"] if with_dates_column else []))
        for subject, study, date, _, text in REPORTS:
            w.writerow([study, subject, study, text] + ([date] if with_dates_column else []))
    with dates.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["subject_id", "study_id", "StudyDate", "StudyTime"])
        for subject, study, date, time, _ in REPORTS:
            if date:
                w.writerow([subject, study, date, time])
    return reports, dates


def qa_build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qa-build"), *map(str, args), "--quiet"], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("diff")
    reports, dates = write(tmp, with_dates_column=False)
    proc = qa_build(reports, tmp / "out", "--study-dates", dates, "--split-fractions", "1,0,0")
    assert proc.returncode == 0, proc.stderr
    return tmp / "out"


def test_pairs_follow_the_dates_and_answers_follow_the_reports(built):
    table = pq.read_table(built / "diff_qa.parquet")
    assert table.schema.equals(table_schemas(())["diff_qa"], check_metadata=False)
    rows = table.to_pylist()
    assert {(r["report_id"], r["prior_report_id"]) for r in rows} == {("s11", "s10"), ("s12", "s11")}
    got = {(r["report_id"], r["concept"], r["question_type"]): (r["answer"], r["source"]) for r in rows}
    assert got[("s11", "pleural_effusion", "diff_concept")] == ("resolved", "stated")
    assert got[("s11", "consolidation", "diff_concept")] == ("new", "stated")
    assert got[("s12", "consolidation", "diff_concept")] == ("unchanged", "stated")
    assert got[("s12", "pneumothorax", "diff_concept")] == ("new", "derived")   # absent before, present now
    assert ("s12", "pleural_effusion", "diff_concept") not in got               # absent both times: nothing to ask
    assert got[("s12", None, "diff_new")] == ("yes", "derived")
    assert all(r["days_between"] > 0 and r["split"] == "train" for r in rows)
    assert all(r["qa_id"].startswith(r["report_id"] + ":d") for r in rows)
    assert len({r["qa_id"] for r in rows}) == len(rows)


def test_manifest_and_card_count_what_was_written(built):
    manifest = json.loads((built / "manifest.json").read_text())
    diff = manifest["difference"]
    assert diff["studies"]["paired"] == 2
    assert diff["studies"]["same_timestamp"] == 2 and diff["studies"]["no_date"] == 1
    assert sum(sum(v.values()) for v in diff["rows_by_type_and_source"].values()) == \
        pq.read_metadata(built / "diff_qa.parquet").num_rows
    assert "diff_qa.parquet" in manifest["files"]
    assert diff["days_between"][:3] == [["<= 1", 1], ["<= 7", 0], ["<= 30", 0]]   # s11->s12 is 22 h, s10->s11 56 d
    assert diff["days_between"][3] == ["<= 90", 1]
    card = (built / "data_card.md").read_text()
    assert "Difference QA" in card and "dates.csv" in card


def test_a_date_column_in_the_reports_works_like_a_dates_file(tmp_path, built):
    reports, _ = write(tmp_path, with_dates_column=True)
    proc = qa_build(reports, tmp_path / "out", "--study-date-column", "date", "--split-fractions", "1,0,0")
    assert proc.returncode == 0, proc.stderr
    pairs = {(r["report_id"], r["prior_report_id"])
             for r in pq.read_table(tmp_path / "out" / "diff_qa.parquet").to_pylist()}
    # without times, s11 and s12 are still on different days; p2's studies still tie
    assert pairs == {("s11", "s10"), ("s12", "s11")}


def test_without_dates_or_with_no_difference_the_table_is_empty_but_present(tmp_path):
    reports, dates = write(tmp_path, with_dates_column=False)
    for extra in ([], ["--study-dates", str(dates), "--no-difference"]):
        out = tmp_path / f"out{len(extra)}"
        proc = qa_build(reports, out, *extra)
        assert proc.returncode == 0, proc.stderr
        assert pq.read_metadata(out / "diff_qa.parquet").num_rows == 0
        assert "Difference QA" not in (out / "data_card.md").read_text()


@pytest.mark.parametrize("args, fragment", [(["--study-dates", "nowhere.csv"], "nowhere.csv"),
                                            (["--study-date-column", "visit_date"], "visit_date")])
def test_bad_date_sources_are_one_line_errors(tmp_path, args, fragment):
    reports, _ = write(tmp_path, with_dates_column=False)
    proc = qa_build(reports, tmp_path / "out", *args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_inspect_shows_the_difference_table(built):
    from typer.testing import CliRunner

    from qa_builder.inspect.cli import app

    result = CliRunner().invoke(app, [str(built), "--difference", "-n", "3"])
    assert result.exit_code == 0, result.output
    assert "diff_concept" in result.output and "stated" in result.output
