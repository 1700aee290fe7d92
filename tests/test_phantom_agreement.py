"""Agreement between the generator's truth, labels, report text, masks, boxes and pixels."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipelines.phantom import cohort, ids, spec as spec_mod
from pipelines.phantom.labels import chexpert_labels, csv_value
from pipelines.phantom.raster import bbox
from pipelines.phantom.render import SubjectRenderer
from pipelines.phantom.testing import corpus, read_csv, read_truth

HEDGE_CUES = re.compile(r"possible|cannot be excluded|cannot exclude|may |questionable|concerning|"
                        r"suspicious|could|possibly", re.I)
NEGATION_CUES = re.compile(r"\bno\b|\bnot\b|without|normal|unremarkable|intact|clear|resolved|resolution|no longer",
                           re.I)
CHANGE_CUES = {"new": r"\bnew|newly|development", "increased": r"increase", "decreased": r"decrease",
               "unchanged": r"unchanged|stable|remains", "resolved": r"resolved|resolution|no longer"}


@pytest.fixture(scope="module")
def out():
    return corpus(n=40)


@pytest.fixture(scope="module")
def spec():
    return spec_mod.load()


def test_chexpert_csv_equals_labels_from_truth(out, spec):
    rows = {r["study_id"]: r for r in read_csv(out / "mimic-cxr-2.0.0-chexpert.csv")}
    for study in read_truth(out):
        expected = chexpert_labels(spec, [(f["concept"], f["certainty"]) for f in study["findings"]])
        row = rows[study["study_id"]]
        assert {k: row[k] for k in expected} == {k: csv_value(v) for k, v in expected.items()}, study["study_id"]


def test_every_truth_finding_is_worded_with_its_certainty(out):
    for study in read_truth(out):
        stated = {(m["concept"], m["certainty"]) for m in study["mentions"]}
        truth = {(f["concept"], f["certainty"]) for f in study["findings"]}
        assert stated == truth, study["study_id"]
        report = (out / study["report_path"]).read_text()
        flat = " ".join(report.split())
        per_sentence: dict[str, int] = {}
        for m in study["mentions"]:
            per_sentence[m["sentence"]] = per_sentence.get(m["sentence"], 0) + 1
        for m in study["mentions"]:
            assert m["sentence"] in flat
            if per_sentence[m["sentence"]] > 1 and m["certainty"] != "negative":
                continue      # "X, concerning for pneumonia.": the cue belongs to the other concept
            if m["certainty"] == "uncertain":
                assert HEDGE_CUES.search(m["sentence"]), m
            elif m["certainty"] == "negative":
                assert NEGATION_CUES.search(m["sentence"]), m
            else:
                assert not re.search(r"\bno\b|cannot|possible|may ", m["sentence"], re.I), m


def test_attributes_appear_in_the_wording(out):
    for study in read_truth(out):
        for f in study["findings"]:
            sentences = " ".join(m["sentence"] for m in study["mentions"] if m["concept"] == f["concept"]).lower()
            if f["certainty"] == "negative" and f["change"] != "resolved":
                continue
            if f["laterality"] in ("left", "right"):
                implied = f["laterality"] == "left" and "lingul" in sentences   # the lingula is left
                assert f["laterality"] in sentences or implied, (f, sentences)
            if f["severity"] and f["certainty"] == "positive":
                assert f["severity"] in sentences or f"{f['severity'][:-1]}ly" in sentences, (f, sentences)
            if f["size"]:
                assert f["size"] in sentences, (f, sentences)
            if f["change"]:
                assert re.search(CHANGE_CUES[f["change"]], sentences), (f, sentences)


def test_boxes_match_masks_and_drawn_findings(out):
    truth = {r["study_id"]: r for r in read_truth(out)}
    for row in read_csv(out / "boxes.csv"):
        with Image.open(out / row["mask"]) as im:
            mask = np.asarray(im) > 127
        assert bbox(mask) == tuple(int(row[k]) for k in ("x", "y", "w", "h"))
        study = truth[row["study_id"]]
        drawn = {f["concept"]: f for f in study["findings"] if f["certainty"] in ("positive", "uncertain")}
        assert row["finding"] in drawn
        assert row["certainty"] == drawn[row["finding"]]["certainty"]
        if row["view"] != "LATERAL" and row["laterality"] in ("left", "right"):
            # radiographic convention: the patient's right is on the image left
            centre = int(row["x"]) + int(row["w"]) / 2
            assert (centre < mask.shape[1] / 2) == (row["laterality"] == "right"), row


def test_every_drawable_finding_has_a_frontal_box(out, spec):
    boxes = read_csv(out / "boxes.csv")
    drawable = set(spec_mod.drawable_concepts(spec))
    for study in read_truth(out):
        frontal = study["images"][0]["dicom_id"]
        boxed = {b["finding"] for b in boxes if b["dicom_id"] == frontal}
        for f in study["findings"]:
            if f["certainty"] in ("positive", "uncertain") and f["concept"] in drawable:
                assert f["concept"] in boxed, (study["study_id"], f["concept"])
                assert frontal in f["drawn_in"]


def _subject_with(spec, concepts: set[str], seed=0, limit=400):
    """First (subject index, studies) whose first study draws all of `concepts`."""
    for index in range(limit):
        thorax, studies = cohort.sample_subject(spec, seed, index, 1)
        drawn = {f.concept for f in studies[0].findings if f.drawn}
        if concepts <= drawn:
            return index, thorax, studies[0]
    pytest.skip(f"no subject with {concepts} in the first {limit}")


@pytest.mark.parametrize("concept", ["pleural_effusion", "pneumothorax", "consolidation", "lung_opacity",
                                     "atelectasis", "lung_nodule", "lung_mass", "pulmonary_edema",
                                     "endotracheal_tube", "central_venous_catheter", "pacemaker",
                                     "nasogastric_tube", "enlarged_cardiomediastinum"])
def test_finding_pixels_change_inside_its_mask_and_are_visible_at_128px(spec, concept):
    """Render the same film with and without the finding: the change must sit in the mask and be
    large enough for a small model to see (mean >= 6 grey levels inside the mask at 128 px)."""
    index, thorax, study = _subject_with(spec, {concept})
    renderer = SubjectRenderer(thorax, 128)
    view = study.views[0]
    seed = ids.rng(0, index, ids.STREAM_IMAGE, 0, 0).integers(2**31)
    with_it, instances = renderer.render(study, view, np.random.default_rng(seed))
    others = [f for f in study.findings if f.concept != concept]
    without, _ = renderer.render(study, view, np.random.default_rng(seed), findings=others)
    mask = np.zeros(with_it.shape, bool)
    for inst in instances:
        if inst.concept == concept:
            mask |= inst.mask
    assert mask.any()
    diff = np.abs(with_it.astype(float) - without.astype(float))
    ring = ~mask & (np.abs(np.gradient(mask.astype(float))[0]) + np.abs(np.gradient(mask.astype(float))[1]) == 0)
    inside, outside = diff[mask].mean(), diff[ring].mean()
    assert inside >= 6.0, (concept, inside)
    assert inside > 4 * outside, (concept, inside, outside)


def test_cardiomegaly_box_width_follows_the_cardiothoracic_ratio(spec):
    index, thorax, study = _subject_with(spec, {"cardiomegaly"})
    renderer = SubjectRenderer(thorax, 256)
    _, instances = renderer.render(study, study.views[0], np.random.default_rng(0))
    heart = next(i for i in instances if i.concept == "cardiomegaly")
    width = bbox(heart.mask)[2] / 256
    thoracic = 2 * thorax.lung_half_width * renderer.base(study.views[0])[0].heart_magnification
    assert abs(width / thoracic - study.ctr) < 0.04
    assert study.ctr >= 0.5
