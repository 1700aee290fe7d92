"""Renderers for support devices: radiopaque tubes, lines, leads and a pacemaker generator.

Paths are built from anatomical landmarks (carina, SVC, stomach, heart) so that the tip sits where
the report says it does. Masks are the drawn device dilated by a couple of pixels.
"""
from __future__ import annotations

from .raster import Pen, catmull_rom
from .render import Canvas, Instance
from .truth import Finding

# Tip position below the carina (normalised units) for each worded catheter tip location.
CATHETER_TIP_DROP = {"mid SVC": 0.0, "lower SVC": 0.04, "cavoatrial junction": 0.075,
                     "right atrium": 0.12}


def _stroke(c: Canvas, path, width: float, value: float, f: Finding, mask_width: float = 0.016) -> Instance:
    pen = Pen(c.size)
    pen.line(path, width=width, value=1.0)
    c.add(value * f.conspicuity * pen.result())
    mask_pen = Pen(c.size, supersample=1)
    mask_pen.line(path, width=mask_width, value=1.0)
    return Instance(f.concept, f.laterality, f.severity, f.certainty, mask_pen.result() > 0.5)


def _cm(c: Canvas, cm: float) -> float:
    return c.units(cm * 10.0)


def endotracheal_tube(c: Canvas, f: Finding, rng) -> list[Instance]:
    drop = _cm(c, float(f.tip or 4.0))
    cx, cy = c.geo.carina()
    if c.frontal:
        path = catmull_rom([(cx - 0.004, 0.0), (cx - 0.002, c.geo.t.apex_y), (cx, cy - drop)], 8)
    else:
        tip = (0.4 + (cx - 0.4) * (1 - drop / cy), cy - drop)
        path = catmull_rom([(0.38, 0.0), (0.43, 0.12), tip], 8)
    inst = _stroke(c, path, 0.016, 0.12, f, mask_width=0.02)       # plastic wall
    pen = Pen(c.size)
    pen.line([(x + 0.004, y) for x, y in path], width=0.004, value=1.0)  # radiopaque stripe
    c.add(0.6 * f.conspicuity * pen.result())
    return [inst]


def central_venous_catheter(c: Canvas, f: Finding, rng) -> list[Instance]:
    cx, cy = c.geo.carina()
    tip_y = cy + CATHETER_TIP_DROP.get(f.tip or "mid SVC", 0.0)
    variant = f.variant or "right internal jugular"
    a = c.geo.t.apex_y
    if c.frontal:
        svc = cx - 0.04
        routes = {
            "right internal jugular": [(svc - 0.05, 0.0), (svc - 0.04, a + 0.03), (svc - 0.01, a + 0.12),
                                       (svc, tip_y)],
            "left internal jugular": [(cx + 0.09, 0.0), (cx + 0.07, a + 0.05), (cx + 0.01, a + 0.12),
                                      (svc, a + 0.18), (svc, tip_y)],
            "right subclavian": [(cx - 0.3, a - 0.01), (cx - 0.2, a + 0.03), (svc - 0.02, a + 0.09),
                                 (svc, tip_y)],
            "left subclavian": [(cx + 0.3, a - 0.01), (cx + 0.17, a + 0.04), (cx + 0.04, a + 0.1),
                                (svc, a + 0.16), (svc, tip_y)],
            "right PICC": [(0.0, a + 0.22), (cx - 0.4, a + 0.1), (cx - 0.24, a + 0.03),
                           (svc - 0.03, a + 0.08), (svc, tip_y)],
            "left PICC": [(1.0, a + 0.22), (cx + 0.4, a + 0.1), (cx + 0.2, a + 0.03),
                          (cx + 0.03, a + 0.1), (svc, a + 0.17), (svc, tip_y)],
        }
        path = catmull_rom(routes[variant], 10)
    else:
        path = catmull_rom([(0.42, 0.0), (0.45, a + 0.1), (0.46, tip_y - 0.05), (0.45, tip_y)], 8)
    return [_stroke(c, path, 0.006, 0.6, f)]


def pacemaker(c: Canvas, f: Finding, rng) -> list[Instance]:
    side = -1 if f.laterality == "right" else 1
    cx, cy = c.geo.carina()
    a = c.geo.t.apex_y
    hx, hy, hw, hh = c.geo.heart_box(c.ctr)
    pen = Pen(c.size)
    mask_pen = Pen(c.size, supersample=1)
    leads = []
    if c.frontal:
        gx, gy = cx + side * 0.25, a + 0.08
        pen.ellipse(gx, gy, 0.042, 0.03)
        mask_pen.ellipse(gx, gy, 0.05, 0.038)
        entry = [(gx, gy), (cx + side * 0.15, a + 0.03), (cx + side * 0.06, a + 0.08), (cx - 0.04, cy)]
        leads.append(entry + [(cx - 0.06, cy + 0.1), (cx - 0.03, cy + 0.16), (cx - 0.01, cy + 0.13)])
        if f.variant != "single":
            leads.append(entry + [(cx - 0.05, cy + 0.12), (hx + 0.2 * hw, hy + 0.3 * hh),
                                  (hx + 0.6 * hw, hy + 0.45 * hh)])
    else:
        gx, gy = 0.17, a + 0.12
        pen.ellipse(gx, gy, 0.018, 0.035)
        mask_pen.ellipse(gx, gy, 0.026, 0.043)
        entry = [(gx, gy), (0.3, a + 0.1), (0.45, cy)]
        leads.append(entry + [(0.4, cy + 0.12), (0.32, hy)])
        if f.variant != "single":
            leads.append(entry + [(0.43, cy + 0.15), (0.38, hy + 0.5 * hh)])
    generator = pen.result()
    c.add(2.0 * generator)          # metal: near-white regardless of hedging
    for lead in leads:
        path = catmull_rom(lead, 8)
        lead_pen = Pen(c.size)
        lead_pen.line(path, width=0.005, value=1.0)
        c.add(0.9 * lead_pen.result())
        mask_pen.line(path, width=0.016, value=1.0)
    return [Instance(f.concept, f.laterality, f.severity, f.certainty, mask_pen.result() > 0.5)]


def nasogastric_tube(c: Canvas, f: Finding, rng) -> list[Instance]:
    cx, cy = c.geo.carina()
    if c.frontal:
        sx, sy = c.geo.stomach()
        dome = c.geo.dome_y(1)
        path = catmull_rom([(cx + 0.012, 0.0), (cx + 0.016, cy), (cx + 0.03, dome - 0.05),
                            (cx + 0.07, dome + 0.04), (sx, sy + 0.01), (sx + 0.03, sy - 0.01)], 10)
    else:
        dome = c.geo.t.dome_left
        path = catmull_rom([(0.48, 0.0), (0.57, cy), (0.56, dome - 0.05), (0.5, dome + 0.05),
                            (0.45, dome + 0.07)], 10)
    return [_stroke(c, path, 0.008, 0.45, f)]
