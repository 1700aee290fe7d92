"""Tests for ``qa-inspect`` (qa_builder.inspect): terminal summaries, filters, --sql, errors, and the
HTML report, including a real headless-Chromium screenshot of it."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from qa_builder.inspect import run_inspect
from qa_builder.inspect import svg
from qa_builder.inspect.data import highlight_segments, histogram_bins

# --------------------------------------------------------------------------------------------------
# Fixture OUT directory, per the README schema.
# --------------------------------------------------------------------------------------------------
SECTION_COLS = ("findings", "impression", "indication", "comparison", "history", "technique", "examination")

REPORTS = [  # report_id, subject_id, split, findings, impression
    ("r1", "p1", "train", "There is a small left pleural effusion. No pneumothorax.", "Mild cardiomegaly."),
    ("r2", "p1", "train", "Heart size is normal & mediastinum <unremarkable>. Right basilar atelectasis.", None),
    ("r3", "p2", "validate", "Possible mild pulmonary edema. No pleural effusion.", None),
    ("r4", "p3", "test", "Large right pneumothorax.", None),
    ("r5", "p4", "train", "Lungs are clear. No pleural effusion or pneumothorax.", None),
]
SPLIT = {r[0]: r[2] for r in REPORTS}
SUBJECT = {r[0]: r[1] for r in REPORTS}

# report_id, section, sentence_id, sentence, mention text, concept, certainty, laterality, chexpert, cxr14
MENTIONS = [
    ("r1", "findings", 0, "There is a small left pleural effusion.", "pleural effusion", "pleural_effusion",
     "positive", "left", "Pleural Effusion", "Effusion"),
    ("r1", "findings", 1, "No pneumothorax.", "pneumothorax", "pneumothorax", "negative", None, "Pneumothorax",
     "Pneumothorax"),
    ("r1", "impression", 2, "Mild cardiomegaly.", "cardiomegaly", "cardiomegaly", "positive", None,
     "Cardiomegaly", "Cardiomegaly"),
    ("r2", "findings", 0, "Heart size is normal & mediastinum <unremarkable>.", "Heart size is normal",
     "cardiomegaly", "negative", None, "Cardiomegaly", "Cardiomegaly"),
    ("r2", "findings", 1, "Right basilar atelectasis.", "atelectasis", "atelectasis", "positive", "right",
     "Atelectasis", "Atelectasis"),
    ("r3", "findings", 0, "Possible mild pulmonary edema.", "pulmonary edema", "edema", "uncertain", None,
     "Edema", "Edema"),
    ("r3", "findings", 1, "No pleural effusion.", "pleural effusion", "pleural_effusion", "negative", None,
     "Pleural Effusion", "Effusion"),
    ("r4", "findings", 0, "Large right pneumothorax.", "pneumothorax", "pneumothorax", "positive", "right",
     "Pneumothorax", "Pneumothorax"),
    ("r5", "findings", 1, "No pleural effusion or pneumothorax.", "pleural effusion", "pleural_effusion",
     "negative", None, "Pleural Effusion", "Effusion"),
    ("r5", "findings", 1, "No pleural effusion or pneumothorax.", "pneumothorax", "pneumothorax", "negative",
     None, "Pneumothorax", "Pneumothorax"),
]

# report_id, granularity, question_type, question, answer, answer_type, concept, region, evidence, evidence_text
QA = [
    ("r1", "coarse", "report", "Describe the findings of this chest X-ray.",
     "Small left pleural effusion. Mild cardiomegaly. No pneumothorax.", "open", None, None, [0, 1, 2], None),
    ("r1", "middle", "region", "What is seen in the left pleural space?", "A small pleural effusion.", "open",
     None, "pleura", [0], None),
    ("r1", "fine", "presence", "Is there a pleural effusion?", "yes", "closed", "pleural_effusion", None, [0], None),
    ("r1", "fine", "location", "Where is the pleural effusion?", "left", "open", "pleural_effusion", None, [0], None),
    ("r1", "fine", "severity", "How severe is the pleural effusion?", "small", "open", "pleural_effusion", None,
     [0], None),
    ("r1", "fine", "presence", "Is there a pneumothorax?", "no", "closed", "pneumothorax", None, [1], None),
    ("r1", "fine", "presence", "Is there cardiomegaly?", "yes", "closed", "cardiomegaly", None, [2], None),
    ("r2", "coarse", "report", "Describe the findings of this chest X-ray.",
     "Right basilar atelectasis. Normal heart size.", "open", None, None, [0, 1], None),
    ("r2", "fine", "presence", "Is there cardiomegaly?", "No.", "closed", "cardiomegaly", None, [0], None),
    ("r2", "fine", "presence", "Is there atelectasis?", "Yes", "closed", "atelectasis", None, [1], None),
    ("r2", "fine", "location", "Where is the atelectasis?", "right lung base", "open", "atelectasis", None, [1], None),
    ("r3", "coarse", "report", "Describe the findings of this chest X-ray.",
     "Possible mild pulmonary edema. No pleural effusion.", "open", None, None, [0, 1], None),
    ("r3", "fine", "presence", "Is there pulmonary edema?", "possibly", "closed", "edema", None, [0], None),
    ("r3", "fine", "presence", "Is there a pleural effusion?", "no", "closed", "pleural_effusion", None, [1], None),
    ("r3", "fine", "choose", "Which finding is present: edema or pneumothorax?", "edema", "closed", "edema", None,
     [0], None),
    ("r4", "coarse", "report", "Describe the findings of this chest X-ray.", "Large right pneumothorax.", "open",
     None, None, [0], None),
    ("r4", "fine", "presence", "Is there a pneumothorax?", "yes", "closed", "pneumothorax", None, [0], None),
    ("r4", "fine", "severity", "How large is the pneumothorax?", "large", "open", "pneumothorax", None, [0], None),
    ("r4", "coarse", "abnormality", "Is this chest X-ray abnormal?", "yes", "closed", None, None, [0], None),
    ("r5", "coarse", "report", "Describe the findings of this chest X-ray.", "No acute cardiopulmonary process.",
     "open", None, None, [], "Lungs are clear."),
    ("r5", "fine", "presence", "Is there a pleural effusion?", "no", "closed", "pleural_effusion", None, [0], None),
    ("r5", "fine", "presence", "Is there a pneumothorax?", "no", "closed", "pneumothorax", None, [1], None),
]

LABELS = [  # report_id, scheme, label, value
    ("r1", "chexpert", "Cardiomegaly", 1), ("r1", "chexpert", "Pleural Effusion", 1),
    ("r1", "chexpert", "Pneumothorax", 0), ("r2", "chexpert", "Atelectasis", 1),
    ("r2", "chexpert", "Cardiomegaly", 0), ("r3", "chexpert", "Edema", -1),
    ("r3", "chexpert", "Pleural Effusion", 0), ("r4", "chexpert", "Pneumothorax", 1),
    ("r5", "chexpert", "No Finding", 1), ("r5", "chexpert", "Pleural Effusion", 0),
    ("r5", "chexpert", "Pneumothorax", 0),
    ("r1", "chestxray14", "Cardiomegaly", 1), ("r1", "chestxray14", "Effusion", 1),
    ("r2", "chestxray14", "Atelectasis", 1), ("r3", "chestxray14", "Edema", -1),
    ("r4", "chestxray14", "Pneumothorax", 1),
]

REJECTS = [("input.csv:7", "r7", "empty report"), ("input.csv:9", None, "missing id"),
           ("input.csv:12", "r9", "empty report")]

MANIFEST = {"tool_version": "radqa 0.1.0", "input": "data/fixture.csv", "input_hash": "sha256:abc123",
            "row_counts": {"reports": 5, "rejects": 3, "findings": 10, "labels": 16, "qa": 22},
            "wall_time_s": 1.25}


def _str(values):
    return pa.array(values, pa.string())


def write_fixture(out: Path, *, manifest: bool = True) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    zstd = {"compression": "zstd"}
    reports = {"report_id": _str([r[0] for r in REPORTS]), "subject_id": _str([r[1] for r in REPORTS]),
               "study_id": _str([r[0][1:] for r in REPORTS])}
    for col in SECTION_COLS:
        idx = {"findings": 3, "impression": 4}.get(col)
        reports[col] = _str([r[idx] if idx else None for r in REPORTS])
    reports["source"] = _str([f"data/fixture.csv:{i + 2}" for i in range(len(REPORTS))])
    pq.write_table(pa.table(reports), out / "reports.parquet", **zstd)

    rows, per_report = [], {}
    for rid, section, sid, sentence, text, concept, certainty, lat, chexpert, cxr14 in MENTIONS:
        mid = per_report.get(rid, 0)
        per_report[rid] = mid + 1
        start = sentence.lower().find(text.lower())
        assert start >= 0, (sentence, text)
        rows.append((rid, mid, section, sid, sentence, start, start + len(text), text, concept, certainty, lat,
                     chexpert, cxr14))
    cols = list(zip(*rows))
    findings = pa.table({
        "report_id": _str(cols[0]), "mention_id": pa.array(cols[1], pa.int32()), "section": _str(cols[2]),
        "sentence_id": pa.array(cols[3], pa.int32()), "sentence": _str(cols[4]),
        "start": pa.array(cols[5], pa.int32()), "end": pa.array(cols[6], pa.int32()), "text": _str(cols[7]),
        "concept": _str(cols[8]), "certainty": _str(cols[9]), "laterality": _str(cols[10]),
        "location": _str([None] * len(rows)), "severity": _str([None] * len(rows)),
        "descriptor": _str([None] * len(rows)), "size": _str([None] * len(rows)),
        "change": _str([None] * len(rows)), "temporality": _str(["current"] * len(rows)),
        "chexpert": _str(cols[11]), "chestxray14": _str(cols[12]),
    })
    pq.write_table(findings, out / "findings.parquet", **zstd)

    lab = list(zip(*LABELS))
    pq.write_table(pa.table({"report_id": _str(lab[0]), "scheme": _str(lab[1]), "label": _str(lab[2]),
                             "value": pa.array(lab[3], pa.int8())}), out / "labels.parquet", **zstd)

    counters, qa_ids = {}, []
    for row in QA:
        k = counters.get(row[0], 0)
        counters[row[0]] = k + 1
        qa_ids.append(f"{row[0]}:{k}")
    q = list(zip(*QA))
    qa = pa.table({
        "qa_id": _str(qa_ids), "report_id": _str(q[0]), "subject_id": _str([SUBJECT[r] for r in q[0]]),
        "granularity": _str(q[1]), "question_type": _str(q[2]), "question": _str(q[3]), "answer": _str(q[4]),
        "answer_type": _str(q[5]), "concept": _str(q[6]), "region": _str(q[7]),
        "evidence": pa.array(q[8], pa.list_(pa.int32())), "evidence_text": _str(q[9]),
        "split": _str([SPLIT[r] for r in q[0]]),
    })
    pq.write_table(qa, out / "qa.parquet", **zstd)
    rj = list(zip(*REJECTS))
    pq.write_table(pa.table({"source": _str(rj[0]), "report_id": _str(rj[1]), "reason": _str(rj[2])}),
                   out / "rejects.parquet", **zstd)
    if manifest:
        (out / "manifest.json").write_text(json.dumps(MANIFEST, indent=2))
    return out


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("inspect") / "out")


def run(out: Path, width: int = 160, **kwargs) -> tuple[int, str]:
    console = Console(record=True, width=width, force_terminal=False, color_system=None)
    code = run_inspect(out, console=console, **kwargs)
    return code, console.export_text()


def row_of(text: str, first_cell: str) -> list[str]:
    """Cells of the first table row (in rendered text) whose first cell is ``first_cell``."""
    lines = [line.split() for line in text.splitlines()]
    for cells in lines:  # prefer rows of a table printed on its own
        if cells and cells[0] == first_cell:
            return cells
    for cells in lines:  # else a table printed beside another one (rich Columns)
        if first_cell in cells:
            return cells[cells.index(first_cell):]
    raise AssertionError(f"no row starting with {first_cell!r} in:\n{text}")


QA_ID = re.compile(r"\b(r\d:\d+)\b")


def sample_ids(text: str) -> list[str]:
    return QA_ID.findall(text.split("Samples (", 1)[1]) if "Samples (" in text else []


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------
def test_highlight_segments_merges_and_clamps():
    s = "No pleural effusion or pneumothorax."
    assert highlight_segments(s, [(3, 19), (23, 35)]) == [
        ("No ", False), ("pleural effusion", True), (" or ", False), ("pneumothorax", True), (".", False)]
    # overlapping / out-of-range / empty spans
    assert highlight_segments("abcdef", [(1, 3), (2, 4), (5, 99), (4, 4), (-3, 0)]) == [
        ("a", False), ("bcd", True), ("e", False), ("f", True)]
    assert highlight_segments("abc", []) == [("abc", False)]


def test_histogram_bins():
    assert histogram_bins([]) == []
    assert histogram_bins([(1, 5), (3, 2)]) == [("0", 0), ("1", 5), ("2", 0), ("3", 2)]
    wide = histogram_bins([(v, 10) for v in range(0, 100)] + [(5000, 1)])  # tail past the 99th pct: one bin
    assert len(wide) == 26 and wide[0] == ("0–3", 40) and wide[-1] == ("≥100", 1)
    assert sum(c for _, c in wide) == 1001


# --------------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------------
def test_terminal_summary_counts(out_dir):
    code, text = run(out_dir, n=10)
    assert code == 0, text
    assert row_of(text, "reports.parquet")[:3] == ["reports.parquet", "5", "5"]
    assert row_of(text, "findings.parquet")[:2] == ["findings.parquet", "10"]
    assert row_of(text, "labels.parquet")[:2] == ["labels.parquet", "16"]
    assert row_of(text, "qa.parquet")[:3] == ["qa.parquet", "22", "22"]
    assert row_of(text, "rejects.parquet")[:2] == ["rejects.parquet", "3"]
    assert "3 of 8 inputs" in text
    assert row_of(text, "empty")[:3] == ["empty", "report", "2"]
    assert "QA pairs: 22" in text
    assert row_of(text, "coarse")[:3] == ["coarse", "6", "27.3%"]
    assert row_of(text, "middle")[:2] == ["middle", "1"]
    assert row_of(text, "fine")[:2] == ["fine", "15"]
    assert row_of(text, "train")[:5] == ["train", "14", "63.6%", "3", "2"]   # pairs, %, reports, subjects
    assert row_of(text, "validate")[:2] == ["validate", "4"]
    assert row_of(text, "presence")[:2] == ["presence", "10"]
    assert row_of(text, "report")[:2] == ["report", "5"]
    # concepts: QA pairs, mentions, positive, negative, uncertain ... then the yes/no table on the same line
    assert row_of(text, "pleural_effusion")[:11] == ["pleural_effusion", "5", "3", "1", "2", "0",
                                                     "pleural_effusion", "1", "2", "0", "33.3%"]
    assert row_of(text, "edema")[:6] == ["edema", "2", "1", "0", "0", "1"]
    assert row_of(text, "Cardiomegaly")[:5] == ["Cardiomegaly", "1", "0", "0", "20.0%"]  # chestxray14 first
    assert "Labels: chexpert" in text and "Labels: chestxray14" in text
    assert "prevalence = positive / 5 reports" in text
    assert "tool_version: radqa 0.1.0" in text and "wall_time_s: 1.25" in text
    assert "Samples (10 of 22)" in text
    assert len(sample_ids(text)) == 10
    assert "mismatch" not in text


def test_samples_deterministic_and_sized(out_dir):
    _, a = run(out_dir, n=4, seed=1)
    _, b = run(out_dir, n=4, seed=1)
    assert sample_ids(a) == sample_ids(b) and len(sample_ids(a)) == 4
    _, none = run(out_dir, n=0)
    assert "Samples" not in none
    _, all_ = run(out_dir, n=100)
    ids = sample_ids(all_)
    assert len(ids) == 22 == len(set(ids))
    # evidence: sentences from findings; the r5 coarse pair has no mentions -> evidence_text fallback
    block = all_.split("r5:0", 1)[1].split("╰", 1)[0]
    assert "Lungs are clear." in block


def test_terminal_evidence_span_highlighted(out_dir):
    console = Console(record=True, width=120, force_terminal=True, color_system="truecolor")
    assert run_inspect(out_dir, console=console, report="r5", n=5) == 0
    ansi = console.export_text(styles=True)
    # bold black on yellow on the pair's own evidence mention only: r5:1 -> effusion, r5:2 -> pneumothorax
    assert "No \x1b[1;30;43mpleural effusion\x1b[0m or pneumothorax." in ansi
    assert "No pleural effusion or \x1b[1;30;43mpneumothorax\x1b[0m." in ansi
    assert "\x1b[1;30;43mLungs" not in ansi  # evidence_text fallback is not highlighted


@pytest.mark.parametrize("kwargs, expected", [
    ({"concept": "pneumothorax"}, {"r1:5", "r4:1", "r4:2", "r5:2"}),
    ({"split": "train", "question_type": "presence"}, {"r1:2", "r1:5", "r1:6", "r2:1", "r2:2", "r5:1", "r5:2"}),
    ({"granularity": "coarse"}, {"r1:0", "r2:0", "r3:0", "r4:0", "r4:3", "r5:0"}),
    ({"report": "r3"}, {"r3:0", "r3:1", "r3:2", "r3:3"}),
    ({"granularity": "middle", "split": "test"}, set()),
])
def test_filters_narrow(out_dir, kwargs, expected):
    code, text = run(out_dir, n=100, **kwargs)
    assert code == 0, text
    assert set(sample_ids(text)) == expected
    assert f"{len(expected)} of 22 QA pairs match" in text
    if not expected:
        assert "no QA pairs match the filters" in text
    if "report" in kwargs:  # report-level filters scope the label table too
        assert "prevalence = positive / 1 reports" in text
        assert row_of(text, "Edema")[:5] == ["Edema", "0", "0", "1", "0.0%"]
    if "concept" in kwargs:
        assert "pleural_effusion" not in text.split("Samples (")[0]


@pytest.mark.parametrize("kwargs, needles", [
    ({"concept": "pneumothoraxx"}, ["unknown --concept 'pneumothoraxx'", "valid values:", "atelectasis",
                                    "pleural_effusion", "did you mean 'pneumothorax'"]),
    ({"split": "dev"}, ["unknown --split 'dev'", "test, train, validate"]),
    ({"question_type": "Presence"}, ["unknown --question-type 'Presence'", "presence"]),
    ({"granularity": "finest"}, ["unknown --granularity 'finest'", "coarse, fine, middle"]),
    ({"report": "r42"}, ["unknown --report 'r42'", "5 report ids", "r1, r2"]),
])
def test_unknown_filter_value(out_dir, kwargs, needles):
    code, text = run(out_dir, width=80, **kwargs)
    assert code == 2
    assert len(text.strip().splitlines()) == 1, text
    for needle in needles:
        assert needle in text


def test_valid_but_absent_canonical_value(out_dir):
    code, text = run(out_dir, question_type="size")  # documented type, none in this OUT: not an error
    assert code == 0 and "0 of 22 QA pairs match" in text


# --------------------------------------------------------------------------------------------------
# --sql
# --------------------------------------------------------------------------------------------------
def test_sql(out_dir):
    code, text = run(out_dir, sql="SELECT split, count(*) AS pairs FROM qa GROUP BY split ORDER BY pairs DESC")
    assert code == 0, text
    assert row_of(text, "train")[:2] == ["train", "14"] and row_of(text, "test")[:2] == ["test", "4"]
    assert "(3 rows)" in text and "Samples" not in text
    code, text = run(out_dir, sql=(
        "SELECT q.qa_id, f.text FROM qa q, unnest(q.evidence) AS e(mid) "
        "JOIN findings f ON f.report_id = q.report_id AND f.mention_id = e.mid "
        "WHERE q.qa_id = 'r5:2'"))
    assert code == 0, text
    assert row_of(text, "r5:2")[:2] == ["r5:2", "pneumothorax"]
    code, text = run(out_dir, sql="SELECT (SELECT count(*) FROM reports) + (SELECT count(*) FROM rejects) AS inputs, "
                                  "(SELECT count(*) FROM labels WHERE scheme = 'chexpert') AS chexpert, NULL AS nothing")
    assert code == 0 and row_of(text, "8")[:3] == ["8", "11", "null"], text


def test_sql_wide_results_expand_and_long_results_truncate(out_dir):
    code, text = run(out_dir, width=80, sql="SELECT * FROM findings ORDER BY report_id, mention_id LIMIT 2")
    assert code == 0 and "record 1" in text and "record 2" in text, text
    assert row_of(text, "sentence") == "sentence There is a small left pleural effusion.".split()
    assert row_of(text, "laterality") == ["laterality", "left"]
    code, text = run(out_dir, sql="SELECT range AS i FROM range(1500)")
    assert code == 0 and "first 1,000 rows shown" in text and row_of(text, "999") == ["999"]
    assert "1000" not in text.split()


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT * FROM no_such_table", "SELECT nope FROM qa",
                                 "SELECT 1;\nSELECT 'a' + 1"])
def test_bad_sql_is_one_line(out_dir, sql):
    code, text = run(out_dir, width=80, sql=sql)
    assert code == 2
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SQL failed:"), text
    assert "Traceback" not in text


# --------------------------------------------------------------------------------------------------
# Missing input
# --------------------------------------------------------------------------------------------------
def test_missing_out_dir(tmp_path):
    code, text = run(tmp_path / "nope")
    assert code == 2 and text.strip() == f"error: {tmp_path / 'nope'}: no such directory"
    (tmp_path / "file").write_text("x")
    code, text = run(tmp_path / "file")
    assert code == 2 and "not a directory" in text


def test_missing_and_broken_tables(tmp_path):
    out = write_fixture(tmp_path / "out", manifest=False)
    (out / "labels.parquet").unlink()
    code, text = run(out, width=80)
    assert code == 2 and len(text.strip().splitlines()) == 1 and "missing labels.parquet" in text
    out2 = write_fixture(tmp_path / "out2", manifest=False)
    (out2 / "qa.parquet").write_bytes(b"not parquet at all")
    code, text = run(out2, width=80)
    assert code == 2 and len(text.strip().splitlines()) == 1 and "qa.parquet" in text, text
    out3 = write_fixture(tmp_path / "out3", manifest=False)
    pq.write_table(pa.table({"report_id": _str(["r1"])}), out3 / "qa.parquet")
    code, text = run(out3, width=200)
    assert code == 2 and "qa.parquet: missing column(s) qa_id, granularity" in text


def test_rejects_optional_and_no_manifest(tmp_path):
    out = write_fixture(tmp_path / "out", manifest=False)
    (out / "rejects.parquet").unlink()
    code, text = run(out, n=2)
    assert code == 0, text
    assert row_of(text, "rejects.parquet")[:2] == ["rejects.parquet", "absent"]
    code, text = run(out, sql="SELECT count(*) AS n FROM rejects")
    assert code == 0 and row_of(text, "n")[:1] == ["n"] and "(1 row)" in text


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def test_typer_cli(out_dir, tmp_path):
    from typer.testing import CliRunner

    from qa_builder.inspect.cli import app

    runner = CliRunner()
    result = runner.invoke(app, [str(out_dir), "--concept", "edema", "--question-type", "choose", "-n", "5"])
    assert result.exit_code == 0, result.output
    assert "1 of 22 QA pairs match" in result.output and "r3:3" in result.output
    result = runner.invoke(app, [str(tmp_path / "missing")])
    assert result.exit_code == 2
    html = tmp_path / "cli.html"
    result = runner.invoke(app, [str(out_dir), "--sql", "SELECT 42 AS answer", "--html", str(html)])
    assert result.exit_code == 0 and "42" in result.output and html.is_file()


def test_console_script_missing_dir_has_no_traceback(tmp_path):
    import sys

    proc = subprocess.run([sys.executable, "-m", "qa_builder.inspect.cli", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing'}: no such directory"]


# --------------------------------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------------------------------
class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@pytest.fixture(scope="module")
def html_report(out_dir, tmp_path_factory) -> Path:
    html = tmp_path_factory.mktemp("html") / "sub" / "report.html"
    code, text = run(out_dir, html=html, n=3)
    assert code == 0, text
    assert f"wrote {html}" in text
    return html


def test_html_self_contained_and_escaped(html_report):
    page = html_report.read_text(encoding="utf-8")
    assert [p.name for p in html_report.parent.iterdir()] == ["report.html"]  # atomic: no temp leftovers
    parser = _Collector()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    for tag, attrs in parser.tags:
        for name in ("src", "href", "xlink:href", "action", "data", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "file:")), (tag, name, value)
        assert not (tag == "script" and "src" in attrs)
        assert tag not in ("link", "iframe", "img", "object", "embed")
    assert "http://" not in page and "https://" not in page and "url(" not in page and "@import" not in page
    assert tags.count("svg") >= 6 and tags.count("script") == 1 and 'id="sample-filter"' in page
    # samples: all 22 rows (fewer than the cap), evidence spans in <mark>
    body = page.split('id="samples"', 1)[1]
    assert body.count("<tr>") == 22 + 1  # + header row
    assert "<mark>pleural effusion</mark>" in page and "<mark>pneumothorax</mark>" in page
    assert "<mark>Heart size is normal</mark> &amp; mediastinum &lt;unremarkable&gt;." in page
    assert "<unremarkable>" not in page
    # header / manifest
    assert "radqa 0.1.0" in page and "data/fixture.csv" in page and "1.25" in page
    for title in ("Question types", "Concepts", "yes / no balance", "Answer length", "QA pairs per split"):
        assert title in page
    for color in (svg.BLUE, svg.YES, svg.NO, svg.PINK, svg.TEAL, *svg.SPLIT_COLORS.values()):
        assert f'fill="{color}"' in page


def test_html_caps_sample_rows_and_filters(out_dir, tmp_path):
    html = tmp_path / "r.html"
    code, _ = run(out_dir, html=html, concept="pleural_effusion", html_rows=3, n=0)
    assert code == 0
    page = html.read_text(encoding="utf-8")
    assert page.split('id="samples"', 1)[1].count("<tr>") == 3 + 1
    assert "filters:" in page and "concept = pleural_effusion" in page
    assert "sampled from 5 matching pairs" in page


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _find_chromium()


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI: .ci/install_chromium.sh)")
def test_html_renders_in_headless_chromium(html_report, tmp_path):
    from PIL import Image

    png = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000",
           html_report.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png.is_file(), f"chromium rc={proc.returncode}\n{proc.stderr[-2000:]}"
    with Image.open(png) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB")
    counts: dict[tuple[int, int, int], int] = {}
    for pixel, n in ((c, n) for n, c in rgb.getcolors(maxcolors=1 << 24)):
        counts[pixel] = n
    assert len(counts) > 200, "page looks blank"
    assert counts.get((255, 255, 255), 0) < 0.9 * 1280 * 2000
    # every chart colour must cover a solid area: the SVG bars really rendered
    for name, color, minimum in [("question types / concepts", svg.BLUE, 5000), ("yes", svg.YES, 2000),
                                 ("no", svg.NO, 2000), ("answer length", svg.PINK, 2000),
                                 ("granularity", svg.TEAL, 2000), ("validate split", svg.SPLIT_COLORS["validate"], 1500),
                                 ("test split", svg.SPLIT_COLORS["test"], 1500), ("<mark>", "#ffe066", 300)]:
        got = counts.get(_rgb(color), 0)
        assert got >= minimum, f"{name} colour {color}: {got} px < {minimum}"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI: .ci/install_chromium.sh)")
def test_html_filter_script_runs_in_headless_chromium(html_report, tmp_path):
    """The inline filter script works: report.html#q=TEXT pre-fills the box and hides other rows."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-profile-', dir=tmp_path)}", "--dump-dom",
           html_report.resolve().as_uri() + "#q=pneumothorax"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    dom = proc.stdout
    assert 'id="sample-count">9<' in dom, proc.stderr[-2000:]
    body = dom.split('id="samples"', 1)[1]
    assert body.count('style="display: none;"') == 22 - 9


def test_html_is_deterministic(out_dir, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert run(out_dir, html=a, n=0)[0] == 0 and run(out_dir, html=b, n=0)[0] == 0
    assert a.read_bytes() == b.read_bytes()
