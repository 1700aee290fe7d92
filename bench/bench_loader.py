"""Can the input pipeline feed a GPU? Host-side samples/s of the trainer's DataLoader at a config's shapes.

    python bench/bench_loader.py                       # base config (224 px, paper token lengths), batch 128
    python bench/bench_loader.py --workers 0,1,2 --batches 30 --studies 2000

Builds a synthetic corpus (``model.synthetic``), fills the image cache at the config's image size and
iterates the trainer's DataLoader (``training_loader``: StepSampler -> StudyDataset -> Collate: memory-mapped
uint8 views, per-step QA sampling, dynamic padding; pinned memory off). Augmentation runs on the training device,
so it is not part of this number. Prints one row per worker count: samples/s and ms per batch.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.config import load_config  # noqa: E402
from model.data.dataset import StepSampler, build_corpus, training_loader  # noqa: E402
from model.synthetic import make_corpus  # noqa: E402


def time_loader(corpus, cfg, batch: int, batches: int, workers: int) -> dict:
    sampler = StepSampler(np.arange(len(corpus.studies)), batch, 0, batches + 2)
    loader = training_loader(corpus, cfg.data, sampler, workers)
    it = iter(loader)
    for _ in range(2):  # worker start-up and first page-ins are not steady state
        next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += b["image0"].shape[0]
    s = time.perf_counter() - t0
    return {"workers": workers, "batch": batch, "samples_per_s": round(n / s, 1),
            "ms_per_batch": round(s * 1e3 / batches, 1), "coarse_len": b["coarse"].shape[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="base")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--studies", type=int, default=1000, help="synthetic studies (the corpus is built once)")
    ap.add_argument("--source-size", type=int, default=320, help="side of the synthetic PNGs before the cache")
    a = ap.parse_args()
    cfg = load_config(a.config)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_corpus(root / "data", root / "images", n_studies=a.studies, size=a.source_size, seed=0)
        corpus = build_corpus(root / "data", root / "images", root / "cache", cfg.model.image_size, cfg.data,
                              workers=2, progress=False)
        print(f"# {a.config}: {len(corpus.studies)} studies, images {cfg.model.image_size} px, corpus + cache built "
              f"in {time.perf_counter() - t0:.0f} s; {torch.get_num_threads()} torch threads")
        rows = [time_loader(corpus, cfg, a.batch, a.batches, int(w)) for w in a.workers.split(",")]
    print("| workers | batch | samples/s | ms/batch | coarse length |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['batch']} | {r['samples_per_s']} | {r['ms_per_batch']} | {r['coarse_len']} |")


if __name__ == "__main__":
    main()
