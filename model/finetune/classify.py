"""Multi-label image classification on a pre-trained QFT checkpoint, scored by per-label AUROC.

    qft finetune --checkpoint runs/tiny/checkpoint --data OUT --images IMAGES --out runs/tiny_probe
    qft finetune ... --mode full       # also train the image encoder + QFT (augmented views)
    qft finetune ... --random-init     # same architecture, untrained weights: what pre-training is worth

Targets come from ``labels.parquet`` (README schema): 1 positive, 0 negative; a label the report never
mentions counts as negative (CheXpert's reading of a blank); uncertain (-1) is left out of the loss and
of the scores unless ``uncertain`` maps it to 1 (U-Ones) or 0 (U-Zeros). A report with no row at all
under the scheme was not labelled and is left out. Splits are the tables'
(train / validate / test); without validate/test rows 10% of patients are held out, as in pre-training.

``probe``: frozen encoder, features = mean over views of [global vector, mean QFT token], standardised on
the train split, one L2-regularised logistic regression per label fitted by L-BFGS (deterministic).
``full``: ``ClassificationHead`` trained end to end with AdamW; the epoch with the best validate macro-AUROC
is kept (the last one when there is no validate split).

Writes to OUT: metrics.json (per split: AUROC per label, positives, macro-AUROC over every label with both
classes, and over the frequent labels only (>= 5 positives and 5 negatives) with a bootstrap 95 % interval;
with ``--baseline RUN``, this run's frequent-label macro minus RUN's on the same studies, paired), predictions.csv
(held-out studies, one probability per label) and head.safetensors.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..augment import augment
from ..checkpoint import load_pretrained
from ..data.cache import ImageCache
from ..data.dataset import attach_images, stack_views
from ..data.tables import Study, holdout, load_studies
from ..evaluate import auroc, bf16_autocast, resolve_device
from ..qft import QFT
from .heads import ClassificationHead, load_labels, multilabel_loss, pooled_features

log = logging.getLogger("qft")
UNCERTAIN = {"ignore": -1.0, "ones": 1.0, "zeros": 0.0}  # what an uncertain (-1) label becomes; -1 = ignored
MIN_POSITIVES = 5  # a label enters the "frequent" macro-AUROC with at least this many positives and negatives
BOOTSTRAP = 1000  # resamples of the held-out studies for that macro's 95 % interval


@dataclass
class LabelledImages:
    studies: list[Study]
    view0: np.ndarray  # (n,) cache row of the frontal(-ish) image
    view1: np.ndarray  # (n,) cache row of the second view, -1: the first one again
    cache: ImageCache
    names: list[str]  # label names (columns of targets)
    targets: np.ndarray  # (n, L) float32: 1, 0, or -1 = not scored (uncertain under 'ignore')

    def views(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return stack_views(self.cache, self.view0, self.view1, idx)


def label_targets(studies: list[Study], data_dir: str | Path, scheme: str = "chexpert",
                  uncertain: str = "ignore") -> tuple[list[str], np.ndarray]:
    """(label names, (n, L) float32 targets) for ``studies`` from labels.parquet."""
    if uncertain not in UNCERTAIN:
        raise ValueError(f"uncertain must be one of {sorted(UNCERTAIN)}, not {uncertain!r}")
    path = Path(data_dir) / "labels.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (qa-build writes it next to reports.parquet)")
    names, table = load_labels(data_dir, scheme)
    if not names:
        raise ValueError(f"{path}: no rows with scheme {scheme!r}")
    # a report absent from the table was not labelled at all (e.g. rejected by the parser): not scored
    y = np.full((len(studies), len(names)), -1.0, np.float32)
    absent = 0
    for i, s in enumerate(studies):
        v = table.get(s.report_id)
        if v is None:
            absent += 1
            continue
        v = np.asarray(v, np.float32)  # 1 / 0 / -1 uncertain / -2 not mentioned (= negative)
        y[i] = np.where(v == 1, 1.0, np.where(v == -1, UNCERTAIN[uncertain], 0.0))
    if absent:
        log.warning("labels: %d of %d studies have no %s labels in %s; left out of training and scoring",
                    absent, len(studies), scheme, path)
    return names, y


def load_labelled_images(data_dir: str | Path, images: str | Path, cache_root: str | Path, image_size: int,
                         scheme: str = "chexpert", uncertain: str = "ignore", workers: int = 0,
                         progress: bool = True) -> LabelledImages:
    studies, v0, v1, cache = attach_images(load_studies(data_dir), images, cache_root, image_size, workers, progress)
    names, y = label_targets(studies, data_dir, scheme, uncertain)
    return LabelledImages(studies, v0, v1, cache, names, y)


# ----------------------------------------------------------------------------------------------------
# scoring


def score_split(probs: np.ndarray, targets: np.ndarray, names: list[str], min_positives: int = MIN_POSITIVES,
                boot: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Per-label AUROC (known targets only) and their mean over labels where both classes occur; then the mean
    over the frequent labels (>= min_positives positives and negatives here: one positive makes an AUROC a
    single rank) with a 95 % percentile bootstrap interval over studies (boot resamples, seeded)."""
    per = {n: auroc(probs[:, j], targets[:, j]) for j, n in enumerate(names)}
    scored = [v for v in per.values() if not math.isnan(v)]
    pos, neg = (targets == 1).sum(0), (targets == 0).sum(0)
    frequent = [j for j in range(len(names)) if pos[j] >= min_positives and neg[j] >= min_positives]
    out = {"n": int(len(targets)), "positives": {n: int(pos[j]) for j, n in enumerate(names)},
           "auroc": {n: (None if math.isnan(v) else round(v, 4)) for n, v in per.items()},
           "macro_auroc": round(float(np.mean(scored)), 4) if scored else None,
           "labels_scored": len(scored), "min_positives": min_positives,
           "frequent_labels": [names[j] for j in frequent], "macro_auroc_frequent": None,
           "macro_auroc_frequent_ci95": None}
    if frequent:
        out["macro_auroc_frequent"] = round(float(np.mean([per[names[j]] for j in frequent])), 4)
        if boot:
            out["macro_auroc_frequent_ci95"] = bootstrap_macro_ci(probs[:, frequent], targets[:, frequent], boot, seed)
    return out


def bootstrap_macro_ci(probs: np.ndarray, targets: np.ndarray, boot: int, seed: int = 0) -> list[float]:
    """95 % percentile interval of the macro-AUROC when the studies (rows) are resampled with replacement."""
    return _interval(_bootstrap_macros(targets, boot, seed, probs)[:, 0])


def paired_difference(probs: np.ndarray, base: np.ndarray, targets: np.ndarray, boot: int = BOOTSTRAP,
                      seed: int = 0) -> dict:
    """Macro-AUROC of probs minus that of base (another run's predictions for the same studies and labels), with
    a paired bootstrap 95 % interval: both are scored on the same resampled studies, so the interval is that of
    the difference, much narrower than two separate intervals would suggest."""
    ok = _both_classes(targets)
    if not ok:
        return {"diff": None, "ci95": None}
    diff = np.mean([auroc(probs[:, j], targets[:, j]) - auroc(base[:, j], targets[:, j]) for j in ok])
    m = _bootstrap_macros(targets, boot, seed, probs, base)
    return {"diff": round(float(diff), 4), "ci95": _interval(m[:, 0] - m[:, 1]) if boot else None}


def _bootstrap_macros(targets: np.ndarray, boot: int, seed: int, *probs: np.ndarray) -> np.ndarray:
    """(resamples, len(probs)) macro-AUROCs of each probs over the same resamples of the studies; a label that
    loses one of its classes in a resample is left out of that resample's means."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(boot):
        idx = rng.integers(0, len(targets), len(targets))
        t = targets[idx]
        ok = _both_classes(t)
        if ok:
            rows.append([np.mean([auroc(p[idx, j], t[:, j]) for j in ok]) for p in probs])
    return np.array(rows).reshape(-1, len(probs))


def _both_classes(targets: np.ndarray) -> list[int]:
    """Columns with at least one positive and one negative: the labels an AUROC is defined for."""
    return [j for j in range(targets.shape[1]) if (targets[:, j] == 1).any() and (targets[:, j] == 0).any()]


def _interval(samples: np.ndarray) -> list[float] | None:
    if not len(samples):  # every resample lost a class of every label: no interval
        return None
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def read_predictions(run: str | Path, names: list[str], ids: list[str]) -> np.ndarray:
    """Another run's predictions.csv (a folder or the file) -> (len(ids), len(names)) probabilities in this
    run's study and label order. Refuses a run on other studies or labels: a paired comparison needs both."""
    path = Path(run) / "predictions.csv" if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions.csv of a `qft finetune` run to compare with")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = {r["report_id"]: r for r in reader}
        columns = reader.fieldnames or []
    lacking = [n for n in names if n not in columns]
    if lacking:
        raise ValueError(f"{path}: no column for label(s) {', '.join(lacking)}: another label scheme or data")
    missing = [i for i in ids if i not in rows]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of this run's {len(ids)} held-out studies are not in it (first: "
                         f"{missing[0]}): another data split")
    return np.array([[float(rows[i][n]) for n in names] for i in ids])


# ----------------------------------------------------------------------------------------------------
# linear probe


@torch.no_grad()
def extract_features(model: QFT, data: LabelledImages, idx: np.ndarray, device: torch.device,
                     batch_size: int = 64, autocast=contextlib.nullcontext) -> torch.Tensor:
    """(len(idx), Dv + H) float32 pooled features of un-augmented views."""
    model.eval()
    out = []
    for lo in range(0, len(idx), batch_size):
        a, b = data.views(idx[lo:lo + batch_size])
        with autocast():
            out.append(pooled_features(model.encode_image(a.to(device), b.to(device))).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2, max_iter: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-label logistic regression on standardised features: (weight (D, L), bias (L,)). Loss = mean BCE over
    known targets (y >= 0) of each label + l2 / 2 * |w|^2, minimised jointly by L-BFGS (float64, deterministic)."""
    x, y = x.double(), y.double()
    known = y >= 0
    n_known = known.sum(0).clamp(min=1)
    prior = ((y.clamp(min=0) * known).sum(0) + 1) / (n_known + 2)
    w = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.log(prior / (1 - prior)).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

    def closure():
        opt.zero_grad()
        bce = F.binary_cross_entropy_with_logits(x @ w + b, y.clamp(min=0), reduction="none")
        loss = ((bce * known).sum(0) / n_known).sum() + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float(), b.detach().float()


# ----------------------------------------------------------------------------------------------------
# the command


def finetune_classifier(checkpoint: str | Path | None, data_dir: str | Path, images: str | Path, out: str | Path, *,
                        mode: str = "probe", random_init: bool = False, scheme: str = "chexpert",
                        uncertain: str = "ignore", cache: str | Path | None = None, device: str = "auto",
                        l2: float = 1e-2, epochs: int = 10, batch_size: int = 32, lr: float = 1e-4,
                        seed: int = 0, workers: int = 2, progress: bool = True,
                        baseline: str | Path | None = None) -> dict:
    """Train a classification head on ``checkpoint``'s image encoder + QFT; returns (and writes) the metrics.
    ``baseline``: another run's folder (e.g. the same recipe with ``random_init``) to compare with, paired."""
    if mode not in ("probe", "full"):
        raise ValueError(f"mode must be 'probe' or 'full', not {mode!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    model, tok, cfg = load_pretrained(checkpoint, "cpu")
    if random_init:  # the same architecture with fresh weights (seeded)
        torch.manual_seed(seed)
        model = QFT(cfg.model, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id).eval()
    model = model.to(dev)
    autocast = bf16_autocast(dev, cfg.train.precision)

    data = load_labelled_images(data_dir, images, cache or out / "cache", cfg.model.image_size, scheme, uncertain,
                                workers, progress)
    # the pre-training's split rule and seed: without split columns the same 10 % of patients stay held out
    train_idx, held_idx = holdout(data.studies, cfg.train.seed)
    split = np.array([s.split for s in data.studies])
    eval_sets = {"held_out": held_idx}
    for name in ("validate", "test"):
        if np.isin(held_idx, np.flatnonzero(split == name)).any():
            eval_sets[name] = held_idx[split[held_idx] == name]
    y = torch.from_numpy(data.targets)
    trainable = _both_classes(data.targets[train_idx])
    skipped = [data.names[j] for j in range(len(data.names)) if j not in trainable]
    if skipped:
        log.warning("finetune: %d label(s) without both classes in the train split, not trained: %s",
                    len(skipped), ", ".join(skipped))
    if not trainable:
        raise ValueError(f"{data_dir}: no {scheme} label has both positive and negative train studies")
    names = [data.names[j] for j in trainable]
    y = y[:, trainable]
    log.info("finetune (%s, %s weights): %d labels, %d train / %d held-out studies, on %s", mode,
             "random" if random_init else "pre-trained", len(names), len(train_idx), len(held_idx), dev)

    torch.manual_seed(seed)
    if mode == "probe":
        all_idx = np.arange(len(data.studies))
        feats = extract_features(model, data, all_idx, dev, autocast=autocast)
        mean, std = feats[train_idx].mean(0), feats[train_idx].std(0).clamp(min=1e-6)
        w, b = fit_logistic((feats[train_idx] - mean) / std, y[train_idx], l2)
        probs = torch.sigmoid((feats - mean) / std @ w + b).numpy()
        tensors = {"weight": w.t().contiguous(), "bias": b, "feature_mean": mean, "feature_std": std}
    else:
        head = ClassificationHead(model, len(names), freeze=False).to(dev)
        probs, tensors = _train_full(head, data, y, train_idx, eval_sets.get("validate"), cfg, dev, autocast,
                                     epochs, batch_size, lr, seed, progress)

    metrics = {"checkpoint": str(checkpoint), "init": "random" if random_init else "pretrained", "mode": mode,
               "scheme": scheme, "uncertain": uncertain, "labels": names, "skipped_labels": skipped,
               "train": {"n": int(len(train_idx)), "positives": {n: int((y[train_idx, j] == 1).sum())
                                                                 for j, n in enumerate(names)}}}
    if mode == "probe":
        metrics["l2"] = l2
    else:
        metrics.update({"epochs": epochs, "batch_size": batch_size, "lr": lr})
    for name, idx in eval_sets.items():
        metrics[name] = score_split(probs[idx], y[idx].numpy(), names, seed=seed)
    if baseline is not None:  # what this run adds over the baseline, on the same studies and frequent labels
        base = np.full_like(probs, np.nan)
        base[held_idx] = read_predictions(baseline, names, [data.studies[i].report_id for i in held_idx])
        metrics["baseline"] = str(baseline)
        for name, idx in eval_sets.items():
            cols = [names.index(n) for n in metrics[name]["frequent_labels"]]
            metrics[name]["vs_baseline"] = paired_difference(probs[np.ix_(idx, cols)], base[np.ix_(idx, cols)],
                                                             y[idx].numpy()[:, cols], seed=seed)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(out / "head.safetensors"),
              metadata={"labels": json.dumps(names), "mode": mode, "scheme": scheme})
    with open(out / "predictions.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["report_id", "split", *names])
        for i in held_idx:
            wr.writerow([data.studies[i].report_id, data.studies[i].split, *(f"{p:.6f}" for p in probs[i])])
    return metrics


def _train_full(head: ClassificationHead, data: LabelledImages, y: torch.Tensor, train_idx: np.ndarray,
                val_idx: np.ndarray | None, cfg, dev: torch.device, autocast, epochs: int, batch_size: int,
                lr: float, seed: int, progress: bool) -> tuple[np.ndarray, dict]:
    """End-to-end fine-tuning: encoder at ``lr``, the new classifier at 10x; returns (probabilities for every
    study from the kept epoch, the kept state dict)."""
    from tqdm import tqdm

    new = list(head.classifier.parameters())
    old = [p for n, p in head.named_parameters() if p.requires_grad and not n.startswith("classifier.")]
    opt = torch.optim.AdamW([{"params": old, "lr": lr}, {"params": new, "lr": 10 * lr}], weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    d = cfg.data
    all_idx = np.arange(len(data.studies))
    best, best_state = -1.0, None
    steps = max(1, len(train_idx) // batch_size)
    bar = tqdm(total=epochs * steps, desc="finetune", unit="step", disable=not progress, mininterval=2.0)
    for epoch in range(epochs):
        head.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        for k in range(steps):
            idx = perm[k * batch_size:(k + 1) * batch_size]
            a, b = data.views(idx)
            a = augment(a.to(dev), gen, d.augment_scale, d.augment_rotate, d.augment_jitter)
            b = augment(b.to(dev), gen, d.augment_scale, d.augment_rotate, d.augment_jitter)
            with autocast():
                loss = multilabel_loss(head(a, b).float(), y[idx].to(dev))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.update()
        if val_idx is not None and len(val_idx):
            probs = _predict(head, data, all_idx, dev, autocast)
            names = [str(j) for j in range(y.shape[1])]
            m = score_split(probs[val_idx], y[val_idx].numpy(), names, boot=0)["macro_auroc"]
            log.info("finetune epoch %d: loss %.4f, validate macro-AUROC %s", epoch + 1, loss.item(), m)
            if m is not None and m > best:
                best, best_state = m, copy.deepcopy(head.state_dict())
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    keep = ("qft.image_encoder.", "qft.qft.", "classifier.")  # what classification uses (no text side)
    state = {k: v.clone() for k, v in head.state_dict().items() if k.startswith(keep)}
    return _predict(head, data, all_idx, dev, autocast), state


@torch.no_grad()
def _predict(head: ClassificationHead, data: LabelledImages, idx: np.ndarray, dev: torch.device, autocast,
             batch_size: int = 64) -> np.ndarray:
    head.eval()
    out = []
    for lo in range(0, len(idx), batch_size):
        a, b = data.views(idx[lo:lo + batch_size])
        with autocast():
            out.append(torch.sigmoid(head(a.to(dev), b.to(dev)).float()).cpu())
    return torch.cat(out).numpy()
