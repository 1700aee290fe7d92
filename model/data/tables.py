"""Read ``reports.parquet`` + ``qa.parquet`` (the README schema) into per-study records.

A study is one report. Its report text is findings + impression; its QA pairs are grouped by
granularity; its split comes from its QA rows (patient-level, decided by the QA builder).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

log = logging.getLogger("qft")

GRANULARITIES = ("coarse", "middle", "fine")
REPORT_COLUMNS = ("report_id", "study_id", "subject_id", "findings", "impression")
QA_COLUMNS = ("report_id", "granularity", "question", "answer", "split")


@dataclass
class Study:
    report_id: str
    key: str  # join key to images: study_id, else report_id
    subject_id: str | None
    text: str  # findings + impression
    split: str  # train / validate / test
    qa: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # granularity -> [(question, answer)]


def _read(path: Path, columns: tuple[str, ...]) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (expected the QA builder's output folder)")
    have = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; see README 'Output schema'")
    return pq.read_table(path, columns=list(columns)).to_pylist()


def report_text(findings: str | None, impression: str | None) -> str:
    return " ".join(s.strip() for s in (findings, impression) if s and s.strip())


def load_studies(data_dir: str | Path) -> list[Study]:
    """One Study per report with non-empty findings/impression text, in reports.parquet order."""
    data_dir = Path(data_dir)
    reports = _read(data_dir / "reports.parquet", REPORT_COLUMNS)
    qa_rows = _read(data_dir / "qa.parquet", QA_COLUMNS)

    qa: dict[str, dict[str, list[tuple[str, str]]]] = {}
    splits: dict[str, Counter] = {}
    skipped = Counter()
    for r in qa_rows:
        g = r["granularity"]
        if g not in GRANULARITIES:
            skipped["unknown granularity"] += 1
            continue
        if not r["question"] or not r["answer"]:
            skipped["empty question/answer"] += 1
            continue
        qa.setdefault(r["report_id"], {}).setdefault(g, []).append((r["question"], r["answer"]))
        splits.setdefault(r["report_id"], Counter())[r["split"] or "train"] += 1

    studies = []
    for r in reports:
        rid = r["report_id"]
        text = report_text(r["findings"], r["impression"])
        if not text:
            skipped["report without findings/impression"] += 1
            continue
        split = splits[rid].most_common(1)[0][0] if rid in splits else "train"
        if rid not in qa:
            skipped["report without QA pairs (kept, split=train, LM terms masked)"] += 1
        key = r["study_id"] if r["study_id"] else rid
        studies.append(Study(rid, str(key), r["subject_id"], text, split, qa.get(rid, {})))
    for reason, n in skipped.items():
        log.warning("tables: %d × %s", n, reason)
    if not studies:
        raise ValueError(f"{data_dir}: no usable reports (need findings or impression text)")
    return studies


def load_label_sets(data_dir: str | Path, scheme: str = "chexpert") -> dict[str, frozenset[str]]:
    """report_id -> the set of labels marked positive (value 1) under ``scheme`` in labels.parquet; {} when
    the folder has no labels.parquet (the table is optional: only used for label-aware evaluation)."""
    path = Path(data_dir) / "labels.parquet"
    if not path.exists():
        return {}
    rows = pq.read_table(path, columns=["report_id", "scheme", "label", "value"]).to_pylist()
    out: dict[str, set[str]] = {}
    for r in rows:
        if r["scheme"] == scheme:
            s = out.setdefault(r["report_id"], set())
            if r["value"] == 1:
                s.add(r["label"])
    return {k: frozenset(v) for k, v in out.items()}


def holdout(studies: list[Study], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) into ``studies``. Held-out = validate/test split; if the tables have
    none, 10% of patients (hashed) are held out so accuracy is still measured on unseen studies."""
    split = np.array([s.split for s in studies])
    train, held = np.flatnonzero(split == "train"), np.flatnonzero(np.isin(split, ("validate", "test")))
    if len(held) == 0:
        rng = np.random.default_rng(seed)
        pats = sorted({s.subject_id or s.report_id for s in studies})
        out = set(rng.choice(pats, max(1, len(pats) // 10), replace=False).tolist())
        is_out = np.array([(s.subject_id or s.report_id) in out for s in studies])
        log.warning("no validate/test studies in qa.parquet: holding out %d of %d studies (10%% of patients)",
                    is_out.sum(), len(is_out))
        train, held = np.flatnonzero(~is_out), np.flatnonzero(is_out)
    return train, held
