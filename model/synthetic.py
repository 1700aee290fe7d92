"""A tiny synthetic corpus in the documented layout, for tests, smoke runs and benchmarks.

Writes ``DATA/reports.parquet`` + ``DATA/qa.parquet`` (+ ``DATA/labels.parquet``, CheXpert names) (README
schema) and a MIMIC-CXR-JPG-like image
root ``IMAGES/files/pXX/pSUBJECT/sSTUDY/<dicom_id>.png`` + ``IMAGES/mimic-cxr-2.0.0-metadata.csv``.
Images are drawn so that the findings are visible (an enlarged heart, an effusion at a lung base, a
nodule), hence retrieval can be learnt. Not the project's phantom generator: just enough for ``model/``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FINDINGS = {
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly.", "heart"),
    "left_effusion": ("There is a left pleural effusion.", "Left pleural effusion.", "left lung"),
    "right_effusion": ("There is a right pleural effusion.", "Right pleural effusion.", "right lung"),
    "left_nodule": ("A nodule is seen in the left upper lobe.", "Left upper lobe nodule.", "left lung"),
    "right_nodule": ("A nodule is seen in the right upper lobe.", "Right upper lobe nodule.", "right lung"),
}
CHEXPERT = {"cardiomegaly": "Cardiomegaly", "left_effusion": "Pleural Effusion", "right_effusion": "Pleural Effusion",
            "left_nodule": "Lung Lesion", "right_nodule": "Lung Lesion"}


def draw(findings: set[str], size: int, rng: np.random.Generator, lateral: bool = False) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    img = 0.15 + 0.05 * rng.standard_normal((size, size))
    lungs = (((x - 0.32) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1) | (((x - 0.68) / 0.17) ** 2 + ((y - 0.5) / 0.33) ** 2 < 1)
    img = np.where(lungs, 0.05, 0.45) + 0.04 * rng.standard_normal((size, size))
    heart_r = 0.22 if "cardiomegaly" in findings else 0.13
    cx = 0.5 if lateral else 0.55
    img[((x - cx) / heart_r) ** 2 + ((y - 0.62) / (heart_r * 0.9)) ** 2 < 1] = 0.75
    for side, x0 in (("left", 0.68), ("right", 0.32)):  # patient's left is on the image's right
        if f"{side}_effusion" in findings:
            img[(np.abs(x - x0) < 0.17) & (y > 0.68)] = 0.85
        if f"{side}_nodule" in findings:
            img[((x - x0) ** 2 + (y - 0.35) ** 2) < 0.06 ** 2] = 1.0
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_corpus(data: str | Path, images: str | Path, n_studies: int = 120, size: int = 96, seed: int = 0,
                lateral_every: int = 2, splits: tuple[float, float] = (0.7, 0.15), labels: bool = True) -> None:
    data, images = Path(data), Path(images)
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    reports, qa, meta, label_rows = [], [], [], []
    names = list(FINDINGS)
    for k in range(n_studies):
        subject, study = f"{10000000 + k // 2}", f"{50000000 + k}"  # two studies per patient
        u = (k // 2) / max(1, (n_studies - 1) // 2)
        split = "train" if u < splits[0] else "validate" if u < splits[0] + splits[1] else "test"
        found = {n for n in names if rng.random() < 0.3}
        if found >= {"left_effusion", "right_effusion"}:
            found.discard("right_effusion")
        findings_txt = " ".join(FINDINGS[n][0] for n in names if n in found) or "The lungs are clear. The heart is normal."
        impression = " ".join(FINDINGS[n][1] for n in names if n in found) or "No acute cardiopulmonary process."
        rid = f"s{study}"
        reports.append({"report_id": rid, "subject_id": subject, "study_id": study, "findings": findings_txt,
                        "impression": impression, "indication": None, "comparison": None, "history": None,
                        "technique": None, "examination": None, "source": f"synthetic:{k}"})
        positive = {CHEXPERT[f] for f in found}
        for lab in sorted(set(CHEXPERT.values())):  # every report states each finding's presence or absence
            label_rows.append({"report_id": rid, "scheme": "chexpert", "label": lab, "value": int(lab in positive)})
        label_rows.append({"report_id": rid, "scheme": "chexpert", "label": "No Finding", "value": int(not found)})
        n = 0

        def add(gran, qtype, q, a, concept=None, region=None):
            nonlocal n
            qa.append({"qa_id": f"{rid}:{n}", "report_id": rid, "subject_id": subject, "granularity": gran,
                       "question_type": qtype, "question": q, "answer": a, "answer_type": "open",
                       "concept": concept, "region": region, "evidence": [], "evidence_text": None, "split": split})
            n += 1

        add("coarse", "report", "What are the findings in this chest X-ray?", f"{findings_txt} {impression}")
        for region in ("heart", "left lung", "right lung"):
            sents = [FINDINGS[f][0] for f in names if f in found and FINDINGS[f][2] == region]
            if sents or k % 3:  # some studies lack a middle pair for some regions
                add("middle", "region", f"What do you see in the {region}?", " ".join(sents) or f"The {region} is normal.",
                    region=region)
        if k % 5:  # every fifth study has no fine pair: exercises the masked loss
            for f in names:
                add("fine", "presence", f"Is there {f.replace('_', ' ')}?", "yes" if f in found else "no", concept=f)
        folder = images / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        views = [("PA", False)] + ([("LATERAL", True)] if k % lateral_every == 0 else [])
        for j, (view, lat) in enumerate(views):
            dicom_id = f"{k:08x}-{j:04x}"
            Image.fromarray(draw(found, size, rng, lat)).save(folder / f"{dicom_id}.png")
            meta.append({"dicom_id": dicom_id, "subject_id": subject, "study_id": study, "ViewPosition": view,
                         "Rows": size, "Columns": size})
    pq.write_table(pa.Table.from_pylist(reports), data / "reports.parquet", compression="zstd")
    qa_schema = pa.schema([("qa_id", pa.string()), ("report_id", pa.string()), ("subject_id", pa.string()),
                           ("granularity", pa.string()), ("question_type", pa.string()), ("question", pa.string()),
                           ("answer", pa.string()), ("answer_type", pa.string()), ("concept", pa.string()),
                           ("region", pa.string()), ("evidence", pa.list_(pa.int32())),
                           ("evidence_text", pa.string()), ("split", pa.string())])
    pq.write_table(pa.Table.from_pylist(qa, schema=qa_schema), data / "qa.parquet", compression="zstd")
    if labels:
        schema = pa.schema([("report_id", pa.string()), ("scheme", pa.string()), ("label", pa.string()),
                            ("value", pa.int8())])
        pq.write_table(pa.Table.from_pylist(label_rows, schema=schema), data / "labels.parquet", compression="zstd")
    with open(images / "mimic-cxr-2.0.0-metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(meta[0]))
        w.writeheader()
        w.writerows(meta)
