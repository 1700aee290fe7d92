"""Difference QA on the phantom's longitudinal studies vs the generator's truth (issue 16 targets):
every prior is the subject's previous study (never one dated after), and every stated or derived change
agrees with what the generator changed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.phantom.testing import corpus, read_csv
from qa_builder.pipeline import BuildConfig, build
from qa_builder.qa.generate import QAConfig

# the phantom names some concepts more narrowly than the lexicon
TRUTH_TO_OURS = {"rib_fracture": {"fracture"}, "nasogastric_tube": {"enteric_tube"},
                 "cardiomegaly": {"cardiomegaly", "enlarged_cardiac_silhouette"}}


def _truth_finding(study: dict, concept: str) -> dict | None:
    for f in study["findings"]:
        if concept in TRUTH_TO_OURS.get(f["concept"], {f["concept"]}):
            return f
    return None


def _agrees(answer: str, source: str, cur: dict | None, prior: dict | None) -> bool:
    change = cur and cur["change"]
    if source == "stated":
        return cur is not None and (change == answer or (answer == "removed" and change == "resolved"))
    if answer == "new":
        return cur is not None and cur["certainty"] == "positive" and (
            change == "new" or prior is None or prior["certainty"] == "negative")
    if answer in ("resolved", "removed"):
        return cur is None or cur["certainty"] == "negative"
    if answer == "still present":
        return cur is not None and prior is not None and cur["certainty"] == prior["certainty"] == "positive"
    if answer == "uncertain":
        return "uncertain" in (cur and cur["certainty"], prior and prior["certainty"])
    return False


def test_difference_answers_agree_with_the_phantoms_truth(tmp_path):
    out = corpus(n=120, size=64, seed=5)
    qa_out = tmp_path / "qa"
    qa = QAConfig(split_file=str(out / "mimic-cxr-2.0.0-split.csv"))
    manifest = build(out / "files", qa_out, BuildConfig(workers=1, progress=False, qa=qa))
    truth = {json.loads(line)["report_id"]: json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()}
    dates = {}
    for row in read_csv(out / "mimic-cxr-2.0.0-metadata.csv"):
        dates.setdefault(f"s{row['study_id']}", row["StudyDate"] + row["StudyTime"].zfill(6))
    rows = pq.read_table(qa_out / "diff_qa.parquet").to_pylist()
    assert manifest["difference"]["studies"]["paired"] > 20 and rows
    checked = wrong = 0
    for r in rows:
        cur = truth[r["report_id"]]
        assert r["prior_report_id"] == f"s{cur['prior_study_id']}"          # the subject's previous study
        assert dates[r["prior_report_id"]] < dates[r["report_id"]]           # never dated after the current one
        assert r["split"] == cur["split"] == truth[r["prior_report_id"]]["split"]  # pairs never cross splits
        if r["question_type"] != "diff_concept" or r["concept"] == "support_device":  # generic "leads"
            continue
        checked += 1
        if not _agrees(r["answer"], r["source"], _truth_finding(cur, r["concept"]),
                       _truth_finding(truth[r["prior_report_id"]], r["concept"])):
            wrong += 1
            print("disagrees:", r["report_id"], r["concept"], r["source"], r["answer"])
    assert checked > 50 and wrong == 0
