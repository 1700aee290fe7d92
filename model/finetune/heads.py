"""Minimal downstream heads over ``QFT.encode_image`` (the pre-trained image encoder + QFT).

Each head owns the QFT model (``freeze=True`` for a linear probe) and takes uint8 views as in the cache.
  ClassificationHead  multi-label logits from the global vectors + mean QFT token (CheXpert-14 etc.)
  SegmentationHead    per-pixel logits from the patch-token grid (ViT-style backbones), bilinear upsampling
  DetectionHead       DETR-style: each QFT query predicts (class | no object, box cx cy w h); greedy matching
  generate_answers    report generation / VQA through the pre-trained decoder
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.tokenizer import TextTokenizer
from ..qft import QFT, ImageFeatures


class _Head(nn.Module):
    def __init__(self, qft: QFT, freeze: bool):
        super().__init__()
        self.qft = qft
        self.freeze = freeze
        if freeze:
            qft.requires_grad_(False)

    def features(self, view0: torch.Tensor, view1: torch.Tensor | None = None):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return self.qft.encode_image(view0, view1)


class ClassificationHead(_Head):
    def __init__(self, qft: QFT, num_labels: int, freeze: bool = False, dropout: float = 0.1):
        super().__init__(qft, freeze)
        width = qft.image_encoder.width + qft.cfg.qft_hidden
        self.classifier = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, num_labels))

    def forward(self, view0: torch.Tensor, view1: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(pooled_features(self.features(view0, view1)))  # (B, num_labels)


def pooled_features(f: ImageFeatures) -> torch.Tensor:
    """(B, Dv + H): the backbone's global vector and the mean QFT token, each averaged over the views."""
    return torch.cat([f.global_features.mean(0), f.query_tokens.mean((0, 2))], -1)


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE over labels in {1, 0}; entries < 0 (uncertain / not mentioned) are ignored."""
    known = labels >= 0
    if not known.any():  # nothing to learn from in this batch: a zero that keeps the graph
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], labels[known].float())


class SegmentationHead(_Head):
    def __init__(self, qft: QFT, num_classes: int, freeze: bool = False):
        super().__init__(qft, freeze)
        D = qft.image_encoder.width
        self.decode = nn.Sequential(nn.Conv2d(D, D // 2, 3, padding=1), nn.GELU(), nn.Conv2d(D // 2, num_classes, 1))

    def forward(self, view0: torch.Tensor) -> torch.Tensor:
        f = self.features(view0)
        tokens = f.patch_tokens[0]  # (B, N, D) first view
        B, N, D = tokens.shape
        side = math.isqrt(N)
        if side * side != N:
            raise ValueError(f"segmentation needs a square patch grid, got {N} tokens")
        grid = tokens.transpose(1, 2).reshape(B, D, side, side)
        size = view0.shape[-1]
        return F.interpolate(self.decode(grid), size=(size, size), mode="bilinear", align_corners=False)


class DetectionHead(_Head):
    """Boxes are normalised (cx, cy, w, h) in [0, 1]; class index ``num_classes`` means 'no object'."""

    def __init__(self, qft: QFT, num_classes: int, freeze: bool = False):
        super().__init__(qft, freeze)
        H = qft.cfg.qft_hidden
        self.num_classes = num_classes
        self.cls = nn.Linear(H, num_classes + 1)
        self.box = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Linear(H, 4))

    def forward(self, view0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.features(view0).query_tokens[0, :, 1:]  # (B, Q, H) first view, without the mean token
        return self.cls(q), self.box(q).sigmoid()  # (B, Q, C + 1), (B, Q, 4)


def detection_loss(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], box_weight: float = 5.0):
    """targets[b] = {"labels": (n,), "boxes": (n, 4)}. Greedy one-to-one matching on class prob + L1 cost."""
    B, Q, C1 = logits.shape
    cls_target = torch.full((B, Q), C1 - 1, dtype=torch.long, device=logits.device)
    l1 = logits.new_zeros(())
    n_boxes = 0
    prob = logits.softmax(-1)
    for b, t in enumerate(targets):
        if len(t["labels"]) == 0:
            continue
        cost = torch.cdist(boxes[b], t["boxes"].to(boxes), p=1) * box_weight - prob[b][:, t["labels"]]  # (Q, n)
        cost = cost.detach().clone()
        for _ in range(min(Q, len(t["labels"]))):
            qi, ti = divmod(int(cost.argmin()), cost.shape[1])
            cls_target[b, qi] = t["labels"][ti]
            l1 = l1 + F.l1_loss(boxes[b, qi], t["boxes"][ti].to(boxes), reduction="sum")
            cost[qi, :] = float("inf")
            cost[:, ti] = float("inf")
            n_boxes += 1
    weight = torch.ones(C1, device=logits.device)
    weight[-1] = 0.1  # 'no object' dominates: down-weight it (DETR's eos_coef)
    ce = F.cross_entropy(logits.flatten(0, 1), cls_target.flatten(), weight=weight)
    return ce + box_weight * l1 / max(n_boxes, 1)


@torch.no_grad()
def generate_answers(model: QFT, tokenizer: TextTokenizer, view0: torch.Tensor, questions: list[str],
                     view1: torch.Tensor | None = None, max_new_tokens: int = 100) -> list[str]:
    """Greedy answers to one question per image (report generation: 'What are the findings ...?')."""
    q = tokenizer.encode(questions)
    n = max(len(x) for x in q) + 2
    prompts = torch.full((len(q), n), tokenizer.pad_id, dtype=torch.long)
    for i, ids in enumerate(q):  # left padding so every prompt ends where generation starts
        seq = [tokenizer.bos_id, *ids, tokenizer.sep_id]
        prompts[i, n - len(seq):] = torch.tensor(seq)
    dev = next(model.parameters()).device
    out = model.generate(view0.to(dev), prompts.to(dev), None if view1 is None else view1.to(dev), max_new_tokens)
    return [tokenizer.decode(row.tolist()) for row in out]


def load_labels(data_dir: str | Path, scheme: str = "chexpert") -> tuple[list[str], dict[str, list[int]]]:
    """labels.parquet -> (label names, report_id -> values with 1 / 0 / -1, and -2 where not mentioned)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(Path(data_dir) / "labels.parquet",
                         columns=["report_id", "scheme", "label", "value"]).to_pylist()
    rows = [r for r in rows if r["scheme"] == scheme]
    names = sorted({r["label"] for r in rows})
    col = {n: i for i, n in enumerate(names)}
    out: dict[str, list[int]] = {}
    for r in rows:
        out.setdefault(r["report_id"], [-2] * len(names))[col[r["label"]]] = int(r["value"])
    return names, out
