"""Fault injection: qa-build (and pretrain, from bench/fault_pretrain.py when it exists), case -> outcome.

    python bench/fault_injection.py                          # every case (~6 min on 2 cores)
    python bench/fault_injection.py --reports 5000 --kills 3 --damaged-rows 20000   # a quick pass
    python bench/fault_injection.py --only qa-build          # or --only pretrain

qa-build cases:
* a damaged CSV (``--damaged-rows`` rows, ~1 % of them damaged in each way: unclosed and stray
  quotes, NUL bytes, Windows-1252 bytes, too many / too few fields, empty and duplicate ids, empty
  reports, binary junk, blank lines; 5 % valid multi-line quoted reports): rows lost (in neither
  table; must be 0), rows whose outcome differs from the generator's expectation, tracebacks;
* kill -9 at ``--kills`` random moments of a build of ``--reports`` reports into an OUT that holds an
  older build, and at chosen steps of the table switch: what OUT looks like right after the kill
  (old tables intact / switch half done / ...), then a rerun must give tables byte-identical to an
  uninterrupted build;
* a concurrent second writer, a binary MIMIC report, output-path errors.

The pretrain cases come from `bench/fault_pretrain.py`'s `cases()`: a list of (name, function
returning an outcome string). A case whose outcome starts with "FAIL" or that raises counts as failed.
`write_damaged_csv` and `check_damaged_build` are also used by tests/test_reliability.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TABLES = ("reports.parquet", "findings.parquet", "labels.parquet", "qa.parquet", "rejects.parquet",
          "stats.json", "data_card.md")

# ============================================================================ damaged CSV corpora

HEADER = ("report_id", "findings", "impression", "site")
FINDINGS = ["Heart size is normal. Lungs are clear.", "Small left pleural effusion.",
            "Mild cardiomegaly. No pneumothorax.", "Right lower lobe opacity, possibly pneumonia."]
IMPRESSIONS = ["No acute process.", "Small effusion.", "Stable cardiomegaly.", "Pneumonia cannot be excluded."]
# A legitimate multi-line report: a blank line, and a prose line with as many commas as the header
# ("Lungs, pleura, ...": four fields, but "Lungs" does not look like an id, so it does not start a row).
MULTILINE = "Heart size is normal.\nLungs, pleura, mediastinum, bones are unremarkable.\n\nNo effusion."
# kind -> expected outcome: 'kept' or the start of the reject reason
EXPECT = {
    "valid": "kept", "multiline": "kept", "cp1252": "kept",
    "unclosed": "unclosed quote", "unclosed_prose": "unclosed quote", "stray": "stray quote",
    "nul": "contains NUL bytes", "many": "too many fields", "few": "too few fields", "junk": "too few fields",
    "empty_id": "empty report_id", "duplicate": "duplicate report_id", "empty": "empty report",
}
DAMAGE = [k for k in EXPECT if k not in ("valid", "multiline")]
SWALLOWABLE = ("few", "junk")   # lines that do not start a row: an open quote before them takes them in
OPENERS = ("unclosed", "unclosed_prose")


@dataclass
class Row:
    line: int                # 1-based line of the record's first line
    report_id: str | None    # the id a reject should carry (None: none readable)
    kind: str
    expect: str              # 'kept', a reason prefix, or 'absorbed' (taken in by the open quote before it)
    lines: int = 1


def _record(kind: str, rid: str, rng: random.Random, kept_ids: list[str]) -> tuple[bytes, str | None]:
    f, i = rng.choice(FINDINGS), rng.choice(IMPRESSIONS)

    def plain(*fields: str) -> bytes:
        buf = []
        for v in fields:
            buf.append('"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v)
        return (",".join(buf) + "\n").encode()

    if kind == "valid":
        return plain(rid, f, i, "A"), rid
    if kind == "multiline":
        return plain(rid, MULTILINE, i, "B"), rid
    if kind == "cp1252":
        return f"{rid},Temperature 38\xb0C noted.,{i},C\n".encode("cp1252"), rid
    if kind == "unclosed":
        return f'{rid},"Never closed findings.,{i},D\n'.encode(), rid
    if kind == "unclosed_prose":
        return f'{rid},"Never closed and runs on\nonto a second line of prose.,{i},D\n'.encode(), rid
    if kind == "stray":
        return f'{rid},"Bad "quoted" text.",{i},E\n'.encode(), rid
    if kind == "nul":
        return f"{rid},Has a NUL\x00 byte.,{i},F\n".encode(), rid
    if kind == "many":
        return f"{rid},{f.replace(',', ';')},{i},G,extra\n".encode(), rid
    if kind == "few":
        return f"{rid},{f.replace(',', ';')}\n".encode(), rid
    if kind == "junk":  # binary bytes without delimiter, quote, line break or NUL: one field
        data = bytes(b for b in rng.randbytes(40) if b not in b',"\r\n\x00') or b"\xff"
        return data + b"\n", None
    if kind == "empty_id":
        return f",{f.replace(',', ';')},{i},H\n".encode(), None
    if kind == "duplicate":
        dup = rng.choice(kept_ids)
        return f"{dup},{f.replace(',', ';')},{i},I\n".encode(), dup
    if kind == "empty":
        return f"{rid},,,J\n".encode(), rid
    raise ValueError(kind)


def write_damaged_csv(path: Path, n_rows: int, rate: float = 0.01, multiline: float = 0.05, seed: int = 0,
                      blank: float = 0.005, allow_absorb: bool = True) -> list[Row]:
    """A CSV of n_rows records (ids s50000000, s50000001 ...): each damage kind with probability
    `rate`, valid multi-line reports with `multiline`, blank lines between records with `blank`.
    Returns every record with its expected outcome. allow_absorb=False never puts a line that does
    not start a row (too few fields, junk) right after an unclosed quote, so that every record is its
    own row in the output."""
    rng = random.Random(seed)
    rows: list[Row] = []
    kept_ids: list[str] = []
    line = 1
    with open(path, "wb") as fh:
        fh.write((",".join(HEADER) + "\n").encode())
        for k in range(n_rows):
            rid = f"s{50_000_000 + k}"
            u = rng.random()
            if u < rate * len(DAMAGE):
                kind = DAMAGE[int(u / rate) % len(DAMAGE)]
            elif u < rate * len(DAMAGE) + multiline:
                kind = "multiline"
            else:
                kind = "valid"
            if kind == "duplicate" and not kept_ids:
                kind = "valid"
            after_open = bool(rows) and (rows[-1].kind in OPENERS or rows[-1].expect == "absorbed")
            if kind in SWALLOWABLE and after_open and not allow_absorb:
                kind = "valid"
            data, expect_id = _record(kind, rid, rng, kept_ids)
            if rng.random() < blank:
                fh.write(b"\n")
                line += 1
            expect = EXPECT[kind]
            if kind in SWALLOWABLE and after_open:
                expect = "absorbed"
            n_lines = data.count(b"\n")
            rows.append(Row(line + 1, expect_id, kind, expect, n_lines))
            if expect == "kept":
                kept_ids.append(rid)
            fh.write(data)
            line += n_lines
    return rows


_SPAN = re.compile(r"\(lines (\d+)-(\d+)\)")


def check_damaged_build(out: Path, rows: list[Row]) -> dict:
    """Compare a qa-build of `write_damaged_csv` output with the expectation, record by record."""
    import pyarrow.parquet as pq

    def line_of(source: str) -> int:
        return int(source.rsplit(":", 1)[1])

    reports = {line_of(r["source"]): r for r in pq.read_table(out / "reports.parquet").to_pylist()}
    rejects = {line_of(r["source"]): r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    spans = []
    for start, r in rejects.items():
        m = _SPAN.search(r["reason"])
        if m:
            spans.append((int(m.group(1)), int(m.group(2))))
    counts = Counter()
    wrong: list[str] = []
    for row in rows:
        counts["rows"] += 1
        rep, rej = reports.get(row.line), rejects.get(row.line)
        if row.expect == "kept":
            ok = rep is not None and rep["report_id"] == row.report_id
        elif row.expect == "absorbed":
            ok = any(a < row.line <= b for a, b in spans)
        else:
            ok = rej is not None and rej["reason"].startswith(row.expect) and rej["report_id"] == row.report_id
        counts[row.expect if row.expect in ("kept", "absorbed") else "rejected"] += ok
        if not ok:
            covered = rep is not None or rej is not None or any(a <= row.line <= b for a, b in spans)
            counts["lost" if not covered else "wrong"] += 1
            if len(wrong) < 5:
                wrong.append(f"line {row.line} ({row.kind}): report={rep} reject={rej}")
    manifest = json.loads((out / "manifest.json").read_text())
    counts["warnings"] = manifest["reports_with_warnings"]
    counts["extra_outputs"] = len(reports) + len(rejects) - sum(
        1 for row in rows if row.expect != "absorbed" and (row.line in reports or row.line in rejects))
    return {**counts, "examples": wrong}


# ============================================================================ running qa-build

def qa_build_cmd(reports: Path, out: Path, workers: int = 2, kill_at_replace: int | None = None,
                 pause_at_replace: tuple[int, Path] | None = None) -> list[str]:
    """The qa-build command line. kill_at_replace=K: the process SIGKILLs itself at the K-th rename
    into OUT (1 = the staged folder becoming OUT/.commit, then the switch's renames, manifest.json
    last). pause_at_replace=(K, GO): it waits there (holding the lock) until the file GO exists."""
    args = [str(reports), str(out), "--workers", str(workers), "--quiet"]
    if kill_at_replace is None and pause_at_replace is None:
        return [str(BIN / "qa-build"), *args]
    kill = kill_at_replace or 0
    pause, go = pause_at_replace or (0, "")
    code = ("import os, sys, signal, time\n"
            "real = os.replace\n"
            f"out, calls = os.path.abspath({str(out)!r}), [0]\n"
            "def replace(src, dst, *a, **k):\n"
            "    if os.path.abspath(dst).startswith(out + os.sep):\n"
            "        calls[0] += 1\n"
            f"        if calls[0] == {kill}:\n"
            "            os.kill(os.getpid(), signal.SIGKILL)\n"
            f"        if calls[0] == {pause}:\n"
            "            deadline = time.time() + 60\n"
            f"            while not os.path.exists({str(go)!r}) and time.time() < deadline:\n"
            "                time.sleep(0.02)\n"
            "    return real(src, dst, *a, **k)\n"
            "os.replace = replace\n"
            "sys.argv[0] = 'qa-build'\n"
            "from qa_builder.cli import build_main\n"
            "build_main()\n")
    return [sys.executable, "-c", code, *args]


def run_qa_build(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def start_and_kill(cmd: list[str], delay: float) -> tuple[int | None, list[int]]:
    """Start cmd in its own process group and SIGKILL its main process after `delay` s (unless it
    ended): as `kill -9 PID` does, its worker processes are left to notice on their own. Returns
    (exit code if it ended first, else None; the pids of the group at the kill)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait(timeout=delay), []
    except subprocess.TimeoutExpired:
        pass
    pids = _group_pids(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return None, pids


def wait_gone(pids: list[int], timeout: float = 20) -> list[int]:
    """Wait for processes to exit; SIGKILL and return the ones still there after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    return left


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def same_tables(a: Path, b: Path) -> list[str]:
    """Names of the output files that differ between two OUT folders."""
    return [n for n in TABLES if not (a / n).is_file() or not (b / n).is_file()
            or (a / n).read_bytes() != (b / n).read_bytes()]


def out_state(out: Path, old_sha: str, new_sha: str) -> str:
    """What OUT looks like: whole old build, whole new build, a switch half done, or broken."""
    from qa_builder.tables import verify_out

    problems = verify_out(out)
    if not problems:
        sha = json.loads((out / "manifest.json").read_text())["input_sha256"]
        return {old_sha: "old tables intact", new_sha: "new tables complete"}.get(sha, "tables of another input")
    if (out / ".commit").exists():
        return "switch half done (.commit; no manifest)"
    return "BROKEN: " + "; ".join(problems)[:200]


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith((".partial-", ".commit")))


def kill_case(reports: Path, out: Path, old: Path, ref: Path, old_sha: str, new_sha: str, delay: float | None,
              kill_at_replace: int | None, workers: int) -> str:
    """Kill -9 a build into OUT (holding the old build) at a moment or a switch step, then rerun."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(old, out)
    if kill_at_replace is not None:
        code = run_qa_build(qa_build_cmd(reports, out, workers, kill_at_replace)).returncode
        ended, pids = (code if code != -signal.SIGKILL else None), []
    else:
        ended, pids = start_and_kill(qa_build_cmd(reports, out, workers), delay)
    orphans = wait_gone(pids)
    state = "finished before the kill" if ended is not None else out_state(out, old_sha, new_sha)
    rerun = run_qa_build(qa_build_cmd(reports, out, workers))
    if rerun.returncode != 0 or "Traceback" in rerun.stderr:
        return f"FAIL: rerun exit {rerun.returncode}: {rerun.stderr.strip()[-200:]}"
    from qa_builder.tables import verify_out

    diff, problems, left = same_tables(out, ref), verify_out(out), leftovers(out)
    verdict = "rerun byte-identical" if not (diff or problems or left) else \
        f"FAIL: differs {diff}, problems {problems}, leftovers {left}"
    if state.startswith("BROKEN") or orphans:
        verdict = f"FAIL ({'orphan processes ' + str(orphans) if orphans else 'broken OUT'}): {verdict}"
    return f"{state} -> {verdict}"


# ============================================================================ the cases

def qa_build_cases(args, tmp: Path) -> list[tuple[str, Callable[[], str]]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_qa_build import SAMPLE, make_input

    big = tmp / "reports.csv"
    old_input = tmp / "old.csv"
    ref, old = tmp / "ref", tmp / "old"
    state: dict = {}

    def prepare() -> str:
        make_input(SAMPLE, args.reports, big)
        make_input(SAMPLE, max(100, args.reports // 20), old_input)
        start = time.perf_counter()
        proc = run_qa_build(qa_build_cmd(big, ref, args.workers))
        state["wall"] = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-300:])
        run_qa_build(qa_build_cmd(old_input, old, args.workers)).check_returncode()
        state["old_sha"] = json.loads((old / "manifest.json").read_text())["input_sha256"]
        state["new_sha"] = json.loads((ref / "manifest.json").read_text())["input_sha256"]
        return f"ok: {args.reports:,} reports in {state['wall']:.1f} s (old build in OUT: {old_input.name})"

    def damaged() -> str:
        path = tmp / "damaged.csv"
        rows = write_damaged_csv(path, args.damaged_rows, rate=0.01, seed=args.seed)
        out = tmp / "damaged-out"
        proc = run_qa_build(qa_build_cmd(path, out, args.workers))
        if proc.returncode != 0:
            return f"FAIL: exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
        c = check_damaged_build(out, rows)
        kinds = Counter(r.kind for r in rows)
        expected_warn = kinds["cp1252"]
        tracebacks = proc.stderr.count("Traceback")
        ok = c.get("lost", 0) == 0 and c.get("wrong", 0) == 0 and tracebacks == 0 and c["warnings"] == expected_warn
        damaged_n = sum(kinds[k] for k in DAMAGE)
        return (f"{'ok' if ok else 'FAIL'}: {c['rows']:,} rows ({damaged_n:,} damaged, {kinds['multiline']:,} "
                f"multi-line): {c.get('kept', 0):,} kept, {c.get('rejected', 0):,} rejected with the expected "
                f"reason and id, {c.get('absorbed', 0)} absorbed by the unclosed quote before them, "
                f"lost {c.get('lost', 0)}, wrong {c.get('wrong', 0)}, tracebacks {tracebacks}, "
                f"warnings {c['warnings']}/{expected_warn}" + (f"; e.g. {c['examples'][:2]}" if c["examples"] else ""))

    rng = random.Random(args.seed)
    cases: list[tuple[str, Callable[[], str]]] = [("qa-build: uninterrupted reference build", prepare),
                                                  ("qa-build: damaged CSV", damaged)]
    for k in range(args.kills):
        fraction = rng.uniform(0.05, 1.1)  # some after the end: the kill then misses

        def case(fraction=fraction) -> str:
            delay = state["wall"] * fraction
            return f"t={delay:.1f}s: " + kill_case(big, tmp / "kill-out", old, ref, state["old_sha"],
                                                   state["new_sha"], delay, None, args.workers)
        cases.append((f"qa-build: kill -9 at random point {k + 1}", case))
    for step in (1, 2, 5, 9):  # 1: stage -> .commit; 2..8: tables in; 9: manifest.json (with --gold: more)

        def case(step=step) -> str:
            return kill_case(big, tmp / "kill-out", old, ref, state["old_sha"], state["new_sha"], None, step,
                             args.workers)
        cases.append((f"qa-build: kill -9 at switch rename {step}", case))

    def concurrent() -> str:
        out, go = tmp / "concurrent", tmp / "concurrent-go"
        # the first run waits at its commit (holding the lock) until the second has tried
        first = subprocess.Popen(qa_build_cmd(big, out, args.workers, pause_at_replace=(1, go)),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while not list(out.glob(".partial-*")) and time.time() < deadline:
            time.sleep(0.05)
        second = run_qa_build(qa_build_cmd(old_input, out, args.workers))
        go.touch()
        first.wait()
        refused = second.returncode == 2 and f"is being written by PID {first.pid}" in second.stderr
        identical = not same_tables(out, ref)
        return (f"{'ok' if refused and identical and first.returncode == 0 else 'FAIL'}: second run exit "
                f"{second.returncode} ({second.stderr.strip()[:90]}); first run exit {first.returncode}, "
                f"tables {'identical to the reference' if identical else 'DIFFER'}")

    def binary_mimic() -> str:
        root = tmp / "mimic" / "files" / "p10" / "p10000001"
        root.mkdir(parents=True, exist_ok=True)
        (root / "s50000001.txt").write_text("FINDINGS: Lungs are clear.\nIMPRESSION: No acute process.\n")
        (root / "s50000002.txt").write_bytes(bytes(rng.randrange(1, 256) for _ in range(3000)))  # no NUL
        (root / ".s50000003.txt").write_text("IMPRESSION: hidden copy.\n")
        (root / "s50000001.jpg").write_bytes(b"\xff\xd8\xff")
        out = tmp / "mimic-out"
        proc = run_qa_build(qa_build_cmd(tmp / "mimic", out, 1))
        import pyarrow.parquet as pq

        rejects = pq.read_table(out / "rejects.parquet").to_pylist()
        skipped = json.loads((out / "manifest.json").read_text())["skipped_files"]
        ok = (proc.returncode == 0 and [r["report_id"] for r in rejects] == ["s50000002"]
              and rejects[0]["reason"].startswith("not plausible text")
              and skipped == {"hidden file": 1, "not a .txt file": 1})
        return f"{'ok' if ok else 'FAIL'}: binary .txt rejected ({rejects[0]['reason'][:40]}...), skipped {skipped}"

    def out_paths() -> str:
        results = []
        afile = tmp / "a-file"
        afile.write_text("x")
        targets = {"OUT is a file": afile, "parent is a file": afile / "sub",
                   "read-only (kernel refuses)": Path("/sys/radqa-fault-injection")}
        for name, target in targets.items():
            proc = run_qa_build(qa_build_cmd(old_input, target, 1))
            lines = [x for x in proc.stderr.splitlines() if x.strip()]
            good = proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
            results.append(f"{name}: {'exit 2, one line' if good else 'FAIL ' + repr(proc.stderr[-100:])}")
        return ("ok: " if all("FAIL" not in r for r in results) else "FAIL: ") + "; ".join(results)

    cases += [("qa-build: concurrent second writer", concurrent), ("qa-build: binary + hidden MIMIC files", binary_mimic),
              ("qa-build: output-path errors", out_paths)]
    return cases


def pretrain_cases() -> list[tuple[str, Callable[[], str]]]:
    path = ROOT / "bench" / "fault_pretrain.py"
    try:
        spec = importlib.util.spec_from_file_location("fault_pretrain", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["fault_pretrain"] = module
        spec.loader.exec_module(module)
        return list(module.cases())
    except Exception as exc:  # noqa: BLE001 - missing file or a broken import: say so, run the rest
        print(f"pretrain cases skipped: cannot import {path.relative_to(ROOT)} "
              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", flush=True)
        return []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=20_000, help="reports in the kill -9 builds")
    ap.add_argument("--kills", type=int, default=10, help="kill -9 at this many random moments")
    ap.add_argument("--damaged-rows", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("qa-build", "pretrain"), default=None)
    args = ap.parse_args()
    results: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fault-injection-") as tmp:
        cases = []
        if args.only != "pretrain":
            cases += qa_build_cases(args, Path(tmp))
        if args.only != "qa-build":
            cases += pretrain_cases()
        width = max((len(name) for name, _ in cases), default=4)
        print(f"{'case':<{width}}  {'s':>6}  outcome", flush=True)
        for name, fn in cases:
            start = time.perf_counter()
            try:
                outcome = str(fn())
            except Exception as exc:  # noqa: BLE001 - a case that raises is a failed case, not the end
                outcome = f"FAIL (raised): {type(exc).__name__}: {exc}"
                traceback.print_exc(limit=3)
            seconds = time.perf_counter() - start
            results.append((name, outcome, seconds))
            print(f"{name:<{width}}  {seconds:>6.1f}  {outcome}", flush=True)
    failed = [name for name, outcome, _ in results if "FAIL" in outcome]
    print(f"\n{len(results) - len(failed)}/{len(results)} cases ok" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
