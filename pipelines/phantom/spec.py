"""Load the YAML catalogue and templates once per process (they are data, reviewed by humans)."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).with_name("templates")
TEMPLATE_FILES = ("findings.yaml", "phrases.yaml", "report.yaml")

CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Lung Opacity",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
)


@lru_cache(maxsize=4)
def load(template_dir: str | None = None) -> dict:
    """{'findings': ..., 'phrases': ..., 'report': ...} parsed from the template folder."""
    folder = Path(template_dir) if template_dir else TEMPLATE_DIR
    out = {}
    for name in TEMPLATE_FILES:
        with open(folder / name, encoding="utf-8") as fh:
            out[name.removesuffix(".yaml")] = yaml.safe_load(fh)
    _validate(out)
    return out


def templates_hash(template_dir: str | None = None) -> str:
    folder = Path(template_dir) if template_dir else TEMPLATE_DIR
    h = hashlib.sha256()
    for name in TEMPLATE_FILES:
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def concept_specs(spec: dict) -> dict:
    return spec["findings"]["concepts"]


def chexpert_of(spec: dict, concept: str) -> str | None:
    return concept_specs(spec).get(concept, {}).get("chexpert")


def drawable_concepts(spec: dict) -> list[str]:
    """Concepts that can have masks/boxes (COCO categories), in catalogue order."""
    return [c for c, s in concept_specs(spec).items() if not s.get("interpretation")]


def _validate(spec: dict) -> None:
    concepts = concept_specs(spec)
    phrases = spec["phrases"]["concepts"]
    locations = spec["findings"]["lung_locations"]
    for concept, s in concepts.items():
        if s["chexpert"] not in CHEXPERT_LABELS:
            raise ValueError(f"{concept}: unknown CheXpert label {s['chexpert']!r}")
        if concept not in phrases:
            raise ValueError(f"{concept}: no wording in phrases.yaml")
        for loc in s.get("locations", {}):
            if loc not in locations or loc not in spec["phrases"]["location_words"]:
                raise ValueError(f"{concept}: location {loc!r} missing from lung_locations/location_words")
    for concept, s in spec["report"]["negations"].items():
        if concept not in concepts:
            raise ValueError(f"negations: unknown concept {concept!r}")
