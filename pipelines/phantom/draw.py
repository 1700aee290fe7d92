"""Dispatch a Finding to its renderer (lesions.py / devices.py)."""
from __future__ import annotations

from . import devices, lesions
from .render import Canvas, Instance
from .truth import Finding

RENDERERS = {
    "pleural_effusion": lesions.pleural_effusion,
    "pneumothorax": lesions.pneumothorax,
    "pleural_thickening": lesions.pleural_thickening,
    "cardiomegaly": lesions.cardiomegaly,
    "enlarged_cardiomediastinum": lesions.enlarged_cardiomediastinum,
    "lung_nodule": lesions.lung_nodule,
    "lung_mass": lesions.lung_mass,
    "consolidation": lesions.consolidation,
    "lung_opacity": lesions.lung_opacity,
    "atelectasis": lesions.atelectasis,
    "pulmonary_edema": lesions.pulmonary_edema,
    "rib_fracture": lesions.rib_fracture,
    "endotracheal_tube": devices.endotracheal_tube,
    "central_venous_catheter": devices.central_venous_catheter,
    "pacemaker": devices.pacemaker,
    "nasogastric_tube": devices.nasogastric_tube,
}


def draw_finding(canvas: Canvas, finding: Finding, rng) -> list[Instance]:
    renderer = RENDERERS.get(finding.concept)
    if renderer is None:      # interpretations such as pneumonia have no image of their own
        return []
    return renderer(canvas, finding, rng)
