"""Accuracy on the real IU X-ray dev split (../shared, licence CC BY-NC-ND: read in place, never copied).

Targets from the parser issue: micro-F1 >= 0.95 and macro-F1 >= 0.85 against the 14-label gold, with
uncertain mentions counted as negative (the gold codes present findings only).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qa_builder.evaluate import evaluate, format_table
from qa_builder.pipeline import BuildConfig, build

IU = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu"
pytestmark = pytest.mark.skipif(not (IU / "dev_reports.csv").exists(), reason="../shared/data/iu not present")


@pytest.fixture(scope="module")
def iu_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("iu") / "out"
    build(IU / "dev_reports.csv", out, BuildConfig(workers=2, progress=False))
    return out


@pytest.fixture(scope="module")
def result(iu_out):
    r = evaluate(iu_out, IU / "dev_gold14.csv", IU / "dev_reports.csv")
    print(format_table(r))
    return r


def test_every_row_accounted_for(iu_out):
    import pyarrow.parquet as pq

    n = pq.read_metadata(iu_out / "reports.parquet").num_rows + pq.read_metadata(iu_out / "rejects.parquet").num_rows
    assert n == 1603


def test_f1_targets(result):
    mode = result["modes"]["uncertain_as_negative"]
    assert mode["micro_f1"] >= 0.95
    assert mode["macro_f1"] >= 0.85
    for label in ("Atelectasis", "Cardiomegaly", "Effusion", "Emphysema"):
        assert mode["per_label"][label]["f1"] >= 0.93, label


def test_normal_and_laterality(result):
    assert result["normal_accuracy"] >= 0.90
    lat = result["laterality"]
    assert lat["agreement"] >= 0.90 and lat["coverage"] >= 0.70


def test_qa_presence_agrees_with_gold(result):
    """Closed presence answers for concepts with a ChestX-ray14 label agree with the gold (issue target 97%)."""
    q = result["qa_presence"]
    assert q["pairs"] > 3000
    assert q["agreement"] >= 0.97


def test_answers_meet_the_clinician_review_targets(iu_out):
    """The QA-fidelity targets against the dev review (255 pairs; the issue's numbers): >= 97 % of the
    reviewed pairs still asked answered as corrected, >= 90 % of DROP/trivial pairs gone, <= 5 % of the
    pairs with an expected answer lost, every question type >= 90 %."""
    from qa_builder.review.score import evaluate_review

    result = evaluate_review(iu_out, IU / "dev_qa_review.csv")
    head = result["headline"]
    assert all(h["met"] for h in head.values()), {k: (h["k"], h["n"]) for k, h in head.items()}
    assert result["total"]["still_asked"] == 0
