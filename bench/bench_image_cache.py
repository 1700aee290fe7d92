"""Image cache fill rate (`qft prepare`, or the trainer's first run) on MIMIC-CXR-JPG-sized radiographs.

    python bench/bench_image_cache.py                        # 48 JPEGs of 2,544 x 3,056, 224 px, 1 and 2 workers
    python bench/bench_image_cache.py --images 200 --size 512 --workers 2

Writes N full-size grey JPEGs (a real NIH radiograph from ../shared when present, else a synthetic one, upscaled,
with a per-file noise pattern) and fills the cache twice per worker count: decoding every pixel, and as the cache
does, with libjpeg's DCT scaling down to >= 2x the target size. Prints images/s per row. At MIMIC-CXR-JPG's
377,110 images, images/s says how long the one-off cache fill takes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model.data.cache as cache_mod  # noqa: E402
from model.data.images import read_image, resize_square  # noqa: E402

SHARED_PNG = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "00000001_000.png"
MIMIC_JPEGS = 377_110
CACHE_DECODE = cache_mod.load_resized  # what the cache uses: JPEGs decoded at reduced scale


def write_jpegs(folder: Path, n: int, width: int, height: int) -> list[str]:
    if SHARED_PNG.exists():
        base = np.asarray(Image.open(SHARED_PNG).convert("L"))
    else:  # a smooth synthetic chest-like field
        y, x = np.mgrid[0:512, 0:512] / 512.0
        base = (255 * np.exp(-((x - 0.5) ** 2 + (y - 0.55) ** 2) * 4)).astype(np.uint8)
    big = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC)).astype(np.int16)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        noisy = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        p = folder / f"img{i:05d}.jpg"
        Image.fromarray(noisy).save(p, quality=95)  # MIMIC-CXR-JPG: quality 95
        paths.append(str(p))
    return paths


def full_decode(path: str, size: int) -> np.ndarray:
    return resize_square(read_image(path), size)


def fill(paths: list[str], root: Path, size: int, workers: int, decode) -> float:
    saved = cache_mod.load_resized
    cache_mod.load_resized = decode  # the pool forks after this, so workers use it too
    try:
        t0 = time.perf_counter()
        cache = cache_mod.prepare_cache(paths, root, size, workers=workers, progress=False)
        dt = time.perf_counter() - t0
    finally:
        cache_mod.load_resized = saved
    assert int(cache.ok.sum()) == len(paths)
    return len(paths) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=224, help="cache side in pixels (base config: 224)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--width", type=int, default=2544)
    ap.add_argument("--height", type=int, default=3056)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "jpg").mkdir()
        paths = write_jpegs(tmp / "jpg", a.images, a.width, a.height)
        print(f"{a.images} JPEGs of {a.width} x {a.height} -> {a.size} px cache")
        print(f"| decoding | workers | images/s | hours for MIMIC-CXR-JPG ({MIMIC_JPEGS:,}) |")
        print("|---|---:|---:|---:|")
        for w in map(int, a.workers.split(",")):
            for name, decode in (("every pixel", full_decode), ("DCT-scaled (the cache's)", CACHE_DECODE)):
                rate = fill(paths, tmp / f"cache_{w}_{name[:5]}", a.size, w, decode)
                print(f"| {name} | {w} | {rate:.1f} | {MIMIC_JPEGS / rate / 3600:.1f} |", flush=True)


if __name__ == "__main__":
    main()
