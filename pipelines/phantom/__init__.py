"""Synthetic chest-radiograph benchmark ("phantom"): paired images, reports, masks and boxes.

Ground truth is known by construction: cohort.py samples what each study shows (from
templates/findings.yaml), report.py words it (templates/phrases.yaml, report.yaml), and
anatomy.py / lesions.py / devices.py draw it. generate.py writes a MIMIC-CXR-style corpus:

    python -m pipelines.phantom OUT --n 300 --seed 0 [--size 256] [--workers N] [--dicom] [--jpeg]

See data_cards/phantom.md for the layout and the meaning of every file.
"""
from .generate import Options, generate

__all__ = ["Options", "generate"]
