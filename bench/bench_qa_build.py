"""End-to-end `qa-build` throughput and peak memory (the whole process tree), printed as a table.

    python bench/bench_qa_build.py --reports 20000            # embedded sample, replicated
    python bench/bench_qa_build.py --reports 20000 --source ../shared/data/iu/dev_reports.csv
    python bench/bench_qa_build.py --reports 20000 --code /tmp/old   # another checkout (git worktree), same venv

Each setting runs `qa-build` as a subprocess on a CSV of N reports made by repeating the source with
fresh ids. Repeated text makes the per-sentence cache very effective, so the table also shows the
same run with the cache off (every sentence parsed from scratch), the honest lower bound.
Each setting runs --repeat times; the table shows the fastest run and the highest peak memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "qa_builder" / "data" / "sample_reports.csv"


def make_input(source: Path, n: int, dest: Path) -> None:
    csv.field_size_limit(1 << 30)
    with open(source, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        rows = list(reader)
    id_col = next(c for c in ("report_id", "study_id", "study", "uid", "id") if c in fields)
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for i in range(n):
            row = dict(rows[i % len(rows)])
            row[id_col] = f"{row[id_col]}-{i // len(rows)}"
            if "subject_id" in row and row["subject_id"]:
                row["subject_id"] = f"{row['subject_id']}-{i // len(rows)}"
            w.writerow(row)


def run(csv_path: Path, out: Path, workers: int, cache: int, code: Path | None = None) -> dict:
    if code is None:
        cmd = [str(Path(sys.executable).parent / "qa-build")]
    else:  # the qa_builder of another checkout, ahead of this one on sys.path (A/B in the same venv)
        cmd = [sys.executable, "-c", f"import sys; sys.argv[0] = 'qa-build'; sys.path.insert(0, {str(code)!r}); "
               "from qa_builder.cli import build_main; build_main()"]
    cmd += [str(csv_path), str(out), "--workers", str(workers), "--quiet", "--sentence-cache", str(cache)]
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"qa-build failed: {proc.stderr.read().decode()[-500:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "peak_mb": peak / 2**20, "rows": manifest["rows"], "run": manifest["run"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--source", type=Path, default=SAMPLE)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--no-uncached", action="store_true", help="skip the cache-off runs")
    ap.add_argument("--code", type=Path, default=None,
                    help="run the qa_builder of this checkout instead (e.g. a git worktree of an older commit)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per setting; the fastest is shown (shared machines are noisy)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reports.csv"
        make_input(args.source, args.reports, data)
        print(f"input: {args.reports:,} reports from {args.source.name} ({data.stat().st_size / 2**20:.1f} MiB)")
        print(f"{'workers':>7} {'cache':>8} {'wall s':>8} {'reports/s':>10} {'peak RSS MiB':>13} {'QA pairs/s':>11} {'cache hits':>11}")
        for workers in (int(w) for w in args.workers.split(",")):
            for cache in ((100_000,) if args.no_uncached else (100_000, 0)):
                runs = [run(data, Path(tmp) / f"out-{workers}-{cache}", workers, cache, args.code)
                        for _ in range(args.repeat)]
                r = min(runs, key=lambda x: x["wall"])
                r["peak_mb"] = max(x["peak_mb"] for x in runs)
                n = r["rows"]["reports"] + r["rows"]["rejects"]
                hits = r["run"].get("sentence_cache_hits", 0)
                print(f"{workers:>7} {cache:>8} {r['wall']:>8.2f} {n / r['wall']:>10,.0f} {r['peak_mb']:>13,.0f} "
                      f"{r['rows']['qa'] / r['wall']:>11,.0f} {hits:>11,}")
        size = sum(p.stat().st_size for p in (Path(tmp) / f"out-{workers}-{cache}").glob("*.parquet"))
        print(f"output size: {size / 2**20 / (args.reports / 1000):.2f} MiB per 1,000 reports")


if __name__ == "__main__":
    main()
