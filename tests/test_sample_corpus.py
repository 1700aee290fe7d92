"""The embedded sample of fictional chest radiograph reports (qa_builder/data/) and its truth file."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "qa_builder" / "data"
CSV_PATH = DATA / "sample_reports.csv"
TRUTH_PATH = DATA / "sample_truth.jsonl"
GENERATOR = DATA / "make_sample_reports.py"

CONCEPTS = (
    "atelectasis cardiomegaly enlarged_cardiomediastinum pleural_effusion pneumothorax consolidation "
    "pneumonia lung_opacity infiltration pulmonary_edema lung_nodule lung_mass emphysema fibrosis "
    "pleural_thickening hiatal_hernia fracture granuloma calcification scoliosis degenerative_spine "
    "bronchiectasis cavity hilar_enlargement pericardial_effusion subcutaneous_emphysema "
    "pneumomediastinum pneumoperitoneum elevated_hemidiaphragm tortuous_aorta endotracheal_tube "
    "enteric_tube central_venous_catheter swan_ganz_catheter chest_tube pacemaker sternotomy_wires "
    "surgical_clips prosthetic_valve tracheostomy spinal_hardware"
).split()
CERTAINTIES = ("positive", "negative", "uncertain")
TRAPS = (
    "The heart is not enlarged.",
    "Heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Possible small right pleural effusion cannot be excluded.",
    "The left pleural effusion has resolved.",
    "The right hilum is enlarged.",
    "No acute cardiopulmonary process.",
    "Lungs are clear.",
    "Calcified granuloma in the left upper lobe.",
    "No effusion or pneumothorax.",
    "Bilateral effusions, left greater than right.",
    "Left basilar atelectasis and right upper lobe opacity.",
    "No interval change in the small right effusion.",
)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.fixture(scope="module")
def rows():
    with open(CSV_PATH, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["report_id", "subject_id", "study_id", "text"]
        return list(reader)


@pytest.fixture(scope="module")
def truths():
    with open(TRUTH_PATH, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_csv_ids_and_shape(rows):
    assert 300 <= len(rows) <= 400
    ids = [r["report_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert len({r["study_id"] for r in rows}) == len(rows)
    for r in rows:
        assert re.fullmatch(r"s5\d{7}", r["report_id"]), r["report_id"]
        assert r["study_id"] == r["report_id"][1:]
        assert re.fullmatch(r"1\d{7}", r["subject_id"]), r["subject_id"]
        assert r["text"].strip() and "\n" in r["text"]
        assert max(len(line) for line in r["text"].split("\n")) <= 80, r["report_id"]
    per_subject = Counter(r["subject_id"] for r in rows)
    assert max(per_subject.values()) <= 4
    assert sum(1 for n in per_subject.values() if n >= 2) >= 40


def test_layout_variety(rows, truths):
    texts = [r["text"] for r in rows]
    n = len(texts)
    no_findings = sum("FINDINGS:" not in t.upper() for t in texts)
    no_headers = sum(not re.search(r"^ ?[A-Z][A-Za-z() ]+:", t, re.M) for t in texts)
    assert 0.07 * n <= no_findings <= 0.25 * n
    assert 0.02 * n <= no_headers <= 0.10 * n
    assert any("Findings:" in t for t in texts)
    assert any(re.search(r"^ FINDINGS:\s*$", t, re.M) for t in texts)
    assert any(re.search(r"^ FINDINGS:  \S", t, re.M) for t in texts)
    assert any(re.search(r"^ 2\. ", t, re.M) for t in texts)
    for header in ("WET READ:", "ADDENDUM:", "RECOMMENDATION(S):", "PORTABLE AP", "___"):
        assert any(header in t.upper() for t in texts), header
    normal = sum(t["kind"] == "normal" for t in truths)
    assert 0.2 * n <= normal <= 0.4 * n


def test_truth_matches_reports(rows, truths):
    assert [t["report_id"] for t in truths] == [r["report_id"] for r in rows]
    for row, t in zip(rows, truths):
        assert (t["subject_id"], t["study_id"]) == (row["subject_id"], row["study_id"])
        flat = _flat(row["text"])
        for m in t["mentions"]:
            assert m["concept"] in CONCEPTS
            assert m["certainty"] in CERTAINTIES
            assert m["laterality"] in (None, "left", "right", "bilateral")
            assert m["change"] in (None, "new", "increased", "decreased", "unchanged", "resolved")
            assert m["temporality"] in ("current", "historical")
            assert m["lean"] in (True, False)
            assert not m["lean"] or m["certainty"] == "uncertain"
            assert m["section"] in ("findings", "impression", "wet_read")
            assert m["sentence"] in flat, (row["report_id"], m["sentence"])
            if m["change"] == "resolved":
                assert m["certainty"] == "negative"
        keys = [(m["section"], m["sentence"], m["concept"]) for m in t["mentions"]]
        assert len(keys) == len(set(keys)) or _repeats_are_identical(t["mentions"])


def _repeats_are_identical(mentions):
    seen = {}
    for m in mentions:
        key = (m["section"], m["sentence"], m["concept"])
        if key in seen and seen[key] != m:
            return False
        seen[key] = m
    return True


def test_every_concept_positive_negative_uncertain(truths):
    counts = Counter((m["concept"], m["certainty"]) for t in truths for m in t["mentions"]
                     if m["section"] in ("findings", "impression"))
    missing = [(c, cert, counts[(c, cert)]) for c in CONCEPTS for cert in CERTAINTIES if counts[(c, cert)] < 3]
    assert not missing


def test_attributes_are_exercised(truths):
    mentions = [m for t in truths for m in t["mentions"]]
    for field, values in {
        "laterality": {"left", "right", "bilateral"},
        "severity": {"trace", "minimal", "small", "mild", "moderate", "large", "severe"},
        "change": {"new", "increased", "decreased", "unchanged", "resolved"},
        "location": {"upper lobe", "middle lobe", "lower lobe", "lingula", "base", "apex", "perihilar",
                     "retrocardiac", "costophrenic angle"},
        "temporality": {"historical"},
    }.items():
        seen = {m[field] for m in mentions}
        assert values <= seen, (field, values - seen)
    assert {"8 mm", "3.4 x 2.1 cm"} & {m["size"] for m in mentions}


def test_trap_sentences_present(rows):
    flat = " ".join(_flat(r["text"]) for r in rows)
    for trap in TRAPS:
        assert flat.count(trap) >= 2, trap
    for phrase in ("clear of", "negative for", "versus", "may represent", "cannot be excluded",
                   "suggestive of", "consistent with", "likely", "no longer seen"):
        assert phrase in flat, phrase


def test_generator_is_deterministic(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample_reports", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "sample_reports.csv").read_bytes() == CSV_PATH.read_bytes()
    assert (tmp_path / "sample_truth.jsonl").read_bytes() == TRUTH_PATH.read_bytes()
    assert (tmp_path / "sample_study_dates.csv").read_bytes() == (DATA / "sample_study_dates.csv").read_bytes()
