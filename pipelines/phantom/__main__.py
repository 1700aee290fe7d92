"""CLI: python -m pipelines.phantom OUT --n 300 --seed 0 [--size 256] [--workers N] [--dicom] [--jpeg]"""
from __future__ import annotations

import argparse
import os
import sys

from .generate import Options, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.phantom",
        description="Write a synthetic chest-radiograph corpus (MIMIC-CXR layout) with known ground truth.")
    parser.add_argument("out", help="output folder (created; a previous phantom corpus there is replaced)")
    parser.add_argument("--n", type=int, default=300, help="number of studies (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical bytes")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="worker processes (default: CPU count, at most 8); output does not depend on it")
    parser.add_argument("--dicom", action="store_true", help="also write a .dcm next to every image")
    parser.add_argument("--jpeg", action="store_true", help="write JPEG images instead of PNG")
    parser.add_argument("--hedge-rate", type=float, default=None,
                        help="share of newly reported findings worded as uncertain (default from findings.yaml)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be positive")
    if args.size < 64:
        parser.error("--size must be at least 64")
    if args.hedge_rate is not None and not 0.0 <= args.hedge_rate <= 1.0:
        parser.error("--hedge-rate must be between 0 and 1")
    opts = Options(out=args.out, n=args.n, seed=args.seed, size=args.size, workers=max(1, args.workers),
                   dicom=args.dicom, jpeg=args.jpeg, hedge_rate=args.hedge_rate, progress=not args.quiet)
    manifest = generate(opts)
    rate = manifest["n_studies"] / manifest["seconds"] if manifest["seconds"] else float("inf")
    print(f"phantom: {manifest['n_studies']} studies, {manifest['n_subjects']} subjects, "
          f"{manifest['images']} images, {manifest['annotations']} boxes -> {args.out} "
          f"({manifest['seconds']:.1f} s, {rate:.1f} studies/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
