"""End to end: the QA builder's CheXpert labels on phantom reports vs the generator's truth.

Skips cleanly until qa_builder.pipeline can be imported. Runs `qa-build OUT/files OUTQA` exactly as
a user would and compares labels.parquet (scheme 'chexpert', report_id 'sSTUDY') with
mimic-cxr-2.0.0-chexpert.csv. Prints the agreement (per label and overall) and fails below
PHANTOM_MIN_AGREEMENT (default 0.90, over all study x label cells including 'not mentioned').
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.phantom.spec import CHEXPERT_LABELS
from pipelines.phantom.testing import corpus, read_csv

MIN_AGREEMENT = float(os.environ.get("PHANTOM_MIN_AGREEMENT", "0.90"))


def _qa_build() -> Path:
    pytest.importorskip("qa_builder.pipeline", reason="qa_builder.pipeline is not importable yet")
    exe = Path(sys.executable).parent / "qa-build"
    if not exe.exists():
        pytest.skip(f"{exe} not installed")
    return exe


def _truth_labels(out: Path) -> dict[tuple[str, str], float | None]:
    truth = {}
    for row in read_csv(out / "mimic-cxr-2.0.0-chexpert.csv"):
        for label in CHEXPERT_LABELS:
            truth[(f"s{row['study_id']}", label)] = float(row[label]) if row[label] else None
    return truth


def agreement_table(truth: dict, parsed: dict, labels) -> dict[str, float]:
    table = {}
    for label in labels:
        keys = [k for k in truth if k[1] == label]
        table[label] = sum(truth[k] == parsed.get(k) for k in keys) / len(keys)
    keys = [k for k in truth if k[1] in labels]
    table["overall"] = sum(truth[k] == parsed.get(k) for k in keys) / len(keys)
    mentioned = [k for k in keys if truth[k] is not None]
    table["mentioned_only"] = sum(truth[k] == parsed.get(k) for k in mentioned) / max(1, len(mentioned))
    return table


def test_qa_builder_chexpert_labels_agree_with_truth(tmp_path):
    exe = _qa_build()
    import pandas as pd

    out = corpus(n=80, size=64, seed=3)
    qa_out = tmp_path / "qa"
    proc = subprocess.run([str(exe), str(out / "files"), str(qa_out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frame = pd.read_parquet(qa_out / "labels.parquet")
    frame = frame[frame["scheme"] == "chexpert"]
    parsed = {(r.report_id, r.label): float(r.value) for r in frame.itertuples()}
    # MIMIC's CSV never holds No Finding = 0 (it is 1 or blank); a parser writing 0 means blank
    parsed = {k: v for k, v in parsed.items() if not (k[1] == "No Finding" and v == 0.0)}
    reports = pd.read_parquet(qa_out / "reports.parquet", columns=["report_id"])
    truth = _truth_labels(out)
    assert {k[0] for k in truth} == set(reports["report_id"]), "every phantom report must parse"

    # compare No Finding only if the parser emits it
    labels = [l for l in CHEXPERT_LABELS if l != "No Finding" or (frame["label"] == "No Finding").any()]
    table = agreement_table(truth, parsed, labels)
    width = max(map(len, table))
    print(f"\nqa_builder vs phantom truth (CheXpert, {len({k[0] for k in truth})} reports):")
    for label, value in table.items():
        print(f"  {label:<{width}}  {value:6.1%}")
    disagreements = sorted((k, truth[k], parsed.get(k)) for k in truth
                           if k[1] in labels and truth[k] != parsed.get(k))
    for (report_id, label), want, got in disagreements[:15]:
        print(f"  {report_id} {label}: truth={want} parsed={got}")
    assert table["overall"] >= MIN_AGREEMENT, table
