"""Queues and loss functions in isolation (no backbones)."""
import math

import torch
import torch.nn.functional as F

from model.losses import (IGNORE, FeatureQueue, QFTLoss, _bias, image_report_contrastive, lm_loss,
                          query_report_contrastive)


def test_queue_wraps_with_a_batch_size_that_does_not_divide_it():
    q = FeatureQueue(10, 2)
    for step in range(3):  # 3 pushes of 4 rows into 10 slots
        q.push(torch.full((4, 2), float(step)), torch.arange(4) + 10 * step)
    assert q.ptr.item() == 2 and q.filled.item() == 10
    assert q.feats[:, 0].tolist() == [2, 2, 0, 0, 1, 1, 1, 1, 2, 2]
    assert q.keys.tolist() == [22, 23, 2, 3, 10, 11, 12, 13, 20, 21]


def test_queue_keeps_newest_rows_when_a_push_exceeds_it_and_masks_empty_slots():
    q = FeatureQueue(4, 1)
    assert torch.isinf(q.logit_bias()).all()
    q.push(torch.arange(3.0)[:, None], torch.arange(3))
    assert q.logit_bias().tolist() == [0, 0, 0, float("-inf")]
    q.push(torch.arange(10.0, 16.0)[:, None], torch.arange(6))
    assert sorted(q.feats[:, 0].tolist()) == [12, 13, 14, 15] and q.filled.item() == 4
    assert FeatureQueue(0, 3).push(torch.ones(2, 3), torch.arange(2)) is None  # size 0: disabled


def _unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_contrastive_uses_queue_and_masks_duplicate_reports():
    B, E, K = 4, 8, 6
    img = _unit(B, E, 0)
    keys = torch.arange(B)
    iq, tq = FeatureQueue(K, E), FeatureQueue(K, E)
    perfect = image_report_contrastive(img, img, keys, keys, iq, tq, 0.07)
    wrong = image_report_contrastive(img, img.roll(1, 0), keys, keys, iq, tq, 0.07)
    assert perfect < wrong
    # empty queue == batch-only CLIP loss
    logits = img @ img.t() / 0.07
    ref = F.cross_entropy(logits, torch.arange(B)) * 2
    assert torch.allclose(perfect, ref, atol=1e-5)
    # queue rows of the positive's own report text are masked: they are not negatives
    tq.push(img.repeat(2, 1)[:K], keys.repeat(2)[:K])
    iq.push(img.repeat(2, 1)[:K], keys.repeat(2)[:K])
    bias = _bias(keys, keys, tq, rank=0)  # (B, B + K)
    assert bias.shape == (B, B + K) and (bias[:, :B] == 0).all()
    assert torch.isinf(bias[0, B:]).tolist() == [True, False, False, False, True, False]
    # ... but the same features under other keys are hard negatives
    tq.keys += 100
    iq.keys += 100
    assert image_report_contrastive(img, img, keys, keys, iq, tq, 0.07) > ref + 1
    assert torch.allclose(image_report_contrastive(img, img, keys, keys, iq, tq, 0.07, use_queue=False), ref, atol=1e-5)
    # two rows of one report in the batch are not each other's negatives
    dup = torch.tensor([0, 0, 2, 3])
    assert image_report_contrastive(img, img, dup, dup, FeatureQueue(K, E), FeatureQueue(K, E), 0.07) < ref


def test_query_report_contrastive_takes_max_over_queries():
    B, Q, E = 3, 5, 8
    txt = _unit(B, E, 1)
    queries = _unit(2 * B * Q, E, 2).view(2, B, Q, E)
    keys = torch.arange(B)
    qqs, tq = [FeatureQueue(4, Q, E), FeatureQueue(4, Q, E)], FeatureQueue(4, E)
    base = query_report_contrastive(queries, txt, keys, keys, qqs, tq, 0.07)
    planted = queries.clone()
    planted[:, torch.arange(B), 3] = txt  # one query per image equals its report: max picks it
    better = query_report_contrastive(planted, txt, keys, keys, qqs, tq, 0.07)
    assert better < base and math.isfinite(better.item())


def test_lm_loss_token_mean_and_empty_batch():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    tgt = torch.tensor([[1, IGNORE, 2], [IGNORE, IGNORE, 3]])
    ref = F.cross_entropy(logits.reshape(-1, 7)[[0, 2, 5]], torch.tensor([1, 2, 3]))
    assert torch.allclose(lm_loss(logits, tgt), ref)
    empty = lm_loss(logits, torch.full((2, 3), IGNORE))
    assert empty.item() == 0.0
    empty.backward()  # a masked-out granularity still has a graph
    assert torch.isfinite(logits.grad).all()


def test_loss_outputs_are_named():
    out = QFTLoss(*(torch.tensor(float(i)) for i in range(6)))
    assert list(out.items()) == ["loss", "itc", "qrc", "lm_coarse", "lm_middle", "lm_fine"]
    assert out.items()["lm_fine"] == 5.0


def test_contrastive_candidates_from_momentum_features_get_no_gradient():
    B, E, K = 4, 8, 6
    img = _unit(B, E, 0).requires_grad_()
    txt = _unit(B, E, 1).requires_grad_()
    img_m, txt_m = _unit(B, E, 2), _unit(B, E, 3)
    keys = torch.arange(B)
    loss = image_report_contrastive(img, txt, keys, keys, FeatureQueue(K, E), FeatureQueue(K, E), 0.07,
                                    img_m=img_m, txt_m=txt_m)
    ref = (F.cross_entropy(img @ txt_m.t() / 0.07, keys) + F.cross_entropy(txt @ img_m.t() / 0.07, keys))
    assert torch.allclose(loss, ref, atol=1e-5)
    loss.backward()
    assert img.grad is not None and txt.grad is not None
    Q = 3
    queries = _unit(2 * B * Q, E, 4).view(2, B, Q, E).requires_grad_()
    queries_m = _unit(2 * B * Q, E, 5).view(2, B, Q, E)
    qrc = query_report_contrastive(queries, txt, keys, keys, [FeatureQueue(K, Q, E), FeatureQueue(K, Q, E)],
                                   FeatureQueue(K, E), 0.07, queries_m=queries_m, txt_m=txt_m)
    t2i = sum(torch.einsum("be,nqe->bnq", txt, queries_m[v]).amax(-1) for v in range(2))
    i2t = sum(torch.einsum("bqe,ne->bnq", queries[v], txt_m).amax(-1) for v in range(2))
    ref = F.cross_entropy(t2i / 0.14, keys) + F.cross_entropy(i2t / 0.14, keys)
    assert torch.allclose(qrc, ref, atol=1e-5)
