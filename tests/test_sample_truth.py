"""The parser against the embedded sample's own truth (sentence-level concept + certainty + attributes).

The sample was written with the truth recorded per sentence (qa_builder/data/sample_truth.jsonl), so
this checks the whole path — sectioning, sentence splitting, matching, certainty, attributes — on
MIMIC-style text without needing MIMIC. The truth uses 41 coarse concepts; finer lexicon concepts
are mapped onto them.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qa_builder.pipeline import BuildConfig, build

DATA = Path(__file__).resolve().parents[1] / "qa_builder" / "data"
COARSE = {"copd": "emphysema", "hyperinflation": "emphysema", "scarring": "fibrosis",
          "vascular_congestion": "pulmonary_edema", "heart_failure": "pulmonary_edema",
          "lymphadenopathy": "hilar_enlargement", "enlarged_cardiac_silhouette": "cardiomegaly",
          "malignancy": "lung_mass", "infection": "pneumonia", "nodular_opacity": "lung_nodule"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "out"
    build(DATA / "sample_reports.csv", out, BuildConfig(workers=1, progress=False))
    found: dict[tuple, list[dict]] = {}
    for f in pq.read_table(out / "findings.parquet").to_pylist():
        key = (f["report_id"], " ".join(f["sentence"].split()), COARSE.get(f["concept"], f["concept"]))
        found.setdefault(key, []).append(f)
    counts = Counter()
    for line in (DATA / "sample_truth.jsonl").read_text().splitlines():
        truth = json.loads(line)
        for m in truth["mentions"]:
            if m["lean"]:  # "likely X": scored either way by design, see qa_builder/data/README.md
                continue
            counts["truth"] += 1
            ours = found.get((truth["report_id"], " ".join(m["sentence"].split()), m["concept"]))
            if not ours:
                counts["missed"] += 1
                continue
            rank = {"negative": 0, "uncertain": 1, "positive": 2}
            best = max(ours, key=lambda f: rank[f["certainty"]])
            counts["certainty_ok"] += best["certainty"] == m["certainty"]
            for attr in ("laterality", "severity", "change"):
                if m[attr] is not None and best["certainty"] == m["certainty"]:
                    counts[f"{attr}_n"] += 1
                    counts[f"{attr}_ok"] += any(f[attr] == m[attr] for f in ours)
    print(dict(counts))
    return counts


def test_mentions_found_with_the_right_certainty(scored):
    assert scored["truth"] > 2500
    assert scored["certainty_ok"] / scored["truth"] >= 0.95


@pytest.mark.parametrize("attr", ["laterality", "severity", "change"])
def test_attributes_agree(scored, attr):
    assert scored[f"{attr}_ok"] / scored[f"{attr}_n"] >= 0.95
