"""Small numpy/Pillow raster helpers shared by the anatomy, lesion and device renderers.

Everything works on float32 arrays in a normalised frame: x and y run from 0 to 1 across the
image (x to the image right, y downwards), so one scene renders identically at any --size.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (X, Y) in [0, 1]; cached and read-only, shared by all renders."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(axis, axis)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def soft_step(signed_distance: np.ndarray, width: float) -> np.ndarray:
    """0 outside, 1 inside, linear ramp of `width` (normalised units) across the boundary (anti-aliasing)."""
    return np.clip(signed_distance / width + 0.5, 0.0, 1.0)


def ellipse_sdf(xx, yy, cx, cy, rx, ry, power: float = 2.0) -> np.ndarray:
    """Approximate signed distance (positive inside) to a (super)ellipse, in units of min(rx, ry)."""
    if power == 2.0:
        r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    else:
        r = (np.abs((xx - cx) / rx) ** power + np.abs((yy - cy) / ry) ** power) ** (1.0 / power)
    return (1.0 - r) * min(rx, ry)


@lru_cache(maxsize=32)
def _kernel(sigma_px: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3.0 * sigma_px)))
    taps = np.arange(-radius, radius + 1, dtype=np.float32)
    kern = np.exp(-0.5 * (taps / sigma_px) ** 2)
    return (kern / kern.sum()).astype(np.float32)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur with edge-replicate borders (Pillow cannot blur float images).

    Large sigmas are done on a downsampled copy: the result is smooth anyway and this keeps the
    cost independent of sigma.
    """
    if sigma_px < 0.3:
        return image.astype(np.float32, copy=True)
    if sigma_px > 4.0:
        factor = int(sigma_px // 2.0)
        h, w = image.shape
        small = resize(image, (max(4, w // factor), max(4, h // factor)))
        return resize(blur(small, sigma_px / factor), (w, h))
    kern = _kernel(round(float(sigma_px), 3))
    radius = len(kern) // 2
    out = image.astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, k in enumerate(kern):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(i, i + n)
            acc += k * padded[tuple(sl)]
        out = acc
    return out


def resize(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear float resize through Pillow's 'F' mode (deterministic, fast)."""
    return np.asarray(Image.fromarray(image.astype(np.float32), "F").resize(size_wh, Image.BILINEAR))


def smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Band-limited noise with unit standard deviation; `scale` is the feature size (normalised)."""
    cells = max(2, int(round(1.0 / scale)))
    coarse = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    big = resize(coarse, (size + 2 * size // cells, size + 2 * size // cells))
    off = size // cells
    field = big[off:off + size, off:off + size]
    return (field - field.mean()) / (field.std() + 1e-6)


class Pen:
    """Draws polylines, polygons and ellipses onto a float canvas given normalised coordinates.

    Drawing happens at `supersample` times the resolution and is box-averaged down, which gives
    anti-aliased thin structures (tubes, wires, rib edges) without a blur pass.
    """

    def __init__(self, size: int, supersample: int = 2):
        self.size = size
        self.ss = supersample
        self.image = Image.new("F", (size * supersample, size * supersample), 0.0)
        self.draw = ImageDraw.Draw(self.image)

    def _pts(self, points) -> list[tuple[float, float]]:
        s = self.size * self.ss
        return [(float(x) * s, float(y) * s) for x, y in points]

    def line(self, points, width: float, value: float = 1.0) -> None:
        """`width` is normalised; at least one supersampled pixel so a line never vanishes."""
        w = max(1, int(round(width * self.size * self.ss)))
        self.draw.line(self._pts(points), fill=float(value), width=w)

    def polygon(self, points, value: float = 1.0) -> None:
        self.draw.polygon(self._pts(points), fill=float(value))

    def ellipse(self, cx, cy, rx, ry, value: float = 1.0) -> None:
        s = self.size * self.ss
        self.draw.ellipse([(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s], fill=float(value))

    def rectangle(self, x0, y0, x1, y1, value: float = 1.0) -> None:
        s = self.size * self.ss
        self.draw.rectangle([x0 * s, y0 * s, x1 * s, y1 * s], fill=float(value))

    def result(self) -> np.ndarray:
        image = self.image if self.ss == 1 else self.image.reduce(self.ss)   # box average in C
        return np.array(image, dtype=np.float32)


def catmull_rom(points, samples_per_segment: int = 8) -> list[tuple[float, float]]:
    """Smooth curve through control points (used for tubes, leads, rib paths)."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 3:
        return [tuple(p) for p in pts]
    ext = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    p0, p1, p2, p3 = ext[:-3, None], ext[1:-2, None], ext[2:-1, None], ext[3:, None]
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[None, :, None]
    seg = 0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                 + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3)
    out = seg.reshape(-1, 2).tolist()
    out.append(pts[-1].tolist())
    return [tuple(p) for p in out]


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the True pixels, or None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def affine(array: np.ndarray, angle_deg: float, scale: float, shift_xy: tuple[float, float],
           nearest: bool = False) -> np.ndarray:
    """Rotate/scale about the centre, then shift (pixels); the uncovered border is filled with 0.

    Used to vary patient positioning between a subject's films; masks go through the same call
    with nearest-neighbour sampling so that they stay aligned with the image.
    """
    n_rows, n_cols = array.shape
    cx, cy = n_cols / 2.0, n_rows / 2.0
    theta = np.deg2rad(angle_deg)
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
    tx, ty = shift_xy
    # Pillow wants the inverse map: output (x, y) -> input (a x + b y + c, d x + e y + f)
    a, b, d, e = cos, sin, -sin, cos
    c = cx - a * (cx + tx) - b * (cy + ty)
    f = cy - d * (cx + tx) - e * (cy + ty)
    mode = "L" if array.dtype == np.uint8 else "F"
    image = Image.fromarray(array if mode == "L" else array.astype(np.float32), mode)
    out = image.transform((n_cols, n_rows), Image.AFFINE, (a, b, c, d, e, f),
                          resample=Image.NEAREST if nearest else Image.BILINEAR, fillcolor=0)
    return np.asarray(out)
