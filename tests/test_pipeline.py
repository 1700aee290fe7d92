"""End-to-end `qa-build`: tables, determinism, rejects, the CLI's error behaviour."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fresh_python import run_fresh
from qa_builder.pipeline import BuildConfig, build

BIN = Path(sys.executable).parent
REPORTS = [
    ("r1", "p1", "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Small left effusion."),
    ("r2", "p2", "FINDINGS: Heart size is normal. Lungs are clear.\nIMPRESSION: No acute cardiopulmonary process."),
    ("r3", "p2", "INDICATION: r/o pneumonia\nFINDINGS: Possible right lower lobe pneumonia.\nIMPRESSION: Pneumonia cannot be excluded."),
    ("r4", "p3", "IMPRESSION:\n1. Stable mild cardiomegaly.\n2. Endotracheal tube 4 cm above the carina."),
    ("r5", "p4", ""),
]


def write_csv(path: Path, rows=REPORTS, extra: bool = True) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["report_id", "subject_id", "text", "MeSH"] if extra else ["report_id", "subject_id", "text"])
        for r in rows:
            w.writerow([*r, "Cardiomegaly"] if extra else list(r))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("build")
    out = tmp / "out"
    build(write_csv(tmp / "in.csv"), out, BuildConfig(workers=1, progress=False))
    return out


def test_tables_and_schema(built):
    for name in ("reports", "findings", "labels", "qa", "rejects"):
        assert (built / f"{name}.parquet").exists()
    reports = pq.read_table(built / "reports.parquet").to_pylist()
    assert [r["report_id"] for r in reports] == ["r1", "r2", "r3", "r4"]
    assert reports[0]["MeSH"] == "Cardiomegaly"  # passthrough kept, not parsed
    assert reports[2]["indication"] == "r/o pneumonia"
    rejects = pq.read_table(built / "rejects.parquet").to_pylist()
    assert [r["report_id"] for r in rejects] == ["r5"]
    findings = pq.read_table(built / "findings.parquet")
    assert findings.schema.field("mention_id").type == "int32"
    rows = findings.to_pylist()
    eff = [f for f in rows if f["report_id"] == "r1" and f["concept"] == "pleural_effusion"]
    assert eff[0]["laterality"] == "left" and eff[0]["severity"] == "small" and eff[0]["certainty"] == "positive"
    assert eff[0]["sentence"][eff[0]["start"]:eff[0]["end"]] == eff[0]["text"]
    # The indication's "r/o pneumonia" is context, never evidence.
    r3 = [f for f in rows if f["report_id"] == "r3"]
    assert {f["section"] for f in r3} == {"findings", "impression"}
    assert {(f["concept"], f["certainty"]) for f in r3} >= {("pneumonia", "uncertain")}
    assert any(f["concept"] == "endotracheal_tube" for f in rows if f["report_id"] == "r4")


def test_labels(built):
    labels = {(r["report_id"], r["scheme"], r["label"]): r["value"]
              for r in pq.read_table(built / "labels.parquet").to_pylist()}
    assert labels[("r1", "chexpert", "Pleural Effusion")] == 1
    assert labels[("r1", "chexpert", "Pneumothorax")] == 0
    assert labels[("r1", "chestxray14", "Effusion")] == 1
    assert labels[("r2", "chexpert", "No Finding")] == 1
    assert labels[("r3", "chexpert", "Pneumonia")] == -1
    assert labels[("r4", "chexpert", "Cardiomegaly")] == 1
    assert labels[("r4", "chexpert", "Support Devices")] == 1
    assert ("r2", "chexpert", "Pneumonia") not in labels  # never mentioned -> no row


def test_manifest(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["rows"]["reports"] == 4 and manifest["rows"]["rejects"] == 1
    assert len(manifest["input_sha256"]) == 64 and len(manifest["lexicon_sha256"]) == 64
    assert len(manifest["config_sha256"]) == 64 and manifest["config"]["parser"]["probable_as"] == "positive"


def test_byte_identical_across_runs_and_worker_counts(tmp_path):
    src = write_csv(tmp_path / "in.csv", [(f"{r[0]}-{i}", *r[1:]) for i in range(40) for r in REPORTS])
    outs = []
    for workers, name in ((1, "a"), (2, "b"), (1, "c")):
        build(src, tmp_path / name, BuildConfig(workers=workers, batch_size=16, progress=False))
        outs.append(tmp_path / name)
    for name in ("reports.parquet", "findings.parquet", "labels.parquet", "qa.parquet", "rejects.parquet",
                 "stats.json", "data_card.md"):
        blobs = {(o / name).read_bytes() for o in outs}
        assert len(blobs) == 1, name


def test_card_counted_in_batches_matches_the_written_table(tmp_path):
    """The workers count the data card per batch; it must equal counting the final qa.parquet."""
    from qa_builder.qa.card import compute_stats

    # subjects recur across batches (p2 has two reports, every 5-report block repeats the subjects)
    src = write_csv(tmp_path / "in.csv", [(f"{r[0]}-{i}", r[1], r[2]) for i in range(30) for r in REPORTS])
    out = tmp_path / "out"
    manifest = build(src, out, BuildConfig(workers=2, batch_size=7, progress=False))
    stats = json.loads((out / "stats.json").read_text())
    expected = compute_stats(pq.read_table(out / "qa.parquet"), manifest["rows"]["reports"],
                             rejects_count=manifest["rows"]["rejects"], qa_parquet_path=out / "qa.parquet")
    expected["config"] = stats["config"]
    assert stats == json.loads(json.dumps(expected))
    # p1-p3 (p4's report is empty, rejected): distinct across batches, not summed per batch
    assert sum(v["subjects"] for v in stats["by_split"].values()) == 3


def test_no_staging_left_behind(built):
    assert not [p for p in built.iterdir() if p.name.startswith(".partial")]


def test_worker_scratch_files_removed_after_success_and_failure(tmp_path, monkeypatch):
    """Workers hand batches over as Arrow files in a scratch folder: none may outlive the run."""
    import qa_builder.pipeline as pipeline

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(pipeline, "_spill_root", lambda: str(scratch))
    src = write_csv(tmp_path / "in.csv", [(f"{r[0]}-{i}", *r[1:]) for i in range(20) for r in REPORTS])
    manifest = build(src, tmp_path / "out", BuildConfig(workers=2, batch_size=8, progress=False))
    assert manifest["rows"]["reports"] == 80 and list(scratch.iterdir()) == []

    calls = []
    real_write = pipeline.TableWriters.write

    def failing_write(self, name, batch):  # the parent fails while batches are still in flight
        calls.append(name)
        if len(calls) > 12:
            raise RuntimeError("disk full")
        real_write(self, name, batch)

    monkeypatch.setattr(pipeline.TableWriters, "write", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        build(src, tmp_path / "out2", BuildConfig(workers=2, batch_size=8, progress=False))
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "out2" / "qa.parquet").exists()


def test_full_scratch_space_falls_back_to_the_pipe(tmp_path, monkeypatch):
    import pyarrow as pa

    src = write_csv(tmp_path / "in.csv", [(f"{r[0]}-{i}", *r[1:]) for i in range(20) for r in REPORTS])
    build(src, tmp_path / "a", BuildConfig(workers=1, batch_size=8, progress=False))

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pa, "OSFile", no_space)  # the forked workers inherit it
    build(src, tmp_path / "b", BuildConfig(workers=2, batch_size=8, progress=False))
    for name in ("reports.parquet", "findings.parquet", "labels.parquet", "qa.parquet", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_cli_loads_pyarrow_without_importing_pandas():
    """qa-build skips pyarrow's pandas probes; pandas still works afterwards in the same process."""
    pytest.importorskip("pandas")
    code = (
        "import sys\n"
        "from qa_builder.cli import _load_pyarrow_without_pandas\n"
        "_load_pyarrow_without_pandas()\n"
        "import pyarrow as pa\n"
        "t = pa.table({'g': ['a', 'b', 'a'], 'r': ['1', '1', '2']})\n"
        "agg = t.group_by('g').aggregate([('r', 'count_distinct')]).sort_by('g')\n"
        "assert agg.column('r_count_distinct').to_pylist() == [2, 1]\n"
        "assert 'pandas' not in sys.modules\n"
        "df = t.to_pandas()\n"
        "import pandas as pd\n"
        "assert isinstance(df, pd.DataFrame) and pa.Table.from_pandas(df).num_rows == 3\n"
        "assert pa.array(pd.Series([1, 2])).to_pylist() == [1, 2]\n"
        "print('ok')\n"
    )
    run_fresh(code)


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qa-build"), *args, "--quiet"], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "make_input, fragment",
    [
        (lambda p: p / "missing.csv", "missing.csv"),
        (lambda p: put(p / "empty.csv", b""), "empty.csv"),
        (lambda p: put(p / "cols.csv", b"a,b\n1,2\n"), "cols.csv"),
        (lambda p: put(p / "junk.bin", bytes(range(256)) * 10), "junk.bin"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, make_input, fragment):
    proc = run_cli(str(make_input(tmp_path)), str(tmp_path / "out"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_cli_partial_bad_rows_still_succeed(tmp_path):
    rows = [("a", "s1", "FINDINGS: No effusion."), ("a", "s1", "FINDINGS: duplicate id."), ("", "s2", "FINDINGS: no id."),
            ("b", "s3", "FINDINGS: Mild cardiomegaly.")]
    proc = run_cli(str(write_csv(tmp_path / "in.csv", rows)), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    reports = pq.read_table(tmp_path / "out" / "reports.parquet").column("report_id").to_pylist()
    rejects = pq.read_table(tmp_path / "out" / "rejects.parquet").to_pylist()
    assert reports == ["a", "b"]
    assert len(rejects) == 2  # every input row is in exactly one table
    assert any("duplicate" in r["reason"] for r in rejects)


def test_balanced_build_rewrites_qa_consistently(tmp_path):
    from collections import Counter

    from qa_builder.qa.generate import QAConfig

    src = write_csv(tmp_path / "in.csv", [(f"{r[0]}-{i}", f"p{i}", r[2]) for i in range(20) for r in REPORTS])
    out = tmp_path / "out"
    manifest = build(src, out, BuildConfig(workers=1, progress=False, qa=QAConfig(balance_yes_no=True)))
    qa = pq.read_table(out / "qa.parquet")
    assert manifest["rows"]["qa"] == qa.num_rows
    counts = Counter((r["question_type"], r["concept"], r["answer"]) for r in qa.to_pylist()
                     if r["question_type"] == "presence" and r["answer"] in ("yes", "no"))
    assert counts  # the corpus has presence pairs left to check
    for (qtype, concept, answer), n in counts.items():
        # Ratio 1: no answer outnumbers the other of its group (a group with no minority keeps nothing).
        assert n <= counts.get((qtype, concept, "no" if answer == "yes" else "yes"), 0), (concept, answer)
