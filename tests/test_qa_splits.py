"""Patient-level deterministic splits (qa_builder.qa.splits) and their use by generate_qa."""

from __future__ import annotations

import collections
import gzip

import pytest

from qa_builder.qa.generate import QAConfig, generate_qa
from qa_builder.qa.splits import SPLITS, assign_split, load_split_file, split_for_report, stable_hash


def test_hash_split_is_stable_across_versions():
    # Hard-coded: a change here reshuffles every published split, so it must be deliberate.
    assert stable_hash("split", 0, "10000032") == stable_hash("split", 0, "10000032")
    got = {s: assign_split(s) for s in ("10000032", "10000033", "10000039", "10000044", "10000052")}
    assert got == {"10000032": "train", "10000033": "test", "10000039": "validate",
                   "10000044": "validate", "10000052": "validate"}


def test_fractions_and_seed():
    counts = collections.Counter(assign_split(f"p{i}") for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.8) < 0.015
    assert abs(counts["validate"] / 20_000 - 0.1) < 0.01
    assert abs(counts["test"] / 20_000 - 0.1) < 0.01
    half = collections.Counter(assign_split(f"p{i}", (1, 1, 0)) for i in range(4_000))
    assert set(half) == {"train", "validate"} and abs(half["train"] / 4_000 - 0.5) < 0.03
    moved = sum(assign_split(f"p{i}") != assign_split(f"p{i}", seed=1) for i in range(2_000))
    assert moved > 300  # another seed, another split


def _report(rid: str, subject: str | None, study: str | None = None):
    report = {"report_id": rid, "subject_id": subject, "study_id": study, "findings": "No pneumothorax.",
              "impression": None}
    sentences = [{"sentence_id": 0, "section": "findings", "sentence": "No pneumothorax."}]
    mentions = [{"report_id": rid, "mention_id": 0, "section": "findings", "sentence_id": 0,
                 "sentence": "No pneumothorax.", "start": 3, "end": 15, "text": "pneumothorax",
                 "concept": "pneumothorax", "certainty": "negative", "laterality": None, "location": None,
                 "severity": None, "descriptor": None, "size": None, "change": None,
                 "temporality": "current", "chexpert": "Pneumothorax", "chestxray14": "Pneumothorax"}]
    return report, sentences, mentions


def test_patient_level_and_disjoint():
    split_of_subject: dict[str, set[str]] = collections.defaultdict(set)
    for i in range(600):
        subject = f"{10_000_000 + i // 4}"  # four studies per patient
        rows = generate_qa(*_report(f"s{50_000_000 + i}", subject))
        assert {r["subject_id"] for r in rows} == {subject}
        split_of_subject[subject] |= {r["split"] for r in rows}
    assert all(len(s) == 1 for s in split_of_subject.values())
    by_split = collections.defaultdict(set)
    for subject, splits in split_of_subject.items():
        by_split[next(iter(splits))].add(subject)
    assert set(by_split) == set(SPLITS)
    assert not (by_split["train"] & by_split["validate"]) and not (by_split["train"] & by_split["test"])


def test_missing_subject_falls_back_to_report_id():
    rows = generate_qa(*_report("uid-77", None))
    assert rows and all(r["subject_id"] is None for r in rows)
    assert {r["split"] for r in rows} == {assign_split("uid-77")}


SPLIT_CSV = """dicom_id,study_id,subject_id,split
d1,50000001,10000001,train
d2,50000001,10000001,train
d3,50000002,10000001,train
d4,50000003,10000002,validate
d5,50000004,10000003,test
"""


@pytest.mark.parametrize("gz", [False, True])
def test_official_split_file(tmp_path, gz):
    path = tmp_path / ("split.csv.gz" if gz else "split.csv")
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(SPLIT_CSV)
    else:
        path.write_text(SPLIT_CSV, encoding="utf-8")
    split_map = load_split_file(path)
    assert dict(split_map) == {"50000001": "train", "50000002": "train", "50000003": "validate", "50000004": "test"}
    assert split_map.by_subject == {"10000001": "train", "10000002": "validate", "10000003": "test"}
    # by study (also as 'sNNNNNNNN' report ids), then by subject, then hashed
    assert split_for_report("s50000004", None, None, split_map=split_map) == "test"
    assert split_for_report("x", "10000002", "50000003", split_map=split_map) == "validate"
    assert split_for_report("s59999999", "10000003", "59999999", split_map=split_map) == "test"
    assert split_for_report("s59999998", "19999999", None, split_map=split_map) == assign_split("19999999")
    # generate_qa honours it (the hash alone would put subject 10000003 in 'train')
    assert assign_split("10000003") == "train"
    rows = generate_qa(*_report("s50000004", "10000003", "50000004"), QAConfig(split_file=str(path)))
    assert {r["split"] for r in rows} == {"test"}


def test_split_file_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("study_id,split\n1,train\n1,test\n", encoding="utf-8")
    with pytest.raises(ValueError, match="two splits"):
        load_split_file(bad)
    bad.write_text("study_id,split\n1,holdout\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown split"):
        load_split_file(bad)
    bad.write_text("dicom_id,fold\nd1,1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="split"):
        load_split_file(bad)
    ok = tmp_path / "ok.csv"
    ok.write_text("study,split\ns1,val\ns2,Validation\n", encoding="utf-8")
    assert dict(load_split_file(ok)) == {"1": "validate", "2": "validate"}
