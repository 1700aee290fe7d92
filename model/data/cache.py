"""Decode + resize every image once into a memory-mapped uint8 file, so training never decodes full-size images.

Layout of a cache folder (one per image list and size):
  meta.json    size, count, hash of the path list
  paths.txt    one absolute image path per line (row i of images.u8)
  images.u8    raw uint8 array (count, size, size), read with np.memmap
  status.u8    per image: 0 to do, 1 done, 2 failed (resume skips 1 and 2)
  failures.txt 'path<TAB>reason' for failed images
Resumable: status.u8 is flushed as chunks finish, so an interrupted ``prepare`` continues where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .images import ImageReadError, load_resized

log = logging.getLogger("qft")
TODO, DONE, FAILED = 0, 1, 2


def cache_key(paths: list[str], size: int) -> str:
    h = hashlib.sha256(f"{size}\n".encode())
    for p in paths:
        h.update(p.encode() + b"\n")
    return h.hexdigest()[:16]


class ImageCache:
    """Read side: ``cache[i]`` -> (size, size) uint8 view; ``ok[i]`` tells whether image i decoded."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.size, self.count = meta["size"], meta["count"]
        self.paths = (self.folder / "paths.txt").read_text().splitlines()
        self.status = np.fromfile(self.folder / "status.u8", dtype=np.uint8)
        self._array = None  # opened lazily so the object pickles cheaply into DataLoader workers

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.folder / "images.u8", np.uint8, "r", shape=(self.count, self.size, self.size))
        return self._array

    @property
    def ok(self) -> np.ndarray:
        return self.status == DONE

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i]

    def __getstate__(self):
        return {**self.__dict__, "_array": None}


def _work(args):
    i, path, size = args
    try:
        return i, load_resized(path, size), None
    except ImageReadError as e:
        return i, None, str(e)


def prepare_cache(paths: list[str], cache_root: str | Path, size: int, workers: int = 0,
                  progress: bool = True) -> ImageCache:
    """Create or resume the cache for ``paths`` at ``size`` under ``cache_root``; returns it opened."""
    folder = Path(cache_root) / f"images{size}_{cache_key(paths, size)}"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(paths)
    if not (folder / "meta.json").exists():
        (folder / "paths.txt").write_text("\n".join(paths) + "\n")
        np.memmap(folder / "images.u8", np.uint8, "w+", shape=(max(n, 1), size, size)).flush()
        np.zeros(n, np.uint8).tofile(folder / "status.u8")
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps({"size": size, "count": n, "key": cache_key(paths, size), "version": 1}))
        os.replace(tmp, folder / "meta.json")  # meta last: its presence means the files are complete
    status = np.memmap(folder / "status.u8", np.uint8, "r+", shape=(n,))
    todo = np.flatnonzero(status == TODO).tolist()
    if todo:
        arr = np.memmap(folder / "images.u8", np.uint8, "r+", shape=(n, size, size))
        failures = open(folder / "failures.txt", "a")
        jobs = ((i, paths[i], size) for i in todo)
        t0, last_flush, done = time.perf_counter(), time.perf_counter(), 0
        bar = tqdm(total=len(todo), desc=f"cache {size}px", unit="img", disable=not progress, mininterval=1.0)
        pool = None
        if workers > 1:
            pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork" if os.name == "posix" else "spawn"))
            results = pool.map(_work, jobs, chunksize=16)
        else:
            results = map(_work, jobs)
        try:
            for i, img, err in results:
                if err is None:
                    arr[i] = img
                    status[i] = DONE
                else:
                    status[i] = FAILED
                    failures.write(f"{paths[i]}\t{err}\n")
                done += 1
                bar.update()
                if time.perf_counter() - last_flush > 2.0:  # images before status: a crash never marks unwritten rows
                    arr.flush(); status.flush(); failures.flush()
                    last_flush = time.perf_counter()
        finally:
            arr.flush(); status.flush(); failures.close(); bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        dt = time.perf_counter() - t0
        log.info("cache: %d images in %.1fs (%.1f images/s, %d workers) -> %s", done, dt, done / max(dt, 1e-9),
                 max(workers, 1), folder)
    cache = ImageCache(folder)
    n_failed = int((cache.status == FAILED).sum())
    if n_failed:
        first = (folder / "failures.txt").read_text().splitlines()[0].split("\t", 1)[-1]
        log.warning("cache: %d image(s) could not be read and are skipped; first: %s (all in %s)", n_failed,
                    first, folder / "failures.txt")
    return cache
