"""Fault injection, the fast cases (issue 18): damaged CSVs lose no row, binary and odd files, output-path
errors, one writer per OUT, all-or-nothing table switch, stale staging, kill -9 then rerun.

The longer cases (kill -9 at 10 random points of a 20k-report build, a 100k-row damaged CSV) are in
bench/fault_injection.py, which also makes the damaged corpora used here.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qa_builder.pipeline import BuildConfig, build
from qa_builder.reports import UTF8_WARNING, RawReport, Reject, iter_reports
from qa_builder.tables import LOCK_NAME, OutFolder, OutputError, verify_out

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_spec = importlib.util.spec_from_file_location("fault_injection", ROOT / "bench" / "fault_injection.py")
fi = importlib.util.module_from_spec(_spec)
sys.modules["fault_injection"] = fi
_spec.loader.exec_module(fi)
sys.path.insert(0, str(ROOT / "bench"))
from bench_qa_build import SAMPLE, make_input  # noqa: E402

QUICK = BuildConfig(workers=1, progress=False)


def outcome_of(record: RawReport | Reject | None) -> str:
    if record is None:
        return "absorbed"
    if isinstance(record, RawReport):
        return "kept"
    return next(prefix for prefix in sorted(set(fi.EXPECT.values()) - {"kept"}, key=len, reverse=True)
                if record.reason.startswith(prefix))


# ============================================================================= damaged CSV corpora

@pytest.mark.parametrize("seed", [1, 2])
def test_damaged_corpus_every_record_as_expected(tmp_path, seed):
    """Every damage kind at 3 % each (a third of the rows), 10 % valid multi-line reports: each record
    is kept or rejected on its own first line, with the expected reason and id."""
    path = tmp_path / "damaged.csv"
    rows = fi.write_damaged_csv(path, 1500, rate=0.03, multiline=0.10, blank=0.02, seed=seed, allow_absorb=False)
    kinds = Counter(row.kind for row in rows)
    assert all(kinds[k] >= 20 for k in fi.EXPECT), kinds  # every kind is there
    records = list(iter_reports(path))
    by_line = {int(r.source.rsplit(":", 1)[1]): r for r in records}
    assert len(by_line) == len(records) == len(rows)  # one record per row, none merged, none split
    for row in rows:
        record = by_line[row.line]
        assert outcome_of(record) == row.expect, (row, record)
        assert record.report_id == row.report_id, (row, record)
    assert Counter(outcome_of(r) for r in records) == Counter(row.expect for row in rows)
    warned = [r for r in records if isinstance(r, RawReport) and r.warnings == (UTF8_WARNING,)]
    assert len(warned) == kinds["cp1252"]
    multi = [r for r in records if isinstance(r, RawReport) and r.sections["findings"] == fi.MULTILINE]
    assert len(multi) == kinds["multiline"]


def test_damaged_corpus_through_qa_build(tmp_path):
    """The CLI on a corpus where some junk lines follow an unclosed quote (they are taken into its
    reject, which names the lines): no row lost, no traceback, the warning count in the manifest."""
    path = tmp_path / "damaged.csv"
    rows = fi.write_damaged_csv(path, 1200, rate=0.03, multiline=0.10, seed=3, allow_absorb=True)
    proc = fi.run_qa_build(fi.qa_build_cmd(path, tmp_path / "out", workers=2))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    result = fi.check_damaged_build(tmp_path / "out", rows)
    assert result.get("lost", 0) == 0 and result.get("wrong", 0) == 0, result
    assert result["absorbed"] > 0 and result["extra_outputs"] == 0
    assert result["warnings"] == sum(row.kind == "cp1252" for row in rows)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows"]["reports"] + manifest["rows"]["rejects"] == sum(r.expect != "absorbed" for r in rows)


@pytest.mark.parametrize("seed", [4, 5])
def test_fast_path_reads_as_the_line_rules_do(tmp_path, monkeypatch, seed):
    """The C-reader fast path is only a shortcut: the line-by-line rules alone give the same records."""
    from qa_builder import reports

    path = tmp_path / "damaged.csv"
    fi.write_damaged_csv(path, 1500, rate=0.03, multiline=0.10, blank=0.02, seed=seed)
    with open(path, "ab") as fh:  # and a field with a row-like line inside, and an unclosed quote at the end
        fh.write(b's60000001,"prose\ns60000002,a,b,c\nmore",x,A\ns60000003,"never closed')
    fast = list(iter_reports(path))
    monkeypatch.setattr(reports._CsvSplitter, "fast", False)
    assert list(iter_reports(path)) == fast


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_unclosed_quote_never_takes_the_next_row(tmp_path):
    path = write(tmp_path / "in.csv",
                 'report_id,findings,impression\n'
                 's1,"never closed,Normal.\n'           # cut: the next line starts a row
                 's2,Lungs are clear.,Normal.\n'
                 's3,"opens a multi-line field\n'       # cut by a row whose own field spans lines
                 's4,"Heart size normal.\nNo effusion.",Normal.\n'
                 's5,"open, and\n'                      # also cut by an open-quote row, a NUL row,
                 's6,"also open\n'                      # a stray-quote row and an empty-id row
                 's7,Has a NUL\x00.,Normal.\n'
                 's8,"bad "quote"",Normal.\n'
                 ',No id.,Normal.\n'
                 's9,"last, never closed\n')
    got = [(type(r).__name__, r.source.rsplit(":", 1)[1], r.report_id, getattr(r, "reason", "")) for r in
           iter_reports(path)]
    assert got == [
        ("Reject", "2", "s1", "unclosed quote (line 3 starts a new row)"),
        ("RawReport", "3", "s2", ""),
        ("Reject", "4", "s3", "unclosed quote (line 5 starts a new row)"),
        ("RawReport", "5", "s4", ""),
        ("Reject", "7", "s5", "unclosed quote (line 8 starts a new row)"),
        ("Reject", "8", "s6", "unclosed quote (line 9 starts a new row)"),
        ("Reject", "9", "s7", "contains NUL bytes (binary data)"),
        ("Reject", "10", "s8", "stray quote (',' expected after '\"')"),
        ("Reject", "11", None, "empty report_id (column 'report_id')"),
        ("Reject", "12", "s9", "unclosed quote (runs to the end of the file)"),
    ]


def test_multi_line_fields_and_the_documented_cut(tmp_path):
    """Report prose inside quotes stays one field, even a line with as many commas as the header; a line
    that looks like a row of its own (an id of the file's pattern, the header's width) cuts the field."""
    text = ("study_id,findings,impression,site\n"
            's50000001,"Heart, lungs, pleura, bones normal.\n\nSecond paragraph, with 1, 2, 3 commas.",Clear.,A\n'
            's50000002,"Multi-line\nimpression follows",Normal.,B\n'
            's50000003,"Quoted ""inner"" words\nacross lines.",Normal.,C\n'
            's50000004,"a field that holds\ns50000099,what,looks,like a row\nand more.",Normal.,D\n')
    records = list(iter_reports(write(tmp_path / "in.csv", text)))
    kept = [r for r in records if isinstance(r, RawReport)]
    assert [r.report_id for r in kept[:3]] == ["s50000001", "s50000002", "s50000003"]
    assert kept[0].sections["findings"].count("\n") == 2
    assert kept[2].sections["findings"] == 'Quoted "inner" words\nacross lines.'
    # the documented limit: the field is cut before the row-like line, nothing is lost
    assert [(type(r).__name__, r.source.rsplit(":", 1)[1]) for r in records[3:]] == [
        ("Reject", "9"), ("RawReport", "10"), ("Reject", "11")]
    assert records[3].reason == "unclosed quote (line 10 starts a new row)" and records[3].report_id == "s50000004"
    assert records[4].report_id == "s50000099"
    assert records[5].reason == "too few fields (3, header has 4)"


def test_source_is_the_line_number_and_rejects_name_their_lines(tmp_path):
    text = ("id,text\n\n"
            'a,"FINDINGS: one\nline two"\n'
            "\n"
            'b,"FINDINGS: x\ny",extra\n'
            "c,FINDINGS: fine.\n")
    a, b, c = iter_reports(write(tmp_path / "in.csv", text))
    assert a.source.endswith(":3") and isinstance(a, RawReport)
    assert isinstance(b, Reject) and b.source.endswith(":6") and b.report_id == "b"
    assert b.reason == "too many fields (3, header has 2) (lines 6-7)"
    assert c.source.endswith(":8")


def test_windows_1252_rows_kept_with_a_warning(tmp_path):
    path = write(tmp_path / "in.csv", "id,findings\nw1,Temp 38\xb0C.\nw2,Caf\xe9 sign.\n".encode("cp1252"))
    w1, w2 = iter_reports(path)
    assert w1.sections["findings"] == "Temp 38\ufffdC." and w1.warnings == (UTF8_WARNING,)
    assert w2.warnings == (UTF8_WARNING,)


# ============================================================================= binary and odd files

def mimic_tree(root: Path) -> Path:
    study = root / "files" / "p10" / "p10000001"
    study.mkdir(parents=True)
    write(study / "s50000001.txt", "FINDINGS: Lungs are clear.\nIMPRESSION: No acute process.\n")
    junk = bytes((k * 37 + 11) % 255 + 1 for k in range(4000))  # binary without a NUL byte
    write(study / "s50000002.txt", junk)
    write(study / "s50000003.txt", "IMPRESSION: Temp 38\xb0C, no effusion.\n".encode("cp1252"))  # kept
    write(study / "s50000004.txt", "IMPRESSION: UTF-16 with a BOM.\n".encode("utf-16"))
    write(study / ".s50000005.txt", "IMPRESSION: a hidden copy.\n")
    write(study / "s50000001.jpg", b"\xff\xd8\xff\xe0")
    (root / "files" / "p10" / ".cache").mkdir()
    write(root / "files" / "p10" / ".cache" / "s50000006.txt", "IMPRESSION: inside a hidden folder.\n")
    return root


def test_binary_and_hidden_files_in_a_mimic_tree(tmp_path):
    root = mimic_tree(tmp_path / "mimic")
    skipped = Counter()
    records = list(iter_reports(root, skipped=skipped))
    assert [(type(r).__name__, r.report_id) for r in records] == [
        ("RawReport", "s50000001"), ("Reject", "s50000002"), ("RawReport", "s50000003"), ("RawReport", "s50000004")]
    assert records[1].reason.startswith("not plausible text (") and "binary data" in records[1].reason
    assert records[2].warnings == (UTF8_WARNING,)
    assert records[3].text.startswith("IMPRESSION: UTF-16 with a BOM.")
    assert skipped == {"hidden file": 1, "hidden folder": 1, "not a .txt file": 1}
    manifest = build(root, tmp_path / "out", QUICK)
    assert manifest["skipped_files"] == {"hidden file": 1, "hidden folder": 1, "not a .txt file": 1}
    assert manifest["rows"]["reports"] == 3 and manifest["rows"]["rejects"] == 1


# ============================================================================= output paths

def cli(reports: Path, out: Path | str, *extra: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qa-build"), str(reports), str(out), "--quiet", "--workers", "1", *extra],
                          capture_output=True, text=True, timeout=120, preexec_fn=preexec)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    """(a 300-report CSV, a finished build of it)."""
    tmp = tmp_path_factory.mktemp("small")
    make_input(SAMPLE, 300, tmp / "in.csv")
    proc = cli(tmp / "in.csv", tmp / "ref")
    assert proc.returncode == 0, proc.stderr
    return tmp / "in.csv", tmp / "ref"


@pytest.fixture(scope="module")
def older(tmp_path_factory) -> Path:
    """A finished build of another input (150 reports): what OUT holds before the run under test."""
    tmp = tmp_path_factory.mktemp("older")
    make_input(SAMPLE, 150, tmp / "old.csv")
    assert build(tmp / "old.csv", tmp / "out", QUICK)["rows"]["reports"] == 150
    return tmp / "out"


def snapshot(out: Path) -> dict[str, bytes]:
    """The files of OUT (not the lock file, which holds the PID of the last run)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != LOCK_NAME}


def test_out_is_a_file_or_under_a_file(tmp_path, small):
    reports, _ = small
    afile = write(tmp_path / "afile", "keep me")
    assert "exists and is not a folder" in one_line_error(cli(reports, afile))
    assert "cannot create the output folder (Not a directory)" in one_line_error(cli(reports, afile / "sub"))
    assert afile.read_text() == "keep me"


def test_out_not_writable(tmp_path, small):
    reports, ref = small
    if os.geteuid() == 0:  # chmod does not stop root: use folders the kernel refuses to write
        assert "cannot create the output folder" in one_line_error(cli(reports, "/sys/radqa-test-out"))
        assert "cannot write" in one_line_error(cli(reports, "/sys/kernel"))
        assert not Path("/sys/radqa-test-out").exists()
        return
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    before = snapshot(out)
    out.chmod(0o555)
    try:
        assert "cannot write (Permission denied)" in one_line_error(cli(reports, out))
    finally:
        out.chmod(0o755)
    assert snapshot(out) == before


def test_no_space_left_keeps_the_old_tables(tmp_path, small):
    """A file-size limit (RLIMIT_FSIZE: the same failed write as a full disk, even as root) makes the
    run fail mid-write: one line, exit 2, OUT exactly as before, no staging left."""
    reports, ref = small
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    make_input(SAMPLE, 600, tmp_path / "other.csv")
    before = snapshot(out)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    message = one_line_error(cli(tmp_path / "other.csv", out, preexec=limit))
    assert message == f"error: {out}: cannot write (File too large)"
    assert snapshot(out) == before and fi.leftovers(out) == [] and verify_out(out) == []
    new = tmp_path / "new"  # a failed run into an OUT it created leaves nothing at all
    cli(tmp_path / "other.csv", new, preexec=limit)
    assert not new.exists()


# ============================================================================= one writer, all or nothing

def test_second_writer_is_refused(tmp_path, small):
    reports, ref = small
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    fd = os.open(out / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running qa-build holds it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        message = one_line_error(cli(reports, out))
        assert message.startswith(f"error: {out} is being written by PID {os.getpid()}")
    finally:
        os.close(fd)
    folder = OutFolder(out)
    folder.open()
    try:  # in one process too (POSIX locks do not exclude threads of the same process)
        with pytest.raises(OutputError, match="is being written by PID"):
            build(reports, out, QUICK)
    finally:
        folder.close(ok=True)
    assert snapshot(out) == snapshot(ref)
    build(reports, out, QUICK)  # released: the next run goes ahead


def test_concurrent_runs_one_refused(tmp_path, small):
    """Two qa-build processes into one OUT: the first is held at its commit (holding the lock) until
    the second has tried; the second is refused and changes nothing."""
    reports, ref = small
    out, go = tmp_path / "out", tmp_path / "go"
    first = subprocess.Popen(fi.qa_build_cmd(reports, out, workers=1, pause_at_replace=(1, go)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not list(out.glob(".partial-*")) and time.time() < deadline:
            time.sleep(0.02)
        make_input(SAMPLE, 50, tmp_path / "other.csv")
        second = cli(tmp_path / "other.csv", out)
    finally:
        go.touch()
        first.wait(timeout=120)
    assert first.returncode == 0, first.stderr.read()
    assert one_line_error(second).startswith(f"error: {out} is being written by PID {first.pid}")
    assert verify_out(out) == [] and fi.same_tables(out, ref) == []


def test_stale_staging_removed_live_kept(tmp_path, small):
    reports, _ = small
    out = tmp_path / "out"
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (dead.pid, live.pid):
            (out / f".partial-{pid}").mkdir(parents=True)
            write(out / f".partial-{pid}" / "qa.parquet", b"half a table")
        manifest = build(reports, out, QUICK)
        assert sorted(fi.leftovers(out)) == [f".partial-{live.pid}"]
        assert manifest["run"]["repaired"] == [f"{out}: removed .partial-{dead.pid}, left by a run that did not finish"]
    finally:
        live.kill()
        live.wait()


def test_switch_removes_stale_outputs_and_verify_catches_changes(tmp_path, small):
    reports, _ = small
    out = tmp_path / "out"

    def with_accuracy(folder: Path, manifest: dict) -> None:
        write(folder / "accuracy.json", "{}\n")

    manifest = build(reports, out, QUICK, finish=with_accuracy)
    assert set(manifest["files"]) == {"accuracy.json", "data_card.md", "stats.json", *(
        f"{t}.parquet" for t in ("reports", "findings", "labels", "qa", "rejects", "diff_qa"))}
    assert verify_out(out) == []
    build(reports, out, QUICK)
    assert not (out / "accuracy.json").exists() and verify_out(out) == []  # it measured older tables
    data = bytearray((out / "qa.parquet").read_bytes())
    data[100] ^= 1
    (out / "qa.parquet").write_bytes(bytes(data))
    assert verify_out(out) == [f"{out / 'qa.parquet'}: differs from manifest.json (size or sha256)"]


@pytest.mark.parametrize("step", [1, 5])
def test_kill_during_the_switch_then_rerun(tmp_path, small, older, step):
    """kill -9 at a rename of the switch (1: staging -> .commit; 5: half the tables in): OUT then holds
    the old tables or says it is mid-switch; the next run finishes the switch, then makes its own."""
    reports, ref = small
    out = tmp_path / "out"
    shutil.copytree(older, out)
    old = snapshot(out)
    proc = fi.run_qa_build(fi.qa_build_cmd(reports, out, workers=1, kill_at_replace=step))
    assert proc.returncode == -signal.SIGKILL
    if step == 1:  # killed before the generation was complete: old tables, plus staging for the next run
        assert snapshot(out) == old and len(fi.leftovers(out)) == 1 and fi.leftovers(out)[0].startswith(".partial-")
        assert verify_out(out) == []
    else:
        assert fi.leftovers(out) == [".commit"] and not (out / "manifest.json").exists()
        assert any("killed while switching" in p for p in verify_out(out))
    rerun = cli(reports, out)
    assert rerun.returncode == 0, rerun.stderr
    if step > 1:
        assert "finished the table switch of a run that was killed during it" in rerun.stderr
    assert fi.same_tables(out, ref) == [] and verify_out(out) == [] and fi.leftovers(out) == []


def test_kill_9_mid_run_then_rerun_is_byte_identical(tmp_path, older):
    """kill -9 of qa-build (main process only, as `kill -9 PID`) at 30 % and 70 % of a 2,000-report build
    over an older build: OUT holds complete tables or says it is unfinished, the workers exit on their
    own, and a rerun gives tables byte-identical to an uninterrupted build."""
    make_input(SAMPLE, 2000, tmp_path / "in.csv")
    ref, out = tmp_path / "ref", tmp_path / "out"
    start = time.perf_counter()
    assert fi.run_qa_build(fi.qa_build_cmd(tmp_path / "in.csv", ref, workers=2)).returncode == 0
    wall = time.perf_counter() - start
    old_sha = json.loads((older / "manifest.json").read_text())["input_sha256"]
    new_sha = json.loads((ref / "manifest.json").read_text())["input_sha256"]
    for fraction in (0.3, 0.7):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(older, out)
        ended, pids = fi.start_and_kill(fi.qa_build_cmd(tmp_path / "in.csv", out, workers=2), wall * fraction)
        assert fi.wait_gone(pids) == []  # no orphaned worker
        state = fi.out_state(out, old_sha, new_sha)
        assert ended == 0 or state in ("old tables intact", "new tables complete") or state.startswith("switch"), state
        assert fi.run_qa_build(fi.qa_build_cmd(tmp_path / "in.csv", out, workers=2)).returncode == 0
        assert fi.same_tables(out, ref) == [] and verify_out(out) == [] and fi.leftovers(out) == []
