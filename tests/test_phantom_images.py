"""The images look like chest radiographs: frontal views are near-symmetric with dark lungs either
side of a bright mediastinum; lateral views have a different, asymmetric shape."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.phantom.testing import corpus, read_truth


@pytest.fixture(scope="module")
def films():
    out = corpus(n=40)
    frontal, lateral = [], []
    for study in read_truth(out):
        for image in study["images"]:
            with Image.open(out / image["path"]) as im:
                arr = np.asarray(im, dtype=np.float32)
            (lateral if image["view"] == "LATERAL" else frontal).append(arr)
    assert frontal and lateral
    return frontal, lateral


def _asymmetry(arr: np.ndarray) -> float:
    return float(np.abs(arr - arr[:, ::-1]).mean())


def test_lateral_views_are_shaped_differently_from_frontal_views(films):
    frontal, lateral = films
    frontal_asym = np.median([_asymmetry(a) for a in frontal])
    lateral_asym = np.median([_asymmetry(a) for a in lateral])
    assert lateral_asym > 2.0 * frontal_asym, (frontal_asym, lateral_asym)
    # the mean lateral film differs clearly from the mean frontal film
    assert np.abs(np.mean(frontal, axis=0) - np.mean(lateral, axis=0)).mean() > 20


def test_frontal_anatomy_contrast(films):
    frontal, _ = films
    n = frontal[0].shape[0]
    for arr in frontal:
        def patch(x, y, r=0.03):
            return arr[int((y - r) * n):int((y + r) * n), int((x - r) * n):int((x + r) * n)].mean()
        lungs = min(patch(0.3, 0.38), patch(0.7, 0.38))
        mediastinum = patch(0.5, 0.3)
        abdomen = patch(0.5, 0.88)
        corner = arr[: n // 20, : n // 20].mean()
        assert mediastinum - lungs > 40, (mediastinum, lungs)
        assert abdomen - lungs > 40
        assert corner < 60
        assert 20 < arr.std() < 100


def test_images_are_not_identical_between_subjects(films):
    frontal, _ = films
    assert np.abs(frontal[0] - frontal[-1]).mean() > 3
