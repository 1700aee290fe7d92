"""Compose one radiograph (and its finding masks) from anatomy layers plus the study's findings."""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .anatomy import LEFT, RIGHT, FrontalGeometry, LateralGeometry, Layers, Thorax
from .raster import affine, blur, smooth_noise
from .truth import Finding, Study

FIELD_OF_VIEW_MM = 400.0  # width of the image in mm; sets PixelSpacing and lesion sizes

# Per-view physics: how much of the lung air the heart hides, attenuation of vessels, contrast.
VIEW_PROFILES = {
    "PA": {"heart_occlusion": 0.72, "vessel": 0.32, "air": 1.5, "gain": 0.85, "noise": 0.011},
    "AP": {"heart_occlusion": 0.72, "vessel": 0.32, "air": 1.42, "gain": 0.88, "noise": 0.016},
    "LATERAL": {"heart_occlusion": 0.45, "vessel": 0.28, "air": 1.35, "gain": 0.8, "noise": 0.013},
}


@dataclass
class Instance:
    """One annotated region of one finding in one image (bilateral findings give one per side)."""

    concept: str
    laterality: str | None
    severity: str | None
    certainty: str
    mask: np.ndarray  # bool, image shaped


class Canvas:
    """Mutable attenuation edits that finding renderers apply on top of the normal anatomy."""

    def __init__(self, geometry, layers: Layers, view: str, ctr: float):
        self.geo = geometry
        self.layers = layers
        self.view = view
        self.frontal = view != "LATERAL"
        self.ctr = ctr
        self.size = geometry.size
        shape = layers.body.shape
        self.extra = np.zeros(shape, np.float32)       # added attenuation (fluid, lesions, devices)
        self.air_keep = np.ones(shape, np.float32)     # fraction of lung air left (fluid displaces)
        self.vessel_keep = np.ones(shape, np.float32)  # 0 where markings vanish (pneumothorax)
        self.vessel_haze = np.zeros(shape, np.float32)  # 1 where vessels are indistinct (edema)

    def units(self, mm: float) -> float:
        return mm / FIELD_OF_VIEW_MM

    def px(self, normalised: float) -> float:
        return normalised * self.size

    def displace_air(self, fraction: np.ndarray) -> None:
        self.air_keep *= 1.0 - np.clip(fraction, 0.0, 1.0)

    def add(self, density: np.ndarray) -> None:
        self.extra += density

    def compose(self, rng: np.random.Generator) -> np.ndarray:
        prof = VIEW_PROFILES[self.view]
        L = self.layers
        heart = self.geo.heart_mask(self.ctr)
        air_keep = self.air_keep * (1.0 - prof["heart_occlusion"] * heart)
        vessels = L.vessels
        if self.vessel_haze.any():
            vessels = vessels * (1 - self.vessel_haze) + blur(vessels, 0.006 * self.size) * self.vessel_haze
        mu = (L.body + L.bone + self.extra + 0.06 * heart
              + prof["vessel"] * vessels * self.vessel_keep * np.minimum(air_keep, 1.0)
              - prof["air"] * L.air * air_keep - L.fixed_air)
        gain = prof["gain"] * float(np.exp(rng.normal(0, 0.05)))
        bright = 1.0 - np.exp(-gain * np.maximum(mu, 0.0))
        bright *= 1.0 + 0.025 * smooth_noise(rng, self.size, 0.35)   # uneven exposure
        grain = rng.standard_normal(bright.shape).astype(np.float32)
        grain = 0.6 * grain + 0.8 * blur(grain, 0.8)
        bright += prof["noise"] * float(rng.uniform(0.8, 1.3)) * grain
        gamma = float(np.exp(rng.normal(0, 0.06)))
        out = np.clip(bright / 0.96, 0.0, 1.0) ** gamma
        return (out * 255.0 + 0.5).astype(np.uint8)


def sides_of(finding: Finding) -> list[int]:
    return {"left": [LEFT], "right": [RIGHT], "bilateral": [RIGHT, LEFT]}.get(finding.laterality or "", [])


def side_name(side: int) -> str:
    return "right" if side == RIGHT else "left"


class SubjectRenderer:
    """Renders all images of one subject; caches the normal anatomy per view across studies."""

    def __init__(self, thorax: Thorax, size: int):
        self.thorax = thorax
        self.size = size
        self._bases: dict[str, tuple[object, Layers]] = {}

    def base(self, view: str):
        if view not in self._bases:
            geo = LateralGeometry(self.thorax, self.size) if view == "LATERAL" \
                else FrontalGeometry(self.thorax, self.size, view)
            self._bases[view] = (geo, geo.base_layers())
        return self._bases[view]

    def render(self, study: Study, view: str, rng: np.random.Generator,
               findings: list[Finding] | None = None,
               ctr: float | None = None) -> tuple[np.ndarray, list[Instance]]:
        """Image and instances of one view. `findings`/`ctr` override the study's (tests use this
        to render the same film with a finding left out: noise and exposure stay identical)."""
        from .draw import draw_finding  # local import: draw imports render

        # each finding and the film noise get their own stream: leaving one finding out changes
        # nothing else in the image
        base_seed = int(rng.integers(2**63))
        noise_rng = np.random.default_rng([base_seed, 0])
        geo, layers = self.base(view)
        canvas = Canvas(geo, layers, view, study.ctr if ctr is None else ctr)
        instances: list[Instance] = []
        for finding in (study.findings if findings is None else findings):
            if finding.drawn:
                finding_rng = np.random.default_rng([base_seed, zlib.crc32(finding.concept.encode())])
                instances.extend(draw_finding(canvas, finding, finding_rng))
        image = canvas.compose(noise_rng)
        # positioning differs a little from film to film (also between a subject's studies)
        angle = float(noise_rng.normal(0, 1.2))
        scale = float(np.exp(noise_rng.normal(0, 0.02)))
        shift = (float(noise_rng.normal(0, 0.012)) * self.size, float(noise_rng.normal(0, 0.012)) * self.size)
        image = affine(image, angle, scale, shift)
        for inst in instances:
            inst.mask = affine(inst.mask.astype(np.uint8), angle, scale, shift, nearest=True) > 0
        return image, [i for i in instances if i.mask.any()]
