"""QFT losses: MoCo-style feature queues, image-report and query-report contrastive, token-mean LM loss.

Under DDP each rank scores its local rows against the batch gathered from all ranks plus the queues;
the queues are filled with the gathered features so they stay identical on every rank.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -100


@dataclass
class QFTLoss:
    """Named loss terms of one step (scalars); ``loss`` is the weighted total that is back-propagated."""
    loss: torch.Tensor
    itc: torch.Tensor  # image-report contrastive, both directions summed
    qrc: torch.Tensor  # query-report contrastive (max over queries), both directions summed
    lm_coarse: torch.Tensor  # token-mean LM loss on the answer of the coarse pair (0 if none in the batch)
    lm_middle: torch.Tensor
    lm_fine: torch.Tensor

    def items(self) -> dict[str, float]:
        """Host floats (one sync)."""
        vals = torch.stack([getattr(self, f.name).detach().float() for f in fields(self)]).tolist()
        return {f.name: v for f, v in zip(fields(self), vals)}


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from all ranks along dim 0; gradients flow only into the local slice (as open_clip)."""
    rank, n = world()
    if n == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts)


class FeatureQueue(nn.Module):
    """A ring buffer of L2-normalised features and the report key of each row. Any number of rows can be
    pushed (wraps around; only the newest ``size`` are kept if more arrive at once); slots never written
    are masked out of the logits."""

    def __init__(self, size: int, *shape: int):
        super().__init__()
        self.register_buffer("feats", torch.zeros(size, *shape))
        self.register_buffer("keys", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.feats.shape[0]

    def logit_bias(self) -> torch.Tensor:
        """(size,) 0 for filled slots, -inf for empty ones (static shape: fine for torch.compile)."""
        idx = torch.arange(self.size, device=self.feats.device)
        return torch.where(idx < self.filled, 0.0, float("-inf"))

    @torch.no_grad()
    def push(self, x: torch.Tensor, keys: torch.Tensor) -> None:
        if self.size == 0:  # queue disabled
            return
        x, keys = x.detach()[-self.size:].to(self.feats.dtype), keys[-self.size:]
        n = x.shape[0]
        idx = (self.ptr + torch.arange(n, device=x.device)) % self.size
        self.feats[idx] = x
        self.keys[idx] = keys
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))


def image_report_contrastive(img: torch.Tensor, txt: torch.Tensor, keys: torch.Tensor, all_keys: torch.Tensor,
                             img_queue: FeatureQueue, txt_queue: FeatureQueue, temperature: float,
                             use_queue: bool = True, img_m: torch.Tensor | None = None,
                             txt_m: torch.Tensor | None = None) -> torch.Tensor:
    """img, txt: (B, E) normalised local embeddings; keys (B,) report-text keys, all_keys gathered (W*B,).
    CE(i->t) + CE(t->i) against the gathered batch + queue. img_m / txt_m: the batch's features from the
    momentum encoders (MoCo keys): when given, the candidates are those (no gradient), so the positive and the
    queued negatives come from the same slowly moving encoder; otherwise the online features themselves."""
    rank, _ = world()
    B = img.shape[0]
    all_img = gather_rows(img if img_m is None else img_m)  # (W*B, E)
    all_txt = gather_rows(txt if txt_m is None else txt_m)
    labels = torch.arange(B, device=img.device) + rank * B
    i2t = img @ torch.cat([all_txt, txt_queue.feats.to(img.dtype)]).t() + _bias(keys, all_keys, txt_queue, rank, use_queue)
    t2i = txt @ torch.cat([all_img, img_queue.feats.to(txt.dtype)]).t() + _bias(keys, all_keys, img_queue, rank,
                                                                              use_queue)
    return F.cross_entropy(i2t.float() / temperature, labels) + F.cross_entropy(t2i.float() / temperature, labels)


def _bias(keys: torch.Tensor, all_keys: torch.Tensor, queue: FeatureQueue, rank: int,
          use_queue: bool = True) -> torch.Tensor:
    """(B, W*B + K) additive logit mask: -inf for empty queue slots and for false negatives, i.e. other
    rows (batch or queue) of the same report text (identical 'no acute process' reports are common)."""
    B = keys.shape[0]
    cand = torch.cat([all_keys, queue.keys])
    same = keys[:, None] == cand[None, :]  # (B, W*B + K)
    pos = torch.arange(B, device=keys.device) + rank * B
    same[torch.arange(B, device=keys.device), pos] = False  # the positive itself stays
    empty = torch.cat([torch.zeros_like(all_keys, dtype=torch.bool),
                       queue.logit_bias() < 0 if use_queue else torch.ones_like(queue.keys, dtype=torch.bool)])
    return torch.zeros(same.shape, device=keys.device).masked_fill(same | empty[None, :], float("-inf"))


def query_report_contrastive(queries: torch.Tensor, txt: torch.Tensor, keys: torch.Tensor, all_keys: torch.Tensor,
                             query_queues: list[FeatureQueue], txt_queue: FeatureQueue,
                             temperature: float, use_queue: bool = True, queries_m: torch.Tensor | None = None,
                             txt_m: torch.Tensor | None = None) -> torch.Tensor:
    """queries: (V, B, Q, E) normalised per view; txt: (B, E). Similarity of a report and an image =
    max over the image's queries, averaged over the V views; CE(report -> images) + CE(image -> reports).
    queries_m / txt_m: momentum-encoder candidates of the batch, as in ``image_report_contrastive``."""
    rank, _ = world()
    V, B = queries.shape[:2]
    labels = torch.arange(B, device=txt.device) + rank * B
    all_txt = gather_rows(txt if txt_m is None else txt_m)  # (W*B, E)
    cand_txt = torch.cat([all_txt, txt_queue.feats.to(txt.dtype)])  # (W*B + K, E)
    keys_q = queries if queries_m is None else queries_m
    t2i, i2t = 0.0, 0.0
    for v in range(V):
        all_q = gather_rows(keys_q[v])  # (W*B, Q, E)
        cand_q = torch.cat([all_q, query_queues[v].feats.to(txt.dtype)])  # (W*B + K, Q, E)
        t2i = t2i + torch.einsum("be,nqe->bnq", txt, cand_q).amax(-1) + _bias(keys, all_keys, query_queues[v], rank, use_queue)
        i2t = i2t + torch.einsum("bqe,ne->bnq", queries[v], cand_txt).amax(-1)
    i2t = i2t + _bias(keys, all_keys, txt_queue, rank, use_queue)
    return (F.cross_entropy(t2i.float() / (V * temperature), labels)
            + F.cross_entropy(i2t.float() / (V * temperature), labels))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy: logits (..., V), targets (...) already shifted, IGNORE where nothing is predicted
    (the model passes only the target positions: (N, V), (N,)). 0 (with a graph) when there is no target token,
    so a missing granularity never gives NaN."""
    n = (targets != IGNORE).sum()
    total = F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=IGNORE, reduction="sum")
    return total / n.clamp(min=1)


def target_positions(targets: torch.Tensor) -> torch.Tensor:
    """(B, L) shifted targets -> (N,) flat indices of the positions that predict a token. The collate computes
    them on the host, so the model's gather has an input-sized shape (no data-dependent op for torch.compile)."""
    return (targets.flatten() != IGNORE).nonzero().squeeze(1)
