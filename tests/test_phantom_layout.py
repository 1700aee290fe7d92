"""Output layout mirrors MIMIC-CXR / MIMIC-CXR-JPG; tables and COCO JSON are consistent."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from pipelines.phantom import outputs
from pipelines.phantom.generate import Options, generate
from pipelines.phantom.spec import CHEXPERT_LABELS
from pipelines.phantom.testing import corpus, read_csv, read_truth

DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


@pytest.fixture(scope="module")
def out():
    return corpus(n=40)


def test_report_tree_and_ids(out):
    reports = sorted((out / "files").rglob("s*.txt"))
    assert len(reports) == 40
    subjects = set()
    for path in reports:
        group, subject, name = path.parts[-3:]
        assert re.fullmatch(r"p1\d", group) and re.fullmatch(r"p1\d{7}", subject)
        assert subject[1:3] == group[1:]
        assert re.fullmatch(r"s5\d{7}\.txt", name)
        subjects.add(subject)
    assert len(subjects) < 40, "some subjects must have several studies"


def test_metadata_matches_images(out):
    rows = read_csv(out / "mimic-cxr-2.0.0-metadata.csv")
    assert list(rows[0]) == outputs.METADATA_COLUMNS
    by_study: dict[str, list[str]] = {}
    for row in rows:
        assert DICOM_ID.match(row["dicom_id"])
        image = out / "files" / f"p{row['subject_id'][:2]}" / f"p{row['subject_id']}" / \
            f"s{row['study_id']}" / f"{row['dicom_id']}.png"
        with Image.open(image) as im:
            assert im.mode == "L" and im.size == (int(row["Columns"]), int(row["Rows"])) == (128, 128)
        by_study.setdefault(row["study_id"], []).append(row["ViewPosition"])
        assert re.fullmatch(r"21\d{6}", row["StudyDate"])
    assert len(by_study) == 40
    for views in by_study.values():
        assert sum(v in ("PA", "AP") for v in views) == 1, views
    laterals = sum("LATERAL" in v for v in by_study.values())
    assert 0 < laterals < 40
    assert len({r["dicom_id"] for r in rows}) == len(rows)


def test_chexpert_csv_format(out):
    rows = read_csv(out / "mimic-cxr-2.0.0-chexpert.csv")
    assert list(rows[0]) == ["subject_id", "study_id", *CHEXPERT_LABELS]
    assert len(rows) == 40
    for row in rows:
        for label in CHEXPERT_LABELS:
            assert row[label] in ("1.0", "0.0", "-1.0", "")
        assert row["No Finding"] in ("1.0", "")
    values = {row[label] for row in rows for label in CHEXPERT_LABELS}
    assert {"1.0", "0.0", ""} <= values


def test_report_sections_and_wrapping(out):
    truth = {r["study_id"]: r for r in read_truth(out)}
    for path in (out / "files").rglob("s*.txt"):
        text = path.read_text()
        assert text.lstrip().startswith("FINAL REPORT")
        for header in ("EXAMINATION:", "INDICATION:", "COMPARISON:"):
            assert header in text
        assert "FINDINGS:" in text or "IMPRESSION:" in text
        assert max(len(line) for line in text.splitlines()) <= 80
        study = truth[path.stem[1:]]
        comparison = re.search(r"COMPARISON:\s+(.*)", text).group(1)
        assert comparison.startswith("None") == (study["prior_study_id"] is None)


def test_coco_json_matches_boxes_csv(out):
    coco = json.loads((out / "boxes_coco.json").read_text())
    boxes = read_csv(out / "boxes.csv")
    metadata = read_csv(out / "mimic-cxr-2.0.0-metadata.csv")
    assert len(coco["images"]) == len(metadata)
    assert len(coco["annotations"]) == len(boxes) > 0
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {i["id"]: i for i in coco["images"]}
    for ann, row in zip(coco["annotations"], boxes):
        assert images[ann["image_id"]]["dicom_id"] == row["dicom_id"]
        assert names[ann["category_id"]] == row["finding"]
        assert ann["bbox"] == [int(row[k]) for k in ("x", "y", "w", "h")]
        assert (out / images[ann["image_id"]]["file_name"]).exists()


def test_split_is_patient_level(out):
    rows = read_csv(out / "mimic-cxr-2.0.0-split.csv")
    by_subject: dict[str, set[str]] = {}
    for row in rows:
        by_subject.setdefault(row["subject_id"], set()).add(row["split"])
    assert all(len(s) == 1 for s in by_subject.values())


def test_dicom_and_jpeg_outputs_match_the_image(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    out = corpus(n=6, dicom=True, jpeg=True)
    jpgs = sorted((out / "files").rglob("*.jpg"))
    assert jpgs and not list((out / "files").rglob("*.png"))
    seen = set()
    for jpg in jpgs:
        ds = pydicom.dcmread(jpg.with_suffix(".dcm"))
        pixels = ds.pixel_array.astype(np.int32)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            pixels = 4095 - pixels
        seen.add(ds.PhotometricInterpretation)
        as_8bit = pixels // 16
        with Image.open(jpg) as im:
            jpeg = np.asarray(im, dtype=np.int32)
        assert as_8bit.shape == jpeg.shape
        assert np.abs(as_8bit - jpeg).mean() < 3.0          # JPEG is lossy; DICOM is exact
        assert ds.PatientID == jpg.parts[-3][1:]
        assert ds.StudyID == jpg.parts[-2][1:]


def test_refuses_foreign_folder_and_replaces_own(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    with pytest.raises(SystemExit):
        generate(Options(out=str(foreign), n=2, size=64, progress=False))
    assert (foreign / "keep.txt").read_text() == "not ours"

    own = tmp_path / "own"
    generate(Options(out=str(own), n=3, size=64, progress=False))
    (own / "user_notes.txt").write_text("mine")
    generate(Options(out=str(own), n=2, size=64, progress=False))
    assert len(read_truth(own)) == 2
    assert len(list((own / "files").rglob("s*.txt"))) == 2
    assert (own / "user_notes.txt").exists()
