"""Throughput of the phantom generator (studies/s) for a few image sizes and worker counts.

    python bench/bench_phantom.py [--n 200] [--sizes 128,256,512] [--workers 1,4] [--dicom]

Prints a table; writes into a temporary folder that is removed afterwards. Not a test: timings
depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.phantom.generate import Options, generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--sizes", default="128,256")
    parser.add_argument("--workers", default=f"1,{min(8, os.cpu_count() or 1)}")
    parser.add_argument("--dicom", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = sorted({int(w) for w in args.workers.split(",")})
    print(f"phantom generator, {args.n} studies, {os.cpu_count()} CPUs"
          f"{', with DICOM' if args.dicom else ''}")
    print(f"{'size':>6} {'workers':>8} {'seconds':>9} {'studies/s':>10} {'images':>7} {'MB':>7} {'cpu s/study':>12}")
    for size in sizes:
        for w in workers:
            root = Path(tempfile.mkdtemp(prefix="bench-phantom-"))
            try:
                cpu0, t0 = time.process_time(), time.perf_counter()
                children0 = os.times().children_user + os.times().children_system
                manifest = generate(Options(out=str(root / "out"), n=args.n, size=size, workers=w,
                                            dicom=args.dicom, progress=False))
                wall = time.perf_counter() - t0
                cpu = time.process_time() - cpu0 + (os.times().children_user + os.times().children_system
                                                    - children0)
                mb = sum(p.stat().st_size for p in (root / "out").rglob("*") if p.is_file()) / 1e6
                print(f"{size:>6} {w:>8} {wall:>9.2f} {args.n / wall:>10.1f} {manifest['images']:>7} "
                      f"{mb:>7.1f} {cpu / args.n:>12.3f}")
            finally:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
