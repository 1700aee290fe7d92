"""Answer held-out QA pairs with a checkpoint's decoder (greedy) and score the answers against the references.

    qft answer --checkpoint runs/tiny/checkpoint --data OUT --images IMAGES --out runs/tiny_answers

Coarse pairs are report generation ("What are the findings ...?"), middle ones describe a region, fine ones
answer about one finding. Scores per granularity: exact match after normalisation (lower case, punctuation
dropped, spaces squeezed), token F1 (bag-of-words overlap, as SQuAD) and, for yes/no references, accuracy of
the answer's first word; the same per question type when qa.parquet has that column. Writes OUT/answers.csv
(one row per pair) and OUT/metrics.json.
"""
from __future__ import annotations

import csv
import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from ..checkpoint import load_pretrained
from ..data.dataset import attach_images, stack_views
from ..data.tables import GRANULARITIES, holdout, load_studies
from ..evaluate import bf16_autocast, resolve_device
from .heads import generate_answers

log = logging.getLogger("qft")
_PUNCT = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def token_f1(answer: str, reference: str) -> float:
    a, r = normalise(answer).split(), normalise(reference).split()
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    p, rec = common / len(a), common / len(r)
    return 2 * p * rec / (p + rec)


def score_answers(rows: list[dict], by: str = "granularity") -> dict:
    """rows with reference / answer / exact / f1 -> per value of ``by``: n, exact, token_f1, and yes/no accuracy."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[by], []).append(r)
    order = [g for g in GRANULARITIES if g in groups] if by == "granularity" else sorted(groups)
    out = {}
    for g in order:
        part = groups[g]
        m = {"n": len(part), "exact": float(np.mean([r["exact"] for r in part])),
             "token_f1": float(np.mean([r["f1"] for r in part]))}
        closed = [r for r in part if normalise(r["reference"]) in ("yes", "no")]
        if closed:
            m["yes_no_n"] = len(closed)
            m["yes_no_accuracy"] = float(np.mean([(normalise(r["answer"]).split() or [""])[0] == normalise(r["reference"])
                                                  for r in closed]))
        out[g] = {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}
    return out


def question_types(data_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """(report_id, question, answer) -> question_type from qa.parquet; {} if the table has no such column."""
    path = Path(data_dir) / "qa.parquet"
    if "question_type" not in pq.read_schema(path).names:
        return {}
    rows = pq.read_table(path, columns=["report_id", "question", "answer", "question_type"]).to_pylist()
    return {(r["report_id"], r["question"], r["answer"]): r["question_type"] or "" for r in rows}


@torch.no_grad()
def answer_held_out(checkpoint: str | Path, data_dir: str | Path, images: str | Path, out: str | Path, *,
                    granularities: tuple[str, ...] = GRANULARITIES, max_studies: int | None = None,
                    cache: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                    workers: int = 2, progress: bool = True) -> dict:
    unknown = set(granularities) - set(GRANULARITIES)
    if unknown:
        raise ValueError(f"granularity must be among {GRANULARITIES}, not {sorted(unknown)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    model, tok, cfg = load_pretrained(checkpoint, dev)
    autocast = bf16_autocast(dev, cfg.train.precision)
    studies, v0, v1, img_cache = attach_images(load_studies(data_dir), images, cache or out / "cache",
                                               cfg.model.image_size, workers, progress)
    _, held = holdout(studies, cfg.train.seed)  # the pre-training's held-out studies, also without split columns
    held = held[:max_studies] if max_studies else held
    # one granularity per batch: it sets the answer length budget
    jobs = {g: [(int(i), q, a) for i in held for q, a in studies[i].qa.get(g, [])] for g in granularities}
    batches = [(g, js[lo:lo + batch_size]) for g, js in jobs.items() for lo in range(0, len(js), batch_size)]
    total = sum(len(js) for js in jobs.values())
    if not total:
        raise ValueError(f"{data_dir}: the held-out studies have no {'/'.join(granularities)} QA pairs")
    log.info("answer: %d QA pairs of %d held-out studies (%s)", total, len(held), ", ".join(granularities))
    types = question_types(data_dir)
    rows = []
    bar = tqdm(total=total, desc="answer", unit="pair", disable=not progress, mininterval=2.0)
    for g, part in batches:
        a, b = stack_views(img_cache, v0, v1, np.array([j[0] for j in part]))
        with autocast():
            answers = generate_answers(model, tok, a, [j[1] for j in part], b,
                                       max_new_tokens=getattr(cfg.data, f"{g}_tokens"))
        for (i, q, ref), ans in zip(part, answers):
            rid = studies[i].report_id
            rows.append({"report_id": rid, "split": studies[i].split, "granularity": g,
                         "question_type": types.get((rid, q, ref), ""), "question": q, "reference": ref, "answer": ans,
                         "exact": normalise(ans) == normalise(ref), "f1": token_f1(ans, ref)})
        bar.update(len(part))
    bar.close()
    metrics = {"checkpoint": str(checkpoint), "studies": len(held), **score_answers(rows)}
    if types:  # the paper's fine categories (presence, location, severity, type, change, ...) one by one
        metrics["by_question_type"] = score_answers(rows, "question_type")
    with open(out / "answers.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "exact": int(r["exact"]), "f1": f"{r['f1']:.4f}"} for r in rows)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    return metrics
