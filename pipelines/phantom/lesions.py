"""Renderers for parenchymal, pleural, cardiac and osseous findings.

Each renderer edits a Canvas (adds attenuation, displaces lung air, hides vessel markings) and
returns the Instances (masks) of what it drew. Amplitudes are deliberately a little stronger
than in real films so that a tiny model can learn them at 128-256 px; uncertain findings are
drawn at reduced conspicuity. Frontal and lateral variants share the lesion's lung-local anchor
(u, v, w) so that both views agree.
"""
from __future__ import annotations

import numpy as np

from .anatomy import LEFT, RIGHT, ZONES
from .raster import Pen, blur, smooth_noise, soft_step
from .render import Canvas, Instance, side_name, sides_of
from .truth import Finding

EFFUSION_HEIGHT = {"small": 0.14, "moderate": 0.32, "large": 0.55}   # fraction of lung height
PNEUMOTHORAX_GAP = {"small": 0.028, "moderate": 0.06, "large": 0.11}
EDEMA_AMPLITUDE = {"mild": 0.5, "moderate": 0.7, "severe": 0.85}
ATELECTASIS_BANDS = {"minimal": 1, "mild": 2, "moderate": 3}


def _instance(f: Finding, mask: np.ndarray, laterality: str | None = None) -> Instance:
    return Instance(f.concept, laterality or f.laterality, f.severity, f.certainty, mask)


# --- pleural -----------------------------------------------------------------------------------
def pleural_effusion(c: Canvas, f: Finding, rng) -> list[Instance]:
    height = EFFUSION_HEIGHT.get(f.severity or "small", 0.14) * (1 + 0.08 * rng.standard_normal())
    k = f.conspicuity
    out = []
    if c.frontal:
        for side in sides_of(f):
            sdf = c.geo.lung_sdf(side)
            u, v = c.geo.lung_uv(side)
            # meniscus: fluid climbs higher along the lateral chest wall
            top = 1.0 - height * (0.5 + 0.8 * np.clip(u, 0, 1) ** 2)
            fluid = soft_step(v - top, 0.05) * soft_step(sdf + 0.004, c.geo.edge)
            c.displace_air(0.95 * k * fluid)
            c.add(0.15 * k * fluid * np.clip(1 + (v - top) * 2, 1, 2))
            out.append(_instance(f, (fluid > 0.5) & (sdf > 0), side_name(side)))
    else:
        sdf = c.geo.lung_sdf()
        v, w = c.geo.lung_vw()
        top = 1.0 - height * 0.8 * (0.35 + 1.1 * np.clip(w, 0, 1) ** 2)
        fluid = soft_step(v - top, 0.05) * soft_step(sdf + 0.004, c.geo.edge)
        share = 1.0 if f.laterality == "bilateral" else 0.7
        c.displace_air(0.9 * share * k * fluid)
        c.add(0.15 * share * k * fluid)
        out.append(_instance(f, (fluid > 0.5) & (sdf > 0)))
    return out


def pneumothorax(c: Canvas, f: Finding, rng) -> list[Instance]:
    if not c.frontal:      # rarely visible on the lateral: not drawn, not annotated there
        return []
    gap = PNEUMOTHORAX_GAP.get(f.severity or "small", 0.03) * (1 + 0.1 * rng.standard_normal())
    out = []
    for side in sides_of(f):
        sdf = c.geo.lung_sdf(side)
        _, v = c.geo.lung_uv(side)
        dist = c.geo.pleural_distance(side)
        local_gap = gap * np.clip(1.25 - 0.8 * v, 0.15, 1.25)     # widest at the apex
        inside = sdf > 0
        region = soft_step(local_gap - dist, c.geo.edge) * inside * (v < 0.95)
        c.vessel_keep *= 1.0 - region
        c.air_keep *= 1.0 + 0.2 * region * f.conspicuity
        # the collapsed lung is denser; its edge is the visceral pleural line
        side_mask = soft_step(sdf, c.geo.edge) * (1 - region)
        c.air_keep *= 1.0 - 0.06 * side_mask
        line = np.exp(-((dist - local_gap) / (1.1 / c.size)) ** 2) * inside * (v < 0.93)
        c.add(0.45 * f.conspicuity * line)
        out.append(_instance(f, region > 0.5, side_name(side)))
    return out


def pleural_thickening(c: Canvas, f: Finding, rng) -> list[Instance]:
    if not c.frontal:
        return []
    out = []
    for side in sides_of(f):
        sdf = c.geo.lung_sdf(side)
        _, v = c.geo.lung_uv(side)
        dist = c.geo.pleural_distance(side)
        cap = soft_step(0.018 - dist, c.geo.edge) * (sdf > 0) * soft_step(0.3 - v, 0.05)
        c.displace_air(0.9 * f.conspicuity * cap)
        c.add(0.15 * f.conspicuity * cap)
        out.append(_instance(f, cap > 0.5, side_name(side)))
    return out


# --- heart and mediastinum -------------------------------------------------------------------
def cardiomegaly(c: Canvas, f: Finding, rng) -> list[Instance]:
    # the enlarged heart itself comes from Study.ctr (drawn by Canvas.compose); annotate it
    heart = c.geo.heart_mask(c.ctr) > 0.5
    yy = c.geo.yy
    if c.frontal:
        heart &= yy < c.geo.dome_y(LEFT) + 0.02
    else:
        heart &= yy < c.geo.diaphragm_y(c.geo.xx, LEFT)
    return [_instance(f, heart)]


def enlarged_cardiomediastinum(c: Canvas, f: Finding, rng) -> list[Instance]:
    xx, yy = c.geo.xx, c.geo.yy
    t = c.geo.t
    if c.frontal:
        cy = (t.apex_y + t.carina_y) / 2 + 0.03
        widen = 0.065 * (1 + 0.1 * rng.standard_normal())
        region = soft_step(1 - ((xx - t.cx) / (0.07 + widen)) ** 2 - ((yy - cy) / 0.15) ** 2, 0.15)
    else:
        region = soft_step(1 - ((xx - 0.3) / 0.1) ** 2 - ((yy - 0.3) / 0.14) ** 2, 0.15)
        region *= soft_step(xx - c.geo.lung_front(yy) + 0.02, 0.01)
    c.displace_air((0.9 if c.frontal else 0.4) * f.conspicuity * region)
    return [_instance(f, region > 0.5)]


# --- parenchyma ------------------------------------------------------------------------------
def _anchor_point(c: Canvas, f: Finding, side: int) -> tuple[float, float]:
    u, v, w = f.anchor
    return c.geo.point(side, u, v) if c.frontal else c.geo.point(w, v)


def _round_lesion(c: Canvas, f: Finding, rng, lobes: int, contrast: float) -> list[Instance]:
    side = sides_of(f)[0]
    x0, y0 = _anchor_point(c, f, side)
    radius = max(c.units(f.size_mm or 10.0) / 2, 1.3 / c.size)
    shape_rng = np.random.default_rng(f.seed)    # same outline on every view and follow-up
    xx, yy = c.geo.xx, c.geo.yy
    profile = np.zeros_like(xx)
    offsets = [(0.0, 0.0, 1.0)] + [
        (shape_rng.normal(0, 0.3), shape_rng.normal(0, 0.3), shape_rng.uniform(0.55, 0.8))
        for _ in range(lobes - 1)]
    for dx, dy, scale in offsets:
        r = radius * scale
        d2 = ((xx - x0 - dx * radius) ** 2 + (yy - y0 - dy * radius) ** 2) / r ** 2
        profile = np.maximum(profile, np.sqrt(np.clip(1 - d2, 0, 1)))
    profile = np.minimum(profile * 1.4, 1.0)   # flat-topped: solid soft-tissue density
    profile = blur(profile, 0.6)
    lung = c.layers.lung_field
    c.displace_air(0.55 * contrast * f.conspicuity * profile * lung)
    c.add(0.06 * contrast * f.conspicuity * profile)
    return [_instance(f, profile > 0.3)]


def lung_nodule(c: Canvas, f: Finding, rng) -> list[Instance]:
    return _round_lesion(c, f, rng, lobes=2, contrast=1.0)


def lung_mass(c: Canvas, f: Finding, rng) -> list[Instance]:
    return _round_lesion(c, f, rng, lobes=4, contrast=1.15)


def _zone_region(c: Canvas, f: Finding, side: int | None, rng, extent: float, patchiness: float):
    """Patchy airspace region centred in the finding's zone; returns a 0..1 field."""
    z = ZONES[f.zone or "lung"]
    shape_rng = np.random.default_rng(f.seed + (0 if side in (None, RIGHT) else 7))
    if c.frontal:
        u, v = c.geo.lung_uv(side)
        lung = soft_step(c.geo.lung_sdf(side), c.geo.edge)
        a, b = (u, v)
        ra, rb = z["u"], z["v"]
    else:
        v, w = c.geo.lung_vw()
        lung = soft_step(c.geo.lung_sdf(), c.geo.edge)
        a, b = (w, v)
        ra, rb = z["w"], z["v"]
    ca = (ra[0] + ra[1]) / 2 + shape_rng.normal(0, 0.05)
    cb = (rb[0] + rb[1]) / 2 + shape_rng.normal(0, 0.04)
    ha = (ra[1] - ra[0]) / 2 * extent
    hb = (rb[1] - rb[0]) / 2 * extent
    core = 1 - ((a - ca) / ha) ** 2 - ((b - cb) / hb) ** 2
    noise = smooth_noise(shape_rng, c.size, 0.06)
    field = np.clip(core * 2.0 + patchiness * noise, 0, 1) * lung
    return blur(field, 0.007 * c.size)


def _bronchograms(c: Canvas, field: np.ndarray, rng) -> None:
    """Air bronchograms: branching lucencies inside dense consolidation."""
    ys, xs = np.nonzero(field > 0.8)
    if len(xs) < 20:
        return
    pen = Pen(c.size)
    for _ in range(3):
        i = int(rng.integers(len(xs)))
        x, y = xs[i] / c.size, ys[i] / c.size
        angle = rng.uniform(0, 2 * np.pi)
        pts = [(x, y)]
        for _ in range(4):
            angle += rng.normal(0, 0.3)
            x, y = x + 0.012 * np.cos(angle), y + 0.012 * np.sin(angle)
            pts.append((x, y))
        pen.line(pts, width=0.005)
    c.add(-0.35 * pen.result() * field)


def consolidation(c: Canvas, f: Finding, rng) -> list[Instance]:
    out = []
    for side in (sides_of(f) if c.frontal else [None]):
        field = _zone_region(c, f, side, rng, extent=0.95, patchiness=0.6)
        c.displace_air(0.68 * f.conspicuity * field)
        c.add(0.03 * f.conspicuity * field)
        _bronchograms(c, field, rng)
        out.append(_instance(f, field > 0.45, side_name(side) if side else None))
    return out


def lung_opacity(c: Canvas, f: Finding, rng) -> list[Instance]:
    out = []
    for side in (sides_of(f) if c.frontal else [None]):
        field = _zone_region(c, f, side, rng, extent=0.8, patchiness=0.9)
        c.displace_air(0.5 * f.conspicuity * field)
        out.append(_instance(f, field > 0.45, side_name(side) if side else None))
    return out


def atelectasis(c: Canvas, f: Finding, rng) -> list[Instance]:
    """Linear (plate-like) bands at the lung base, roughly horizontal."""
    bands = ATELECTASIS_BANDS.get(f.severity or "mild", 2)
    out = []
    for side in (sides_of(f) if c.frontal else [None]):
        shape_rng = np.random.default_rng(f.seed + (0 if side in (None, RIGHT) else 7))
        pen = Pen(c.size)
        for b in range(bands):
            # bands of different length, offset and tilt: plate-like, not parallel tram lines
            v0 = 0.72 + 0.08 * b + shape_rng.normal(0, 0.015)
            tilt = shape_rng.normal(0.04, 0.06)
            u0 = shape_rng.uniform(0.05, 0.45)
            u1 = min(0.9, u0 + shape_rng.uniform(0.25, 0.5))
            wiggle = shape_rng.normal(0, 0.006, 6)
            if c.frontal:
                pts = [c.geo.point(side, u, v0 + tilt * u + dv)
                       for u, dv in zip(np.linspace(u0, u1, 6), wiggle)]
            else:
                pts = [c.geo.point(w, v0 - 0.05 + tilt * w + dv)
                       for w, dv in zip(np.linspace(0.4 + 0.5 * u0, 0.4 + 0.5 * u1, 6), wiggle)]
            pen.line(pts, width=0.009 + 0.002 * bands, value=1.0)
        lung = soft_step((c.geo.lung_sdf(side) if c.frontal else c.geo.lung_sdf()) - 0.004, c.geo.edge)
        band = np.clip(blur(pen.result(), 0.002 * c.size), 0, 1) * lung
        c.displace_air(0.55 * f.conspicuity * band)
        c.add(0.03 * f.conspicuity * band)
        out.append(_instance(f, band > 0.3, side_name(side) if side else None))
    return out


def pulmonary_edema(c: Canvas, f: Finding, rng) -> list[Instance]:
    """Bilateral perihilar haze with indistinct vessels; septal lines when more than mild."""
    amp = EDEMA_AMPLITUDE.get(f.severity or "mild", 0.4) * f.conspicuity
    xx, yy = c.geo.xx, c.geo.yy
    out = []
    if c.frontal:
        for side in (RIGHT, LEFT):
            hx, hy = c.geo.hilum(side)
            spread = 1.0 + 0.6 * (amp - 0.5)
            haze = np.exp(-((xx - hx) / (0.14 * spread)) ** 2 - ((yy - hy) / (0.2 * spread)) ** 2)
            haze *= soft_step(c.geo.lung_sdf(side), c.geo.edge)
            c.displace_air(amp * haze)
            c.vessel_haze = np.maximum(c.vessel_haze, np.clip(haze * 1.5, 0, 1))
            if f.severity in ("moderate", "severe"):
                pen = Pen(c.size)
                for i in range(5):
                    x0, y0 = c.geo.point(side, 1.0, 0.8 + 0.035 * i)
                    pen.line([(x0, y0), (x0 - side * 0.03, y0)], width=0.003, value=1.0)
                lines = pen.result() * soft_step(c.geo.lung_sdf(side), c.geo.edge)
                c.add(0.3 * lines)
            out.append(_instance(f, haze > 0.4, side_name(side)))
    else:
        hx, hy = 0.52, c.geo.t.carina_y + 0.08
        haze = np.exp(-((xx - hx) / 0.17) ** 2 - ((yy - hy) / 0.2) ** 2)
        haze *= soft_step(c.geo.lung_sdf(), c.geo.edge)
        c.displace_air(0.8 * amp * haze)
        c.vessel_haze = np.maximum(c.vessel_haze, np.clip(haze * 1.5, 0, 1))
        out.append(_instance(f, haze > 0.4))
    return out


# --- bone --------------------------------------------------------------------------------------
def rib_fracture(c: Canvas, f: Finding, rng) -> list[Instance]:
    """Healing posterior rib fracture: a cortical break with surrounding callus."""
    if not c.frontal:
        return []
    side = sides_of(f)[0]
    index = int(f.variant or 5)
    path = np.asarray(c.geo.rib_path(side, index))
    x0, y0 = path[int(len(path) * (0.55 + 0.25 * (f.anchor[0] if f.anchor else 0.5)))]
    xx, yy = c.geo.xx, c.geo.yy
    d2 = ((xx - x0) ** 2 + (yy - y0) ** 2)
    width = c.geo.rib_width(index)
    callus = np.exp(-d2 / (1.1 * width) ** 2)
    gap = np.exp(-((xx - x0) / 0.003) ** 2) * (np.abs(yy - y0) < width)
    c.add(1.0 * f.conspicuity * callus - 0.3 * gap)
    return [_instance(f, d2 < (1.6 * width) ** 2, side_name(side))]
