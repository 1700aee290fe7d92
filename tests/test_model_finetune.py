"""Downstream heads on a tiny QFT: each trains a few steps with a finite, decreasing loss."""
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from model.data.tokenizer import train_wordpiece
from model.finetune import (ClassificationHead, DetectionHead, SegmentationHead, detection_loss, generate_answers,
                            load_labels, multilabel_loss)
from model.qft import QFT
from test_model_qft import BOS, EOS, PAD, V, tiny


def _qft():
    torch.manual_seed(0)
    return QFT(tiny().model, V, PAD, BOS, EOS)


def _images(B=4, seed=0):
    return torch.randint(0, 256, (B, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _fit(head, loss_fn, steps=15, lr=3e-3):
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    return losses


def test_classification_linear_probe_and_uncertain_labels():
    head = ClassificationHead(_qft(), num_labels=3, freeze=True)
    assert not any(p.requires_grad for p in head.qft.parameters())
    x = _images()
    y = torch.tensor([[1, 0, -1], [0, 1, 1], [1, 1, 0], [0, 0, -2]])
    losses = _fit(head, lambda: multilabel_loss(head(x), y))
    assert losses[-1] < losses[0] * 0.7
    none_known = multilabel_loss(head(x), torch.full((4, 3), -1))  # a batch without a known label: 0, not NaN
    assert none_known.item() == 0.0 and none_known.requires_grad


def test_segmentation_full_resolution_logits():
    head = SegmentationHead(_qft(), num_classes=2)
    x = _images()
    mask = (x > 128).long()
    assert head(x).shape == (4, 2, 32, 32)
    losses = _fit(head, lambda: torch.nn.functional.cross_entropy(head(x), mask))
    assert losses[-1] < losses[0]


def test_detection_matches_queries_to_boxes():
    head = DetectionHead(_qft(), num_classes=2)
    x = _images(2)
    targets = [{"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
               {"labels": torch.tensor([], dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    logits, boxes = head(x)
    assert logits.shape == (2, 4, 3) and boxes.shape == (2, 4, 4)
    losses = _fit(head, lambda: detection_loss(*head(x), targets))
    assert losses[-1] < losses[0]


def test_generate_answers_and_labels_table(tmp_path):
    tok = train_wordpiece(["is there an effusion ? yes no the heart is enlarged"], V)
    model = QFT(tiny().model, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id).eval()
    out = generate_answers(model, tok, _images(2), ["is there an effusion?", "the heart?"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
    pq.write_table(pa.Table.from_pylist([
        {"report_id": "r1", "scheme": "chexpert", "label": "Edema", "value": 1},
        {"report_id": "r1", "scheme": "chestxray14", "label": "Mass", "value": 0},
        {"report_id": "r2", "scheme": "chexpert", "label": "Atelectasis", "value": -1}]), tmp_path / "labels.parquet")
    names, labels = load_labels(tmp_path)
    assert names == ["Atelectasis", "Edema"] and labels == {"r1": [-2, 1], "r2": [-1, -2]}
