"""Held-out evaluation of a pre-trained QFT, no labels needed beyond the QA tables:

- image-report retrieval (top-1 both ways; exact report text, and label-aware when labels.parquet exists);
- closed visual question answering: the decoder's score for "yes" vs "no" as the first answer token of every
  held-out closed fine question ("Is there a pleural effusion?"), as AUROC and balanced accuracy. The same is
  computed with the images shuffled among the studies: what remains then is the question prior; the gap is
  what the answer owes to the image. The within-question AUROC (per distinct question, averaged weighted by
  its count) has no question prior at all: 0.5 for a decoder that ignores the image.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .data.dataset import Collate, Corpus, StudyDataset, report_key
from .qft import QFT


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of scores for labels 1 vs 0 (Mann-Whitney U, ties count half; other label
    values are ignored); NaN unless both classes occur."""
    keep = (labels == 0) | (labels == 1)
    s, pos = np.asarray(scores, np.float64)[keep], np.asarray(labels)[keep] == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])  # runs of equal scores
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s), np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # average 1-based rank of each run
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion p observed over n trials (e.g. top-1 retrieval accuracy over
    n held-out studies): how far a figure can move by chance alone, as another seed or summation order moves it."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def bf16_autocast(device: torch.device, precision: str):
    """A factory of autocast contexts: bf16 on a GPU when the config asks for it, a no-op otherwise."""
    enabled = precision == "bf16" and device.type == "cuda"
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass
class HeldOut:
    """The held-out studies encoded once (un-augmented views), for every metric below."""
    indices: np.ndarray  # (n,) study indices into the corpus
    image: torch.Tensor  # (n, E) image embeddings (image-report space)
    report: torch.Tensor  # (n, E) report embeddings
    keys: torch.Tensor  # (n,) exact report-text keys (also when training keys studies by label set)
    context: torch.Tensor  # (n, T, Hd) what the decoder cross-attends to


@torch.no_grad()
def encode_held_out(model: QFT, corpus: Corpus, data_cfg, indices: np.ndarray, device: torch.device,
                    batch_size: int, autocast=contextlib.nullcontext) -> HeldOut:
    was_training = model.training
    model.eval()
    ds, collate = StudyDataset(corpus, data_cfg), Collate(corpus.tokenizer.pad_id)
    imgs, txts, keys, ctx = [], [], [], []
    for lo in range(0, len(indices), batch_size):
        items = [ds[(int(i), 0)] for i in indices[lo:lo + batch_size]]
        b = to_device(collate(items), device)
        with autocast():
            f = model.encode_image(b["image0"], b["image1"])
            txts.append(model.encode_text(b["report"], b["report_mask"]).float())
        imgs.append(f.embedding.float())
        ctx.append(f.decoder_context)
        keys.append(torch.tensor([report_key(x["report"]) for x in items], device=device))
    model.train(was_training)
    return HeldOut(np.asarray(indices), torch.cat(imgs), torch.cat(txts), torch.cat(keys), torch.cat(ctx))


def retrieval_eval(model: QFT, corpus: Corpus, data_cfg, indices: np.ndarray, device: torch.device,
                   batch_size: int, autocast=contextlib.nullcontext, labels: dict | None = None,
                   encoded: HeldOut | None = None) -> dict:
    """Top-1 image->report and report->image accuracy among ``indices`` (un-augmented views). Retrieving a
    report with exactly the same text as the true one counts as a hit (templated normals are common);
    ``chance`` is the expected accuracy of a random ranking under that rule.

    With ``labels`` (report_id -> set of positive labels, e.g. CheXpert) also the label-aware top-1: a hit
    when the retrieved report has the same label set as the true one. Differently worded reports of the same
    findings (every normal study, say) cannot be told apart from the image, so the exact metric is capped
    well below 1; ``label_chance`` is the label-aware accuracy of a random ranking, and ``*_label_prior`` the
    expected accuracy of the items actually retrieved if the queries were shuffled: a model that retrieves the
    most common label set (normal) for everything beats chance but not its prior; only the excess over the
    prior comes from matching this image with this report."""
    e = encoded or encode_held_out(model, corpus, data_cfg, indices, device, batch_size, autocast)
    sim = e.image @ e.report.t()  # (n images, n reports)
    key = e.keys
    same = (key[:, None] == key[None, :]).float()  # (n, n) identical report text
    out = {"i2t_top1": (key[sim.argmax(1)] == key).float().mean().item(),
           "t2i_top1": (key[sim.argmax(0)] == key).float().mean().item(), "n": sim.shape[0],
           "chance": same.mean().item()}
    if labels:
        sets = [labels.get(corpus.studies[int(i)].report_id) for i in e.indices]
        ids = {x: j for j, x in enumerate(dict.fromkeys(sets))}
        lab = torch.tensor([ids[x] if x is not None else -1 - j for j, x in enumerate(sets)], device=sim.device)
        freq = (lab[:, None] == lab[None, :]).float().mean(1)  # (n,) share of studies with each one's label set
        i2t, t2i = sim.argmax(1), sim.argmax(0)
        out.update({"i2t_label_top1": (lab[i2t] == lab).float().mean().item(),
                    "t2i_label_top1": (lab[t2i] == lab).float().mean().item(),
                    "label_chance": freq.mean().item(),
                    # the same retrieved items scored against shuffled queries: what the ranking's preference
                    # for common label sets earns alone (a hub retrieved for every query scores its share)
                    "i2t_label_prior": freq[i2t].mean().item(), "t2i_label_prior": freq[t2i].mean().item()})
    return out


# ----------------------------------------------------------------------------------------------------
# closed VQA on held-out studies


def closed_questions(corpus: Corpus, indices: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(study of each question, question tokens, answer 1 = yes / 0 = no) for the fine pairs of ``indices``
    whose whole answer is the single token 'yes' or 'no'."""
    tok = corpus.tokenizer
    yes, no = tok.encode(["yes", "no"])
    if len(yes) != 1 or len(no) != 1:  # a tokenizer without whole-word yes/no: nothing to score this way
        return np.zeros(0, np.int64), [], np.zeros(0, np.int64)
    span, qa_q, qa_a = corpus.qa_span["fine"], corpus.qa_q["fine"], corpus.qa_a["fine"]
    study, questions, answers = [], [], []
    for i in indices:
        for k in range(*span[i]):
            a = qa_a[k]
            if len(a) == 1 and a[0] in (yes[0], no[0]):
                study.append(int(i))
                questions.append(qa_q[k])
                answers.append(int(a[0] == yes[0]))
    return np.array(study, np.int64), questions, np.array(answers, np.int64)


@torch.no_grad()
def closed_vqa_eval(model: QFT, corpus: Corpus, data_cfg, indices: np.ndarray, device: torch.device,
                    batch_size: int, autocast=contextlib.nullcontext, seed: int = 0,
                    encoded: HeldOut | None = None) -> dict:
    """AUROC and balanced accuracy of logit('yes') - logit('no') after "[BOS] question [SEP]", on the true images
    and on images shuffled among ``indices`` (a fixed derangement: every question sees another study)."""
    study, questions, answers = closed_questions(corpus, indices)
    if len(study) == 0 or len(indices) < 2:
        return {}
    tok = corpus.tokenizer
    e = encoded or encode_held_out(model, corpus, data_cfg, indices, device, batch_size, autocast)
    ctx = {int(i): c for i, c in zip(e.indices, e.context)}
    was_training = model.training
    model.eval()
    order = np.asarray(indices, np.int64)
    perm = np.random.default_rng(seed).permutation(len(order))
    shift = {int(order[p]): int(order[perm[(j + 1) % len(perm)]]) for j, p in enumerate(perm)}  # a cycle: no fixed point
    scores = {"true": [], "shuffled": []}
    for lo in range(0, len(study), batch_size):
        qs = questions[lo:lo + batch_size]
        for name, which in (("true", lambda i: i), ("shuffled", lambda i: shift[i])):
            context = torch.stack([ctx[which(int(i))] for i in study[lo:lo + batch_size]])
            scores[name].append(yes_no_scores(model, tok, qs, context, data_cfg.fine_tokens, autocast))
    model.train(was_training)
    out = {"vqa_n": len(answers), "vqa_yes": int(answers.sum())}
    # questions asked with the same words: their AUROC can only come from the image (no question prior)
    groups: dict[tuple, list[int]] = {}
    for j, q in enumerate(questions):
        groups.setdefault(tuple(q.tolist()), []).append(j)
    for name, suffix in (("true", ""), ("shuffled", "_shuffled")):
        # rounded: the same question scored in batches of other padded lengths differs by float noise, which
        # would break its ties
        s = torch.cat(scores[name]).numpy().round(4)
        pred = s > 0
        recall_yes = pred[answers == 1].mean() if answers.any() else float("nan")
        recall_no = (~pred[answers == 0]).mean() if (answers == 0).any() else float("nan")
        out["vqa_auroc" + suffix] = auroc(s, answers)
        out["vqa_bal_acc" + suffix] = float(np.nanmean([recall_yes, recall_no]))
        per_q = [(auroc(s[g], answers[g]), len(g)) for g in groups.values()]
        per_q = [(a, n) for a, n in per_q if not np.isnan(a)]
        out["vqa_auroc_within_q" + suffix] = (float(np.average([a for a, _ in per_q], weights=[n for _, n in per_q]))
                                              if per_q else float("nan"))
    return out


@torch.no_grad()
def yes_no_scores(model: QFT, tok, questions: list[np.ndarray], context: torch.Tensor, max_tokens: int,
                  autocast=contextlib.nullcontext) -> torch.Tensor:
    """(len(questions),) logit('yes') - logit('no') for the first answer token after "[BOS] question [SEP]"
    (the training layout; right-padded, so each row is read at its own [SEP]). context: (B, T, Hd)."""
    yes, no = (tok.encode([w])[0][0] for w in ("yes", "no"))
    qs = [np.concatenate([[tok.bos_id], q[: max(1, max_tokens // 2 - 2)], [tok.sep_id]]) for q in questions]
    lengths = torch.tensor([len(q) for q in qs])
    ids = torch.full((len(qs), int(lengths.max())), tok.pad_id, dtype=torch.long)
    for j, q in enumerate(qs):
        ids[j, : len(q)] = torch.from_numpy(q.astype(np.int64))
    ids = ids.to(context.device)
    with autocast():
        rows, last = torch.arange(len(qs), device=context.device), lengths.to(context.device) - 1
        logits = model.decoder_logits(ids, context)[rows, last].float()
    return (logits[:, yes] - logits[:, no]).cpu()
