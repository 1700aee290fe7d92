"""Measure a qa-build output against the IU X-ray 14-label gold (`qa-eval`).

Gold: `dev_gold14.csv` (ChestX-ray14 scheme + `normal`, `filename` = CXR<uid>). Its Hernia column is
always 0 although indexers coded `Hernia, Hiatal`, so Hernia is scored from the MeSH column of the
reports CSV. Hedged findings may or may not be coded, so F1 is given with uncertain counted as
negative and as positive. Laterality is checked against MeSH modifiers (`Pleural Effusion/left`).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
          "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

# MeSH major term -> our concepts, for laterality agreement only.
MESH_CONCEPTS = {
    "Pulmonary Atelectasis": {"atelectasis"}, "Pleural Effusion": {"pleural_effusion"},
    "Opacity": {"lung_opacity", "nodular_opacity", "infiltration", "consolidation", "atelectasis"},
    "Airspace Disease": {"lung_opacity", "consolidation", "infiltration"},
    "Consolidation": {"consolidation"}, "Pneumonia": {"pneumonia"}, "Pneumothorax": {"pneumothorax"},
    "Nodule": {"lung_nodule"}, "Mass": {"lung_mass"}, "Infiltrate": {"infiltration"},
    "Calcified Granuloma": {"granuloma"}, "Granuloma": {"granuloma"}, "Cicatrix": {"scarring"},
    "Thickening": {"pleural_thickening"}, "Emphysema": {"emphysema"}, "Pulmonary Emphysema": {"emphysema"},
    "Fractures, Bone": {"fracture"}, "Density": {"lung_opacity", "nodular_opacity"},
}
SIDES = {"left": "left", "right": "right", "bilateral": "bilateral"}


class EvalError(ValueError):
    pass


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise EvalError(f"{path}: cannot read ({exc.strerror})") from None


def load_gold(gold_csv: Path, reports_csv: Path | None) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """report_id -> {label: 0/1, 'normal': 0/1}, and report_id -> MeSH string."""
    gold: dict[str, dict[str, int]] = {}
    for row in _read_csv(gold_csv):
        name = row.get("filename") or ""
        rid = name[3:] if name.upper().startswith("CXR") else name
        gold[rid] = {k: int(float(row[k] or 0)) for k in (*LABELS, "normal") if k in row}
    mesh: dict[str, str] = {}
    if reports_csv:
        for row in _read_csv(reports_csv):
            rid = row.get("uid") or row.get("report_id") or ""
            mesh[rid] = row.get("MeSH") or ""
            if rid in gold:  # Hernia from the indexers' codes, see module docstring
                gold[rid]["Hernia"] = int(any(t.split("/")[0].strip().startswith("Hernia") for t in mesh[rid].split(";")))
    return gold, mesh


def evaluate(out: Path, gold_csv: Path, reports_csv: Path | None = None) -> dict:
    out = Path(out)
    for name in ("labels.parquet", "findings.parquet"):
        if not (out / name).exists():
            raise EvalError(f"{out / name}: missing; run qa-build first")
    gold, mesh = load_gold(Path(gold_csv), Path(reports_csv) if reports_csv else None)
    labels = pq.read_table(out / "labels.parquet", filters=[("scheme", "=", "chestxray14")]).to_pylist()
    pred: dict[str, dict[str, int]] = defaultdict(dict)
    for r in labels:
        pred[r["report_id"]][r["label"]] = r["value"]
    findings = pq.read_table(out / "findings.parquet", columns=["report_id", "concept", "certainty", "laterality", "temporality"]).to_pylist()
    present: dict[str, list[dict]] = defaultdict(list)
    for f in findings:
        if f["temporality"] == "current" and f["certainty"] != "negative":
            present[f["report_id"]].append(f)
    parsed = set(pq.read_table(out / "reports.parquet", columns=["report_id"]).column(0).to_pylist())
    ids = sorted(rid for rid in gold if rid in parsed)
    if not ids:
        raise EvalError(f"no report of {gold_csv} found in {out}/reports.parquet")

    result = {"reports": len(ids), "missing": len(gold) - len(ids), "modes": {}}
    for mode, uncertain_value in (("uncertain_as_negative", 0), ("uncertain_as_positive", 1)):
        scores = {label: Score() for label in LABELS}
        for rid in ids:
            for label in LABELS:
                v = pred[rid].get(label, 0)
                p = 1 if v == 1 else (uncertain_value if v == -1 else 0)
                g = gold[rid].get(label, 0)
                s = scores[label]
                s.tp += p and g
                s.fp += p and not g
                s.fn += g and not p
        micro = Score(sum(s.tp for s in scores.values()), sum(s.fp for s in scores.values()),
                      sum(s.fn for s in scores.values()))
        with_pos = [s for s in scores.values() if s.tp + s.fn]
        result["modes"][mode] = {
            "per_label": {k: {"precision": s.precision, "recall": s.recall, "f1": s.f1, "support": s.tp + s.fn,
                              "tp": s.tp, "fp": s.fp, "fn": s.fn} for k, s in scores.items()},
            "micro_f1": micro.f1, "micro_precision": micro.precision, "micro_recall": micro.recall,
            "macro_f1": sum(s.f1 for s in with_pos) / max(len(with_pos), 1), "macro_labels": len(with_pos),
        }
    # 'normal' in this gold means no MeSH code at all, so compare with "no current finding of any kind".
    normal_ok = sum((not present[rid]) == bool(gold[rid].get("normal", 0)) for rid in ids)
    result["normal_accuracy"] = normal_ok / len(ids)
    result["laterality"] = _laterality(ids, mesh, present)
    if (out / "qa.parquet").exists():
        result["qa_presence"] = _qa_presence(out, gold, set(ids))
    return result


def _qa_presence(out: Path, gold: dict[str, dict[str, int]], ids: set[str]) -> dict:
    """Closed presence answers ('yes'/'no') whose concept maps to a gold label, against that label."""
    concept_label = {}
    for r in pq.read_table(out / "findings.parquet", columns=["concept", "chestxray14"]).to_pylist():
        if r["chestxray14"]:
            concept_label[r["concept"]] = r["chestxray14"]
    qa = pq.read_table(out / "qa.parquet", columns=["report_id", "question_type", "answer", "concept"],
                       filters=[("question_type", "=", "presence")]).to_pylist()
    confusion = {"yes/gold 1": 0, "yes/gold 0": 0, "no/gold 1": 0, "no/gold 0": 0}
    hedged = 0
    for r in qa:
        label = concept_label.get(r["concept"])
        if label is None or r["report_id"] not in ids:
            continue
        if r["answer"] not in ("yes", "no"):
            hedged += 1
            continue
        confusion[f"{r['answer']}/gold {gold[r['report_id']].get(label, 0)}"] += 1
    n = sum(confusion.values())
    agree = confusion["yes/gold 1"] + confusion["no/gold 0"]
    return {"pairs": n, "agreement": agree / n if n else 0.0, "confusion": confusion, "hedged_excluded": hedged}


def _laterality(ids: list[str], mesh: dict[str, str], present: dict[str, list[dict]]) -> dict:
    """Share of MeSH-coded sides that our positive mentions of the same finding state."""
    coded = agree = with_side = 0
    for rid in ids:
        for term in (mesh.get(rid) or "").split(";"):
            parts = [p.strip() for p in term.split("/")]
            concepts = MESH_CONCEPTS.get(parts[0])
            sides = [SIDES[p] for p in parts[1:] if p in SIDES]
            if not concepts or not sides:
                continue
            coded += 1
            ours = {f["laterality"] for f in present[rid] if f["concept"] in concepts and f["laterality"]}
            if ours:
                with_side += 1
                agree += sides[0] in ours
    return {"coded": coded, "we_state_a_side": with_side, "agree": agree,
            "agreement": agree / with_side if with_side else 0.0,
            "coverage": with_side / coded if coded else 0.0}


def format_table(result: dict) -> str:
    lines = [f"reports scored: {result['reports']} (gold rows not in OUT: {result['missing']})", ""]
    neg, pos = result["modes"]["uncertain_as_negative"], result["modes"]["uncertain_as_positive"]
    lines.append(f"{'label':<20}{'support':>8}{'P':>7}{'R':>7}{'F1':>7}   {'F1 (unc.=pos)':>13}")
    for label in LABELS:
        a, b = neg["per_label"][label], pos["per_label"][label]
        lines.append(f"{label:<20}{a['support']:>8}{a['precision']:>7.3f}{a['recall']:>7.3f}{a['f1']:>7.3f}   {b['f1']:>13.3f}")
    lines.append("")
    lines.append(f"{'micro-F1':<20}{'':>8}{neg['micro_precision']:>7.3f}{neg['micro_recall']:>7.3f}{neg['micro_f1']:>7.3f}   {pos['micro_f1']:>13.3f}")
    lines.append(f"{'macro-F1':<20}{neg['macro_labels']:>8}{'':>14}{neg['macro_f1']:>7.3f}   {pos['macro_f1']:>13.3f}")
    lines.append(f"normal accuracy: {result['normal_accuracy']:.3f}")
    lat = result["laterality"]
    lines.append(f"laterality vs MeSH: {lat['agree']}/{lat['we_state_a_side']} agree ({lat['agreement']:.3f}); "
                 f"a side stated for {lat['we_state_a_side']}/{lat['coded']} coded sides ({lat['coverage']:.3f})")
    if "qa_presence" in result:
        q = result["qa_presence"]
        c = q["confusion"]
        lines.append(f"QA presence vs gold: {q['agreement']:.3f} of {q['pairs']} closed pairs agree "
                     f"(yes: {c['yes/gold 1']} right, {c['yes/gold 0']} wrong; no: {c['no/gold 0']} right, "
                     f"{c['no/gold 1']} wrong; {q['hedged_excluded']} hedged answers not counted)")
    return "\n".join(lines)
