"""Studies + images + tokens -> training batches.

``build_corpus`` joins reports to images, fills the image cache, trains/loads the tokenizer and
pre-tokenises every report and QA pair into flat int32 arrays (millions of pairs stay cheap and are
shared copy-free with DataLoader workers). ``StudyDataset`` picks, per study and step, one coarse, one
middle and one fine QA pair (seeded by (seed, epoch, position) so a resumed run sees the same pairs);
``collate`` pads dynamically to the longest sequence in the batch.
"""
from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..losses import IGNORE, target_positions
from .cache import ImageCache, prepare_cache
from .images import ImageRecord, build_index, pick_views
from .tables import GRANULARITIES, Study, load_studies
from .tokenizer import TextTokenizer, train_wordpiece

log = logging.getLogger("qft")


class Ragged:
    """A list of int32 sequences stored flat: values[offsets[i]:offsets[i+1]]."""

    def __init__(self, seqs: list[list[int]]):
        lengths = np.fromiter((len(s) for s in seqs), np.int64, len(seqs))
        self.offsets = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.values = np.fromiter((t for s in seqs for t in s), np.int32, int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]


@dataclass
class Corpus:
    studies: list[Study]  # usable studies (text + at least one readable image)
    view0: np.ndarray  # (n,) cache row of the frontal(-ish) image
    view1: np.ndarray  # (n,) cache row of the lateral image, -1: two augmentations of view0
    cache: ImageCache
    tokenizer: TextTokenizer
    reports: Ragged  # report tokens without specials
    qa_q: dict[str, Ragged]  # granularity -> question tokens of every pair
    qa_a: dict[str, Ragged]  # granularity -> answer tokens
    qa_span: dict[str, np.ndarray]  # granularity -> (n, 2) [start, end) of each study's pairs
    # (n,) contrastive key per study (equal keys: not each other's negatives); None: hash of the report tokens
    keys: np.ndarray | None = None

    def use_label_keys(self, label_sets: dict[str, frozenset[str]]) -> int:
        """Key studies by their positive label set where labels.parquet has them (ModelConfig.negatives =
        "labels"); the others keep their report-text key. Returns how many studies got a label key."""
        sets = [label_sets.get(s.report_id) for s in self.studies]
        self.keys = np.array([report_key(self.reports[i]) if labels is None else label_key(labels)
                              for i, labels in enumerate(sets)], np.int64)
        return sum(labels is not None for labels in sets)


def join_images(studies: list[Study], records: list[ImageRecord]) -> tuple[list[Study], list[list[ImageRecord]]]:
    """Images per study (matched on study_id, falling back to report_id); counted warnings for misses."""
    by_key = {s.key: i for i, s in enumerate(studies)}
    by_rid = {s.report_id: i for i, s in enumerate(studies)}
    imgs: list[list[ImageRecord]] = [[] for _ in studies]
    orphan = []
    for r in records:
        i = by_key.get(r.study_key, by_rid.get(r.study_key))
        if i is None:
            orphan.append(r)
        else:
            imgs[i].append(r)
    if orphan:
        log.warning("images: %d image(s) whose study is not in reports.parquet, ignored; first: %s (study %s)",
                    len(orphan), orphan[0].path, orphan[0].study_key)
    keep = [i for i, x in enumerate(imgs) if x]
    if len(keep) < len(studies):
        first = next(s for s, x in zip(studies, imgs) if not x)
        log.warning("images: %d report(s) without any image, skipped; first: report_id=%s study key=%s",
                    len(studies) - len(keep), first.report_id, first.key)
    if not keep:
        raise ValueError("no report matched any image: check that the image index's study_id equals "
                         "reports.parquet's study_id (or report_id)")
    return [studies[i] for i in keep], [imgs[i] for i in keep]


def stack_views(cache: ImageCache, view0: np.ndarray, view1: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (len(idx), S, S) twice: both views of each study in ``idx`` (the first one again where view1 < 0)."""
    v0, v1 = view0[idx], view1[idx]
    a = torch.from_numpy(np.stack([cache[r] for r in v0]))
    b = torch.from_numpy(np.stack([cache[r if r >= 0 else r0] for r, r0 in zip(v1, v0)]))
    return a, b


def _truncate_pair(q: np.ndarray, a: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Fit [BOS] q [SEP] a [EOS] into max_tokens: the question gets at most half, the answer the rest."""
    q = q[: max(1, max_tokens // 2 - 2)]
    room = max_tokens - 3 - len(q)
    return q, a[:room], len(a) <= room


def attach_images(studies: list[Study], images: str | Path, cache_root: str | Path, image_size: int,
                  workers: int = 0, progress: bool = True) -> tuple[list[Study], np.ndarray, np.ndarray, ImageCache]:
    """Join studies to their images, decode + resize each used image once into the cache, and pick the views.
    Returns (studies with a readable image, view0 cache rows, view1 cache rows or -1, the cache)."""
    studies, per_study = join_images(studies, build_index(images))
    paths = list(dict.fromkeys(r.path for recs in per_study for r in recs))
    row = {p: i for i, p in enumerate(paths)}
    cache = prepare_cache(paths, cache_root, image_size, workers=workers, progress=progress)
    ok = cache.ok

    keep, v0, v1, dropped = [], [], [], 0
    for i, recs in enumerate(per_study):
        recs = [r for r in recs if ok[row[r.path]]]
        if not recs:
            dropped += 1
            continue
        f, lat = pick_views(recs)
        keep.append(i)
        v0.append(row[recs[f].path])
        v1.append(row[recs[lat].path] if lat is not None else -1)
    if dropped:
        log.warning("images: %d stud(ies) whose images all failed to decode, skipped (see failures.txt)", dropped)
    studies = [studies[i] for i in keep]
    if not studies:
        raise ValueError("no study has a readable image")
    n_pairs = sum(x >= 0 for x in v1)
    log.info("corpus: %d studies (%d with frontal + lateral), splits %s", len(studies), n_pairs,
             dict(Counter(s.split for s in studies)))
    return studies, np.array(v0, np.int64), np.array(v1, np.int64), cache


def build_corpus(data_dir: str | Path, images: str | Path, cache_root: str | Path, image_size: int,
                 cfg: DataConfig, tokenizer: TextTokenizer | None = None, workers: int = 0,
                 progress: bool = True) -> Corpus:
    studies, v0, v1, cache = attach_images(load_studies(data_dir), images, cache_root, image_size, workers, progress)

    if tokenizer is None:
        train_text = dict.fromkeys(t for s in studies if s.split == "train"  # templated QA: dedupe first
                                   for t in [s.text] + [x for g in s.qa.values() for qa in g for x in qa])
        tokenizer = train_wordpiece(train_text, cfg.vocab_size)
        log.info("tokenizer: trained WordPiece on the training split, vocab %d", tokenizer.vocab_size)

    reports = Ragged([ids[: cfg.report_tokens - 2] for ids in tokenizer.encode([s.text for s in studies])])
    qa_q, qa_a, qa_span = {}, {}, {}
    for g in GRANULARITIES:
        pairs = [qa for s in studies for qa in s.qa.get(g, [])]
        counts = np.array([len(s.qa.get(g, [])) for s in studies], np.int64)
        ends = np.cumsum(counts)
        qa_span[g] = np.stack([ends - counts, ends], 1)
        qa_q[g] = Ragged(tokenizer.encode([q for q, _ in pairs]))
        qa_a[g] = Ragged(tokenizer.encode([a for _, a in pairs]))
    for s in studies:  # the pairs now live as tokens; drop the strings (DataLoader workers fork this object)
        s.qa = {}
    return Corpus(studies, v0, v1, cache, tokenizer, reports, qa_q, qa_a, qa_span)


class StudyDataset(torch.utils.data.Dataset):
    """Item (study index, sample seed) -> dict of numpy arrays for one study."""

    def __init__(self, corpus: Corpus, cfg: DataConfig):
        self.c, self.cfg = corpus, cfg
        self.max_tokens = {"coarse": cfg.coarse_tokens, "middle": cfg.middle_tokens, "fine": cfg.fine_tokens}

    def __len__(self) -> int:
        return len(self.c.studies)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        i, seed = item
        c, tok = self.c, self.c.tokenizer
        rng = random.Random(seed)
        img0 = c.cache[c.view0[i]]
        img1 = c.cache[c.view1[i]] if c.view1[i] >= 0 else img0
        out = {"image0": np.array(img0), "image1": np.array(img1), "two_views": c.view1[i] >= 0,
               "report": np.concatenate([[tok.cls_id], c.reports[i], [tok.sep_id]]).astype(np.int64)}
        if c.keys is not None:
            out["key"] = int(c.keys[i])
        for g in GRANULARITIES:
            start, end = c.qa_span[g][i]
            if end > start:
                k = rng.randrange(start, end)
                q, a, complete = _truncate_pair(c.qa_q[g][k], c.qa_a[g][k], self.max_tokens[g])
                seq = np.concatenate([[tok.bos_id], q, [tok.sep_id], a, [tok.eos_id] if complete else []])
                inputs, targets = seq[:-1].astype(np.int64), seq[1:].astype(np.int64)
                targets[: len(q) + 1] = IGNORE  # the prompt (question + [SEP]) is given, not predicted
            else:  # no pair of this granularity: a 1-token dummy whose loss is masked
                inputs, targets = np.array([tok.bos_id], np.int64), np.array([IGNORE], np.int64)
            out[g] = inputs
            out[g + "_targets"] = targets
        return out


def report_key(ids: np.ndarray) -> int:
    """A stable non-negative int63 key of a token sequence (equal reports -> equal keys)."""
    return int.from_bytes(hashlib.blake2b(np.ascontiguousarray(ids, np.int64).tobytes(), digest_size=8).digest(),
                          "little") >> 1


def label_key(labels: frozenset[str]) -> int:
    """Key of a positive label set, from a different hash space than report_key (a '#' prefix)."""
    text = "#" + "|".join(sorted(labels))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _pad(seqs: list[np.ndarray], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    out = np.full((len(seqs), n), value, np.int64)
    for j, s in enumerate(seqs):
        out[j, : len(s)] = s
    return torch.from_numpy(out)


class Collate:
    """Dynamic padding; images stay uint8 until they reach the device."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        b = {"image0": torch.from_numpy(np.stack([x["image0"] for x in items])),
             "image1": torch.from_numpy(np.stack([x["image1"] for x in items])),
             "two_views": torch.tensor([bool(x["two_views"]) for x in items]),
             "report": _pad([x["report"] for x in items], self.pad_id)}
        b["report_mask"] = (_pad([np.ones(len(x["report"])) for x in items], 0) > 0).long()
        b["report_key"] = torch.tensor([x["key"] if "key" in x else report_key(x["report"]) for x in items],
                                       dtype=torch.long)
        for g in GRANULARITIES:
            b[g] = _pad([x[g] for x in items], self.pad_id)
            b[g + "_mask"] = (_pad([np.ones(len(x[g])) for x in items], 0) > 0).long()
            b[g + "_targets"] = _pad([x[g + "_targets"] for x in items], IGNORE)
            b[g + "_positions"] = target_positions(b[g + "_targets"])
        return b


class StepSampler(torch.utils.data.Sampler):
    """Batches of (index, sample seed) for steps [start_step, total_steps), sharded by rank.

    Epoch e is a permutation seeded by (seed, e); every rank takes its slice of each global batch, and the
    last incomplete global batch of an epoch is dropped, so all ranks run the same number of steps.
    With ``lengths`` and ``group`` > 1, each run of ``group`` global batches of the permutation is sorted by
    length before it is cut into batches, and the epoch's batches are then shuffled: batches of similar
    lengths, so dynamic padding pads less (as HF's group_by_length).
    """

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world: int = 1, lengths: np.ndarray | None = None, group: int = 0):
        self.indices, self.bs, self.seed = np.asarray(indices), batch_size, seed
        self.total, self.start, self.rank, self.world = total_steps, start_step, rank, world
        self.per_epoch = len(self.indices) // (batch_size * world)
        if self.per_epoch == 0:
            raise ValueError(f"{len(self.indices)} training studies < global batch {batch_size * world}: "
                             "lower --batch-size")
        self.lengths = None if lengths is None or group <= 1 else np.asarray(lengths)[self.indices]
        self.group = group

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Positions into ``indices`` for the epoch's full global batches, in step order."""
        gb = self.bs * self.world
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))[: self.per_epoch * gb]
        if self.lengths is None:
            return order
        pool = self.group * gb
        order = np.concatenate([p[np.argsort(-self.lengths[p], kind="stable")]
                                for p in np.split(order, list(range(pool, len(order), pool)))])
        batches = order.reshape(self.per_epoch, gb)
        return batches[np.random.default_rng([self.seed, epoch, 1]).permutation(self.per_epoch)].ravel()

    def __iter__(self):
        gb = self.bs * self.world
        order_epoch, order = -1, None
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != order_epoch:
                order_epoch, order = epoch, self.epoch_order(epoch)
            lo = k * gb + self.rank * self.bs
            yield [(int(self.indices[order[j]]), hash((self.seed, epoch, j)) & 0x7FFFFFFF) for j in range(lo, lo + self.bs)]


def training_loader(corpus: Corpus, cfg: DataConfig, sampler: StepSampler, workers: int,
                    pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The trainer's DataLoader: one padded batch per step of ``sampler``, images as uint8 (augmented on device)."""
    return torch.utils.data.DataLoader(
        StudyDataset(corpus, cfg), batch_sampler=sampler, collate_fn=Collate(corpus.tokenizer.pad_id),
        num_workers=workers, pin_memory=pin_memory, persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None)
