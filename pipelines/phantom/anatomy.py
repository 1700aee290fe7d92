"""Per-subject thorax geometry and the normal-anatomy layers of frontal and lateral radiographs.

The image model is a projection: every structure contributes attenuation (mu), the lungs remove
it (air), and `render.py` turns the sum into brightness with 1 - exp(-mu). Geometry lives in a
normalised frame (see raster.py). Frontal images follow radiographic convention: the patient's
right is on the image left. Lateral images show the patient facing the image left (anterior left).

Lesions and devices need to know where lobes, the diaphragm, the carina and so on are, so the
geometry classes expose those as methods as well as the base layers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raster import Pen, blur, catmull_rom, ellipse_sdf, grid, smooth_noise, soft_step

RIGHT, LEFT = -1, +1  # patient side -> sign of the image x offset from the midline (frontal view)
SIDES = {"right": RIGHT, "left": LEFT}

# Where each named location sits, in lung-local coordinates shared by both views:
# v runs apex (0) -> costophrenic angle (1); u runs medial (0) -> lateral (1) on the frontal view;
# w runs anterior (0) -> posterior (1) on the lateral view.
ZONES: dict[str, dict[str, tuple[float, float]]] = {
    "upper lobe": {"v": (0.08, 0.42), "u": (0.2, 0.9), "w": (0.25, 0.8)},
    "middle lobe": {"v": (0.5, 0.8), "u": (0.12, 0.7), "w": (0.05, 0.4)},
    "lingula": {"v": (0.5, 0.8), "u": (0.25, 0.85), "w": (0.05, 0.4)},
    "lower lobe": {"v": (0.58, 0.95), "u": (0.2, 0.9), "w": (0.55, 0.95)},
    "base": {"v": (0.72, 0.98), "u": (0.1, 0.95), "w": (0.3, 0.95)},
    "apex": {"v": (0.02, 0.22), "u": (0.2, 0.85), "w": (0.3, 0.8)},
    "mid lung": {"v": (0.38, 0.65), "u": (0.25, 0.9), "w": (0.2, 0.8)},
    "perihilar": {"v": (0.3, 0.62), "u": (0.02, 0.45), "w": (0.3, 0.7)},
    "lung": {"v": (0.1, 0.9), "u": (0.15, 0.9), "w": (0.2, 0.85)},
}


@dataclass(frozen=True)
class Thorax:
    """Body habitus and positioning of one subject; reused by all of the subject's studies."""

    cx: float
    apex_y: float
    dome_right: float
    dome_left: float
    lung_half_width: float
    body_half_width: float
    ctr: float            # normal cardiothoracic ratio of this subject
    habitus: float        # soft-tissue thickness factor
    rib_phase: float
    rib_spacing: float
    carina_y: float
    vessel_seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Thorax":
        dome_right = 0.655 + rng.normal(0, 0.018)
        return cls(
            cx=0.5 + rng.normal(0, 0.01),
            apex_y=0.125 + rng.normal(0, 0.008),
            dome_right=dome_right,
            dome_left=dome_right + 0.025 + rng.normal(0, 0.008),
            lung_half_width=0.36 + rng.normal(0, 0.012),
            body_half_width=0.465 + rng.normal(0, 0.012),
            ctr=float(np.clip(0.445 + rng.normal(0, 0.015), 0.41, 0.48)),
            habitus=float(np.clip(1.0 + rng.normal(0, 0.07), 0.85, 1.2)),
            rib_phase=rng.normal(0, 0.008),
            rib_spacing=0.056 + rng.normal(0, 0.002),
            carina_y=0.345 + rng.normal(0, 0.01),
            vessel_seed=int(rng.integers(2**31)),
        )


@dataclass
class Layers:
    """Attenuation layers of one view; findings edit copies of the *_keep multipliers and `extra`."""

    body: np.ndarray        # soft tissue (mu)
    bone: np.ndarray        # ribs, clavicles, spine, humeri (mu)
    air: np.ndarray         # lung air depth (subtracted)
    vessels: np.ndarray     # lung markings (mu, only where lung air remains)
    fixed_air: np.ndarray   # trachea, gastric bubble (subtracted, never edited)
    lung_field: np.ndarray  # soft mask of both lungs (0..1)


# --------------------------------------------------------------------------------------------
# Frontal (PA / AP)
# --------------------------------------------------------------------------------------------
class FrontalGeometry:
    def __init__(self, thorax: Thorax, size: int, view: str = "PA"):
        self.t = thorax
        self.size = size
        self.view = view
        # AP films are taken closer to the patient: the heart is magnified and the film is framed
        # a little higher; keep the effect small so a normal AP heart never reads as cardiomegaly.
        self.heart_magnification = 1.06 if view == "AP" else 1.0
        self.xx, self.yy = grid(size)
        self.edge = 1.2 / size
        self._cache: dict = {}

    # --- landmarks -------------------------------------------------------------------------
    def dome_y(self, side: int) -> float:
        return self.t.dome_right if side == RIGHT else self.t.dome_left

    def costophrenic_y(self, side: int) -> float:
        return self.dome_y(side) + 0.075

    def hilum(self, side: int) -> tuple[float, float]:
        return self.t.cx + side * 0.1, self.t.apex_y + 0.3 + (0.012 if side == RIGHT else 0.0)

    def carina(self) -> tuple[float, float]:
        return self.t.cx + 0.004, self.t.carina_y

    def stomach(self) -> tuple[float, float]:
        return self.t.cx + 0.16, self.t.dome_left + 0.07

    # --- lungs -------------------------------------------------------------------------------
    def _lateral_extent(self, v):
        half = self.t.lung_half_width
        return 0.2 + (half - 0.2) * (1.0 - (1.0 - np.clip(v, 0.0, 1.0)) ** 2.4)

    def _medial_extent(self, v):
        return 0.058 + 0.025 * np.clip(v, 0.0, 1.0)

    def diaphragm_y(self, x, side: int):
        d_side = side * (np.asarray(x) - self.t.cx)
        return self.dome_y(side) + 1.9 * (d_side - 0.16) ** 2

    def lung_sdf(self, side: int) -> np.ndarray:
        """Signed distance (positive inside) to one lung field (cached: lesions ask repeatedly)."""
        key = ("sdf", side)
        if key not in self._cache:
            self._cache[key] = self._lung_sdf(side)
        return self._cache[key]

    def pleural_distance(self, side: int) -> np.ndarray:
        """Distance from the apical and lateral pleura only (where a pneumothorax collects)."""
        t, xx, yy = self.t, self.xx, self.yy
        d_side = side * (xx - t.cx)
        v = (yy - t.apex_y) / (self.costophrenic_y(side) - t.apex_y)
        lateral = self._lateral_extent(v) - d_side
        top = (yy - (t.apex_y + 5.5 * (d_side - 0.17) ** 2)) * 0.8
        return np.minimum(lateral, top)

    def _lung_sdf(self, side: int) -> np.ndarray:
        t, xx, yy = self.t, self.xx, self.yy
        d_side = side * (xx - t.cx)
        v = (yy - t.apex_y) / (self.costophrenic_y(side) - t.apex_y)
        lateral = self._lateral_extent(v) - d_side
        medial = d_side - self._medial_extent(v)
        top = (yy - (t.apex_y + 5.5 * (d_side - 0.17) ** 2)) * 0.8
        bottom = self.diaphragm_y(xx, side) - yy
        sdf = np.minimum(np.minimum(lateral, medial), np.minimum(top, bottom))
        if side == LEFT:  # the aortic knob indents the left upper mediastinal border
            knob = ellipse_sdf(xx, yy, t.cx + 0.052, t.apex_y + 0.165, 0.032, 0.028)
            sdf = np.minimum(sdf, -knob)
        return sdf

    def lung_uv(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """Lung-local (u, v) maps, see ZONES (cached)."""
        key = ("uv", side)
        if key not in self._cache:
            self._cache[key] = self._lung_uv(side)
        return self._cache[key]

    def _lung_uv(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        t, xx, yy = self.t, self.xx, self.yy
        d_side = side * (xx - t.cx)
        v = (yy - t.apex_y) / (self.costophrenic_y(side) - t.apex_y)
        med, lat = self._medial_extent(v), self._lateral_extent(v)
        u = (d_side - med) / np.maximum(lat - med, 1e-3)
        return u, v

    def point(self, side: int, u: float, v: float) -> tuple[float, float]:
        """Image (x, y) of lung-local (u, v) (inverse of lung_uv)."""
        med, lat = self._medial_extent(v), self._lateral_extent(v)
        x = self.t.cx + side * (med + u * (lat - med))
        y = self.t.apex_y + v * (self.costophrenic_y(side) - self.t.apex_y)
        return float(x), float(y)

    def zone_mask(self, side: int, zone: str) -> np.ndarray:
        z = ZONES[zone]
        u, v = self.lung_uv(side)
        inside = self.lung_sdf(side) > 0.01
        return inside & (v >= z["v"][0]) & (v <= z["v"][1]) & (u >= z["u"][0]) & (u <= z["u"][1])

    # --- heart -------------------------------------------------------------------------------
    def heart_box(self, ctr: float) -> tuple[float, float, float, float]:
        """(centre x, centre y, half width, half height) of the cardiac silhouette for a CTR."""
        t = self.t
        width = ctr * 2 * t.lung_half_width * self.heart_magnification
        half_h = 0.125 + 0.25 * (ctr - 0.44)
        return t.cx + 0.16 * width, t.dome_left - 0.06, width / 2, half_h

    def heart_mask(self, ctr: float) -> np.ndarray:
        key = ("heart", ctr)
        if key not in self._cache:
            hx, hy, hw, hh = self.heart_box(ctr)
            sdf = ellipse_sdf(self.xx, self.yy, hx, hy, hw, hh, power=2.3)
            self._cache[key] = soft_step(sdf, 0.012)
        return self._cache[key]

    # --- base layers -------------------------------------------------------------------------
    def base_layers(self) -> Layers:
        t, xx, yy, size = self.t, self.xx, self.yy, self.size
        rng = np.random.default_rng(t.vessel_seed)

        # Soft tissue: an elliptic cross-section whose width follows neck, shoulders, chest.
        neck = 0.11
        shoulder = np.clip((yy - 0.02) / 0.12, 0.0, 1.0) ** 0.6
        half_w = neck + (t.body_half_width + 0.04 - neck) * shoulder
        half_w = half_w - 0.04 * np.clip((yy - 0.2) / 0.8, 0.0, 1.0)
        across = np.clip(1.0 - ((xx - t.cx) / half_w) ** 2, 0.0, 1.0)
        body = 2.15 * t.habitus * across ** 0.85 * soft_step(half_w - np.abs(xx - t.cx), 0.01)
        # arms at the image edges (rotated out of the field on PA, closer in on AP)
        arm_x = 0.5 + (0.455 if self.view == "PA" else 0.43)
        for sign in (-1, 1):
            ax = t.cx + sign * (arm_x - 0.5)
            arm = ellipse_sdf(xx, yy, ax + sign * 0.05, 0.6, 0.07, 0.65)
            body = np.maximum(body, 0.9 * t.habitus * np.clip(arm / 0.06, 0, 1) ** 0.7)

        # Lungs: air depth grows away from the pleural surfaces, deeper towards the bases.
        lung_field = np.zeros_like(xx)
        air = np.zeros_like(xx)
        for side in (RIGHT, LEFT):
            sdf = self.lung_sdf(side)
            lung_field = np.maximum(lung_field, soft_step(sdf, self.edge))
            v = np.clip((yy - t.apex_y) / (self.costophrenic_y(side) - t.apex_y), 0, 1)
            depth = np.clip(sdf / 0.06, 0.0, 1.0) ** 0.6 * (0.78 + 0.3 * v)
            air = np.maximum(air, depth * soft_step(sdf, self.edge))
        air *= 1.0 + 0.06 * smooth_noise(rng, size, 0.12)

        bone = self._bones(rng)
        vessels = self._vessels(rng) * lung_field

        # Trachea and main bronchi, gastric bubble: air outside the lung fields.
        pen = Pen(size)
        cx, cy = self.carina()
        pen.line([(cx - 0.004, 0.0), (cx - 0.002, t.apex_y), (cx, cy)], width=0.03)
        pen.line([(cx, cy), (cx - 0.05, cy + 0.04), (cx - 0.085, cy + 0.07)], width=0.017)
        pen.line([(cx, cy), (cx + 0.055, cy + 0.05), (cx + 0.09, cy + 0.085)], width=0.016)
        sx, sy = self.stomach()
        pen.ellipse(sx, sy, 0.055 + rng.uniform(-0.01, 0.01), 0.032, value=1.0)
        fixed_air = blur(pen.result(), 0.004 * size) * 0.55
        return Layers(body=body, bone=bone, air=air, vessels=vessels, fixed_air=fixed_air,
                      lung_field=lung_field)

    def _bones(self, rng) -> np.ndarray:
        t, size = self.t, self.size
        pen = Pen(size)
        # Posterior ribs: from the spine, up-and-out briefly, then sweeping laterally and down.
        for side in (RIGHT, LEFT):
            for i in range(10):
                pts = self.rib_path(side, i)
                w = self.rib_width(i)
                pen.line(pts, width=w, value=0.3)
                pen.line(pts, width=w * 0.5, value=0.18)   # denser cortical edges than centre
            # Anterior ribs: fainter, from the lateral wall down and medially to cartilage.
            for i in range(6):
                y0 = t.apex_y + 0.06 + t.rib_phase + i * t.rib_spacing * 1.25
                ctrl = [(t.cx + side * (t.lung_half_width - 0.01), y0),
                        (t.cx + side * 0.25, y0 + 0.035),
                        (t.cx + side * 0.13, y0 + 0.085)]
                pen.line(catmull_rom(ctrl, 6), width=0.02, value=0.1)
            # Clavicle: S-shaped, sternal end low and medial.
            ctrl = [(t.cx + side * 0.03, t.apex_y + 0.085), (t.cx + side * 0.14, t.apex_y + 0.06),
                    (t.cx + side * 0.26, t.apex_y + 0.015), (t.cx + side * 0.37, t.apex_y - 0.005)]
            pen.line(catmull_rom(ctrl, 8), width=0.022, value=0.5)
            # Scapular margin at the shoulder.
            ctrl = [(t.cx + side * 0.42, t.apex_y + 0.02), (t.cx + side * 0.36, t.apex_y + 0.14),
                    (t.cx + side * 0.33, t.apex_y + 0.3)]
            pen.line(catmull_rom(ctrl, 6), width=0.006, value=0.3)
        bone = pen.result()
        # Spine: vertebral bodies with darker disc spaces, clearest above the heart.
        xx, yy = self.xx, self.yy
        column = soft_step(0.036 - np.abs(xx - t.cx), 0.006) * np.clip(1.2 - yy, 0.3, 1.0)
        discs = 0.75 + 0.25 * np.cos(2 * np.pi * (yy - t.rib_phase) / 0.048) ** 2
        bone += 0.22 * column * discs
        pedicles = soft_step(0.008 - np.abs(np.abs(xx - t.cx) - 0.025), 0.004)
        bone += 0.1 * pedicles * (np.cos(2 * np.pi * (yy - t.rib_phase - 0.012) / 0.048) > 0.3)
        return blur(bone, 0.0025 * size)

    def rib_path(self, side: int, index: int) -> list[tuple[float, float]]:
        """Centre line of posterior rib `index` (0 = first rib) on one side."""
        t = self.t
        y0 = t.apex_y - 0.025 + t.rib_phase + index * t.rib_spacing
        reach = min(t.lung_half_width - 0.005, 0.2 + 0.045 * index)
        ctrl = []
        for s in np.linspace(0, 1, 7):
            x = t.cx + side * (0.035 + s * reach - 0.025 * s ** 4)   # curls back at the chest wall
            y = y0 - 0.03 * np.sin(np.pi * s * 0.6) + (0.12 + 0.006 * index) * s ** 1.8 + 0.03 * s ** 5
            ctrl.append((x, y))
        return catmull_rom(ctrl, 6)

    @staticmethod
    def rib_width(index: int) -> float:
        return 0.016 + 0.0015 * index

    def _vessels(self, rng) -> np.ndarray:
        """Branching pulmonary vessels radiating from the hila, tapering to the periphery."""
        pen = Pen(self.size)
        for side in (RIGHT, LEFT):
            hx, hy = self.hilum(side)
            pen.ellipse(hx, hy, 0.03, 0.05, value=0.7)
            for angle in np.linspace(-2.6, 2.6, 9) + rng.normal(0, 0.12, 9):
                self._branch(pen, rng, hx, hy, angle, side, 0.17, 0.011, depth=0)
        return blur(pen.result(), 0.0015 * self.size)

    def _branch(self, pen, rng, x, y, angle, side, length, width, depth):
        # angle 0 points laterally, +-pi/2 up/down, measured on the patient's side
        steps = 5
        angles = angle + np.cumsum(rng.normal(0, 0.12, steps))
        xs = x + np.concatenate([[0.0], np.cumsum(side * np.cos(angles) * length / steps)])
        ys = y - np.concatenate([[0.0], np.cumsum(np.sin(angles) * length / steps)])
        pen.line(list(zip(xs.tolist(), ys.tolist())), width=width, value=0.7 - 0.12 * depth)
        x, y, angle = float(xs[-1]), float(ys[-1]), float(angles[-1])
        if depth < 2:
            for turn in (-0.45, 0.45):
                self._branch(pen, rng, x, y, angle + turn + rng.normal(0, 0.15), side,
                             length * 0.62, width * 0.6, depth + 1)


# --------------------------------------------------------------------------------------------
# Lateral
# --------------------------------------------------------------------------------------------
class LateralGeometry:
    """Left lateral view, patient facing the image left; both lungs are superimposed."""

    def __init__(self, thorax: Thorax, size: int):
        self.t = thorax
        self.size = size
        self.xx, self.yy = grid(size)
        self.edge = 1.2 / size
        self.apex_y = thorax.apex_y + 0.01
        self.dome_x = 0.4
        self.sulcus_y = max(thorax.dome_right, thorax.dome_left) + 0.135
        self._cache: dict = {}

    def anterior_wall(self, y):
        return 0.16 + 0.05 * ((np.asarray(y) - 0.45) / 0.45) ** 2

    def posterior_wall(self, y):
        return 0.93 - 0.03 * ((np.asarray(y) - 0.5) / 0.5) ** 2

    def lung_front(self, y):
        return self.anterior_wall(y) + 0.045

    def lung_back(self, y):
        return self.posterior_wall(y) - 0.08

    def diaphragm_y(self, x, side: int = RIGHT):
        """Hemidiaphragm: high anteriorly, lowest at the posterior costophrenic sulcus."""
        dome = (self.t.dome_right if side == RIGHT else self.t.dome_left) - 0.03
        x = np.asarray(x)
        # posterior limb reaches the costophrenic sulcus at the back of the lung
        k_post = (self.sulcus_y - dome) / (self.lung_back(self.sulcus_y) - self.dome_x) ** 2
        k = np.where(x < self.dome_x, 1.0, k_post)
        return dome + k * (x - self.dome_x) ** 2

    def lung_sdf(self) -> np.ndarray:
        if "sdf" not in self._cache:
            self._cache["sdf"] = self._lung_sdf()
        return self._cache["sdf"]

    def _lung_sdf(self) -> np.ndarray:
        xx, yy = self.xx, self.yy
        front = xx - self.lung_front(yy)
        back = self.lung_back(yy) - xx
        top = (yy - (self.apex_y + 2.2 * (xx - 0.55) ** 2)) * 0.8
        bottom = np.maximum(self.diaphragm_y(xx, RIGHT), self.diaphragm_y(xx, LEFT)) - yy
        return np.minimum(np.minimum(front, back), np.minimum(top, bottom))

    def lung_vw(self) -> tuple[np.ndarray, np.ndarray]:
        if "vw" not in self._cache:
            self._cache["vw"] = self._lung_vw()
        return self._cache["vw"]

    def _lung_vw(self) -> tuple[np.ndarray, np.ndarray]:
        yy = self.yy
        v = (yy - self.apex_y) / (self.sulcus_y - 0.06 - self.apex_y)
        front, back = self.lung_front(yy), self.lung_back(yy)
        w = (self.xx - front) / np.maximum(back - front, 1e-3)
        return v, w

    def point(self, w: float, v: float) -> tuple[float, float]:
        y = self.apex_y + v * (self.sulcus_y - 0.06 - self.apex_y)
        front, back = self.lung_front(y), self.lung_back(y)
        return float(front + w * (back - front)), float(y)

    def carina(self) -> tuple[float, float]:
        return 0.52, self.t.carina_y + 0.01

    def spine_x(self, y):
        return 0.78 - 0.03 * np.sin(np.pi * np.clip(np.asarray(y), 0, 1))

    def heart_box(self, ctr: float) -> tuple[float, float, float, float]:
        # cardiomegaly grows the heart backwards (into the retrocardiac space) and up
        grow = (ctr - 0.43) / 0.2
        half_w = 0.15 * (1 + 0.9 * grow)
        half_h = 0.13 * (1 + 0.45 * grow)
        cx = self.lung_front(0.55) - 0.02 + half_w
        return cx, self.t.dome_left - 0.075, half_w, half_h

    def heart_mask(self, ctr: float) -> np.ndarray:
        key = ("heart", ctr)
        if key not in self._cache:
            hx, hy, hw, hh = self.heart_box(ctr)
            # tilted: the inferior border lies on the diaphragm, the posterior border slopes forwards
            xr = (self.xx - hx) * 0.94 + (self.yy - hy) * 0.34
            yr = -(self.xx - hx) * 0.34 + (self.yy - hy) * 0.94
            self._cache[key] = soft_step(ellipse_sdf(xr, yr, 0.0, 0.0, hw, hh, power=2.1), 0.03)
        return self._cache[key]

    def base_layers(self) -> Layers:
        t, xx, yy, size = self.t, self.xx, self.yy, self.size
        rng = np.random.default_rng(t.vessel_seed + 1)
        front, back = self.anterior_wall(yy), self.posterior_wall(yy)
        front = np.where(yy < 0.1, front + (0.1 - yy) * 1.8, front)
        mid, half = (front + back) / 2, (back - front) / 2
        across = np.clip(1 - ((xx - mid) / half) ** 2, 0, 1)
        # the lateral beam crosses the whole chest width: more soft tissue than a frontal view
        body = 2.5 * t.habitus * np.sqrt(across) * soft_step(half - np.abs(xx - mid), 0.01)
        # raised arms overlap the upper anterior chest
        arms = np.clip(ellipse_sdf(xx, yy, 0.3, 0.0, 0.24, 0.22) / 0.08, 0, 1)
        body += 0.5 * arms

        sdf = self.lung_sdf()
        lung_field = soft_step(sdf, self.edge)
        v = np.clip((yy - self.apex_y) / (self.sulcus_y - self.apex_y), 0, 1)
        air = np.clip(sdf / 0.07, 0, 1) ** 0.6 * (0.85 + 0.25 * v) * lung_field * 1.2
        # retrosternal and retrocardiac clear spaces are the most lucent parts
        air *= 1.0 + 0.06 * smooth_noise(rng, size, 0.12)

        pen = Pen(size)
        # vertebral bodies (kyphotic column) with disc spaces and posterior elements
        y = 0.05
        while y < 1.0:
            h = 0.038 + 0.006 * y
            x0 = float(self.spine_x(y))
            pen.polygon([(x0 - 0.045, y), (x0 + 0.035, y + 0.004), (x0 + 0.035, y + h),
                         (x0 - 0.045, y + h - 0.002)], value=0.45)
            pen.line([(x0 + 0.04, y + h * 0.3), (x0 + 0.09, y + h * 0.8)], width=0.012, value=0.2)
            y += h + 0.009
        # sternum
        sternum = [(float(self.anterior_wall(s)) + 0.012, s) for s in np.linspace(0.17, 0.55, 6)]
        pen.line(sternum, width=0.018, value=0.35)
        # posterior ribs, seen obliquely and doubled (left and right do not superimpose exactly)
        for i in range(10):
            y0 = self.apex_y + 0.02 + t.rib_phase + i * t.rib_spacing
            for shift in (0.0, 0.018):
                ctrl = [(float(self.posterior_wall(y0)) - 0.01, y0 + shift),
                        (0.72, y0 + 0.05 + shift), (0.6, y0 + 0.11 + shift)]
                pen.line(catmull_rom(ctrl, 6), width=0.012, value=0.1)
        bone = blur(pen.result(), 0.0025 * size)

        vpen = Pen(size)
        hx, hy = 0.53, t.carina_y + 0.07
        vpen.ellipse(hx, hy, 0.045, 0.055, value=0.5)
        for angle in np.linspace(0, 2 * np.pi, 14, endpoint=False) + rng.normal(0, 0.3, 14):
            x, yv = hx, hy
            pts = [(x, yv)]
            for _ in range(4 + int(rng.integers(3))):
                angle += rng.normal(0, 0.25)
                x += np.cos(angle) * 0.03
                yv += np.sin(angle) * 0.03
                pts.append((x, yv))
            vpen.line(pts, width=0.005, value=0.4)
        vessels = blur(vpen.result(), 0.0015 * size) * lung_field

        apen = Pen(size)
        cx, cy = self.carina()
        apen.line(catmull_rom([(0.4, 0.0), (0.45, 0.15), (cx, cy)], 8), width=0.03)
        apen.ellipse(0.47, t.dome_left + 0.06, 0.05, 0.03)  # gastric bubble under the dome
        fixed_air = blur(apen.result(), 0.004 * size) * 0.5
        return Layers(body=body, bone=bone, air=air, vessels=vessels, fixed_air=fixed_air,
                      lung_field=lung_field)
