"""QFT pre-training loop: one file, top to bottom.

Single process (CPU or one GPU) without torch.distributed; ``torchrun --nproc_per_node N`` (DDP, NCCL on
GPU / gloo on CPU) with no code change. bf16 autocast + TF32 + fused AdamW on GPU, optional torch.compile,
cosine schedule with warm-up, gradient clipping, a NaN/Inf guard, atomic, verified safetensors checkpoints (the
last ``keep_checkpoints`` kept) and an exact ``--resume`` (data order, QA choice, augmentation and dropout are all
seeded by (seed, step, rank)) that falls back past a damaged checkpoint and cuts metrics.csv back to its step.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.flop_counter
from tqdm import tqdm

from .augment import augment
from .checkpoint import (CheckpointError, Found, find_checkpoint, load_checkpoint, load_config_from,
                         save_checkpoint, slots)
from .config import QFTConfig
from .data.dataset import StepSampler, build_corpus, training_loader
from .data.tables import holdout, load_label_sets
from .data.tokenizer import TextTokenizer
from .evaluate import bf16_autocast, closed_vqa_eval, encode_held_out, retrieval_eval, to_device
from .qft import QFT, compile_blocks, cosine_lr, param_count, set_grad_checkpointing

log = logging.getLogger("qft")

# dense bf16 peak FLOP/s by device name, for MFU (as nanoGPT: achieved model FLOP/s over this)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12}


class NonFiniteLoss(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------------
# set-up


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world, device). Under torchrun (WORLD_SIZE > 1) joins the process group; else no torch.distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if world > 1:
        if not dist.is_initialized():
            # long timeout: rank 0 may fill the image cache while the others wait at the first barrier
            dist.init_process_group("nccl" if want_cuda else "gloo", timeout=datetime.timedelta(hours=3))
        rank, local = dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    else:
        rank, local = 0, 0
    if want_cuda:
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def setup_logging(out: Path, rank: int) -> None:
    log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")

    class TqdmHandler(logging.Handler):  # keeps the progress bar intact
        def emit(self, record):
            tqdm.write(self.format(record), file=sys.stderr)

    h = TqdmHandler()
    h.setFormatter(fmt)
    log.addHandler(h)
    if rank == 0:
        fh = logging.FileHandler(out / "train.log")
        fh.setFormatter(fmt)
        log.addHandler(fh)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def peak_flops(cfg_value: float | None, device: torch.device) -> float | None:
    if cfg_value:
        return cfg_value * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices only (nanoGPT); fused kernel on GPU."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.type == "cuda")


# ----------------------------------------------------------------------------------------------------
# the loop


def mark_dynamic_lengths(batch: dict[str, torch.Tensor]) -> None:
    """Dynamic padding changes every sequence length (and the number of target positions) each batch: say so to
    dynamo up front, so the whole-model graph compiles once instead of once static and again for each
    dimension it later sees vary (three compiles of minutes each)."""
    for k, v in batch.items():
        if k.endswith("_positions"):
            torch._dynamo.maybe_mark_dynamic(v, 0)
        elif v.ndim == 2:  # (B, L) tokens, masks, targets
            torch._dynamo.maybe_mark_dynamic(v, 1)


def resume_point(ckpt_dir: Path, resume: bool | str, rank: int, world: int) -> Found:
    """The checkpoint to resume from (rank 0 verifies, the others are told); one warning per damaged newer one.
    No usable checkpoint: CheckpointError (--resume) or a warning and step 0 (--resume-or-start)."""
    found = find_checkpoint(ckpt_dir) if rank == 0 else None
    if world > 1 and dist.is_initialized():
        box = [found]
        dist.broadcast_object_list(box, src=0)
        found = box[0]
    if found.path is None:
        why = "; ".join(found.problems) or f"{ckpt_dir}: not found"
        if resume != "or-start":
            raise CheckpointError(f"--resume: no usable checkpoint ({why}); --resume-or-start starts from step 0")
        if rank == 0:
            log.warning("--resume-or-start: no usable checkpoint (%s): starting from step 0", why)
    elif rank == 0:
        for problem in found.problems:
            log.warning("--resume: %s; falling back to %s (step %d)", problem, found.path, found.state["step"])
    return found


def cut_metrics(path: Path, step: int) -> list[str] | None:
    """Drop metrics.csv rows after ``step`` (an interrupted run's, which the resumed run logs again), so no step
    appears twice; returns the file's own columns. Rewritten atomically."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return None
    header, body = rows[0], rows[1:]

    def keep(r: list[str]) -> bool:
        try:
            return int(r[header.index("step")]) <= step
        except (ValueError, IndexError):  # a half-written last line of a killed run
            return False
    kept = [r for r in body if keep(r)]
    if len(kept) < len(body):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([header, *kept])
        os.replace(tmp, path)
        log.info("%s: cut back to step %d (%d rows of the interrupted run dropped)", path, step,
                 len(body) - len(kept))
    return header


def pretrain(cfg: QFTConfig, data: str | Path, images: str | Path, out: str | Path, *, cache: str | Path | None = None,
             resume: bool | str = False, device: str = "auto", stop_at: int | None = None, progress: bool = True) -> dict:
    """Pre-train QFT; returns a summary (final step, last losses, retrieval accuracy, checkpoint path).

    ``resume``: False starts from step 0; True continues from the newest usable checkpoint in OUT (falling back
    past damaged ones, with a warning each) and raises CheckpointError when there is none; "or-start" does the
    same but starts from step 0 when there is none."""
    if resume not in (False, True, "or-start"):
        raise ValueError(f"resume must be False, True or 'or-start', not {resume!r}")
    out = Path(out)
    if resume is True and not slots(out / "checkpoint"):  # refused before OUT or its train.log is created
        raise CheckpointError(f"--resume: no usable checkpoint ({out / 'checkpoint'}: not found); "
                              "--resume-or-start starts from step 0")
    out.mkdir(parents=True, exist_ok=True)
    started_group = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    rank, world, dev = setup_distributed(device)
    setup_logging(out, rank)
    try:
        return _pretrain(cfg, data, images, out, cache, resume, stop_at, progress, rank, world, dev)
    finally:
        for h in list(log.handlers):  # hand logging back (library use, pytest's caplog)
            h.close()
            log.removeHandler(h)
        log.propagate = True
        if started_group and dist.is_initialized():
            dist.destroy_process_group()


def _pretrain(cfg: QFTConfig, data, images, out: Path, cache, resume: bool, stop_at: int | None, progress: bool,
              rank: int, world: int, dev: torch.device) -> dict:
    ckpt_dir = out / "checkpoint"
    found = resume_point(ckpt_dir, resume, rank, world) if resume else Found(None, None, [], [])
    ckpt = found.path
    if not resume and rank == 0 and slots(ckpt_dir):
        log.warning("%s: a checkpoint is there and --resume was not given: starting from step 0; the first save "
                    "replaces it", ckpt_dir)
    if ckpt is not None:  # the checkpoint's model/data config wins; the training schedule may be extended
        saved = load_config_from(ckpt)
        cfg = QFTConfig(cfg.name, saved.model, saved.data, cfg.train)
    tc = cfg.train
    torch.manual_seed(tc.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- data: rank 0 fills the cache and trains the tokenizer, the others reuse them ----------------
    tok = None
    tok_src = (ckpt / "tokenizer") if ckpt is not None else (cfg.data.tokenizer or cfg.model.text_backbone)
    if tok_src:
        tok = TextTokenizer.load(tok_src)
    cache_root = Path(cache) if cache else out / "cache"
    if rank == 0:
        corpus = build_corpus(data, images, cache_root, cfg.model.image_size, cfg.data, tok,
                              workers=max(cfg.data.workers, min(os.cpu_count() or 1, 8)), progress=progress)
        corpus.tokenizer.save(out / "tokenizer")
    barrier()
    if rank != 0:
        corpus = build_corpus(data, images, cache_root, cfg.model.image_size, cfg.data,
                              tok or TextTokenizer.load(out / "tokenizer"), progress=False)
    tok = corpus.tokenizer
    train_idx, held_idx = holdout(corpus.studies, tc.seed)
    eval_idx = held_idx[: tc.eval_studies]
    eval_labels = load_label_sets(data)  # optional: label-aware retrieval next to the exact one
    if cfg.model.negatives == "labels":
        n = corpus.use_label_keys(eval_labels)
        log.info("contrastive negatives: studies with the same positive CheXpert labels are not negatives "
                 "(%d of %d studies labelled)", n, len(corpus.studies))

    # ---- model + optimiser ------------------------------------------------------------------------
    model = QFT(cfg.model, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id).to(dev)
    if tc.grad_checkpointing:
        set_grad_checkpointing(model)
    opt = make_optimizer(model, tc, dev)
    start = 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, opt, verify=False)  # verified by resume_point
        start = state["step"]
        if state.get("world", 1) != world:
            log.warning("resuming a %d-process run on %d processes: data order differs from an uninterrupted run",
                        state.get("world", 1), world)
        log.info("resumed from %s at step %d", ckpt, start)
    log.info("model %s: %.1fM parameters; %d train / %d held-out studies; %d process(es) on %s",
             cfg.name, param_count(model) / 1e6, len(train_idx), len(held_idx), world, dev)
    cfg.save(out / "config.json")

    ddp_model = model
    if world > 1:  # queues are filled with gathered features on every rank: no buffer broadcast needed
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=False)
    step_fn = ddp_model
    if tc.compile and tc.compile_scope == "blocks":
        log.info("torch.compile: %d repeated blocks (regional)", compile_blocks(model))
    elif tc.compile:
        step_fn = torch.compile(ddp_model)
    autocast = bf16_autocast(dev, tc.precision)

    sampler = StepSampler(train_idx, tc.batch_size, tc.seed, tc.steps, start, rank, world,
                          lengths=np.diff(corpus.reports.offsets), group=cfg.data.group_by_length)
    loader = training_loader(corpus, cfg.data, sampler, cfg.data.workers, pin_memory=dev.type == "cuda")

    # ---- metrics ------------------------------------------------------------------------------------
    metrics_path = out / "metrics.csv"
    fields = ["step", "lr", "loss", "itc", "qrc", "lm_coarse", "lm_middle", "lm_fine", "grad_norm",
              "samples_per_s", "mfu", "i2t_top1", "t2i_top1", "chance", "i2t_label_top1", "t2i_label_top1",
              "label_chance", "vqa_n", "vqa_auroc", "vqa_bal_acc", "vqa_auroc_within_q", "vqa_auroc_shuffled",
              "vqa_bal_acc_shuffled", "vqa_auroc_within_q_shuffled", "i2t_label_prior", "t2i_label_prior"]
    writer = None
    if rank == 0:
        new = not metrics_path.exists() or start == 0
        if not new:  # resuming: keep the file's own columns (a run begun by an older version has fewer)
            fields = cut_metrics(metrics_path, start) or fields
        mf = open(metrics_path, "w" if new else "a", newline="")
        writer = csv.DictWriter(mf, fieldnames=fields)
        if new:
            writer.writeheader()
    tb = None
    if rank == 0:
        with contextlib.suppress(Exception):  # TensorBoard only if installed
            from torch.utils.tensorboard import SummaryWriter
            # an event file cannot be cut in place: the new file starts with a purge marker, and TensorBoard
            # hides every earlier event from step start + 1 on (all of them for a run begun from step 0)
            tb = SummaryWriter(str(out / "tb"), purge_step=start + 1 if start else 0)

    def record(row: dict) -> None:
        if writer is None:
            return
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items() if k in fields})
        mf.flush()
        if tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    tb.add_scalar(k, v, row["step"])

    def evaluate(step: int) -> dict:
        if rank == 0 and len(eval_idx) > 1:
            enc = encode_held_out(model, corpus, cfg.data, eval_idx, dev, 2 * tc.batch_size, autocast)
            r = retrieval_eval(model, corpus, cfg.data, eval_idx, dev, 2 * tc.batch_size, autocast, eval_labels, enc)
            log.info("step %d: held-out retrieval top-1 image->report %.3f report->image %.3f (n=%d, chance %.3f)",
                     step, r["i2t_top1"], r["t2i_top1"], r["n"], r["chance"])
            if "i2t_label_top1" in r:
                log.info("step %d: held-out label-aware retrieval top-1 (same CheXpert positives) image->report "
                         "%.3f report->image %.3f (chance %.3f; the retrieved items against shuffled queries %.3f / "
                         "%.3f)", step, r["i2t_label_top1"], r["t2i_label_top1"], r["label_chance"],
                         r["i2t_label_prior"], r["t2i_label_prior"])
            v = closed_vqa_eval(model, corpus, cfg.data, eval_idx, dev, 2 * tc.batch_size, autocast, tc.seed, enc)
            if v:
                log.info("step %d: held-out closed VQA (%d yes/no questions, %d yes): AUROC %.3f, balanced accuracy "
                         "%.3f, within-question AUROC %.3f; with the images shuffled among studies %.3f / %.3f / %.3f",
                         step, v["vqa_n"], v["vqa_yes"], v["vqa_auroc"], v["vqa_bal_acc"], v["vqa_auroc_within_q"],
                         v["vqa_auroc_shuffled"], v["vqa_bal_acc_shuffled"], v["vqa_auroc_within_q_shuffled"])
            r = {**r, **v}
            record({"step": step, **r})
        else:
            r = {}
        barrier()
        return r

    pending = {"damaged": found.damaged, "replace": ckpt is None}  # for the first save only

    def checkpoint(step: int, last: dict) -> None:
        if rank == 0:
            save_checkpoint(ckpt_dir, model, opt, cfg, tok, {"step": step, "seed": tc.seed, "world": world,
                                                             "metrics": last},
                            keep=tc.keep_checkpoints, **pending)
            for p in pending["damaged"]:
                log.warning("%s: unreadable, moved aside to %s.damaged", p, p.name)
            pending.update(damaged=[], replace=False)
            log.info("checkpoint saved: step %d -> %s", step, ckpt_dir)
        barrier()

    # ---- train --------------------------------------------------------------------------------------
    peak = peak_flops(tc.peak_tflops, dev)
    flops_per_sample = None
    end = min(tc.steps, stop_at) if stop_at else tc.steps
    bar = tqdm(total=end - start, initial=0, desc="pretrain", unit="step", disable=not progress or rank != 0,
               mininterval=2.0, dynamic_ncols=True)
    model.train()
    last, retrieval, t_log, n_log = {}, {}, time.perf_counter(), 0
    done = start
    for step, batch in zip(range(start, end), loader):
        lr = cosine_lr(step, tc.lr, tc.min_lr, tc.warmup_steps, tc.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        model.use_queue = step >= cfg.model.queue_warmup_steps
        # everything random in a step is a function of (seed, step, rank): resume is exact
        torch.manual_seed(hash((tc.seed, step, rank)) & 0xFFFFFFFF)
        gen = torch.Generator().manual_seed(hash((tc.seed, step, rank, 1)) & 0xFFFFFFFF)
        b = to_device(batch, dev)
        if tc.compile and tc.compile_scope == "model":
            mark_dynamic_lengths(b)
        d = cfg.data
        b["pixels0"] = augment(b.pop("image0"), gen, d.augment_scale, d.augment_rotate, d.augment_jitter)
        b["pixels1"] = augment(b.pop("image1"), gen, d.augment_scale, d.augment_rotate, d.augment_jitter)

        count = flops_per_sample is None and step == start
        counter = torch.utils.flop_counter.FlopCounterMode(display=False) if count else contextlib.nullcontext()
        eager = torch.compiler.set_stance("force_eager") if count else contextlib.nullcontext()
        with counter, eager:  # FLOPs of the first step, counted eagerly (as nanoGPT's MFU, but measured)
            with autocast():
                out_loss = (ddp_model if count else step_fn)(b)
            out_loss.loss.backward()
        if count:
            flops_per_sample = counter.get_total_flops() / tc.batch_size
        grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0
                     else torch.zeros((), device=dev))
        if not bool(torch.isfinite(out_loss.loss.detach()) & torch.isfinite(grad_norm)):
            terms = ", ".join(f"{k}={v:.4g}" for k, v in out_loss.items().items())
            raise NonFiniteLoss(f"step {step}: non-finite loss or gradient ({terms}, grad_norm={grad_norm.item():.4g}); "
                                f"stopping before the update. Lower --lr, check the data, or resume from {ckpt_dir}")
        opt.step()
        opt.zero_grad(set_to_none=True)
        n_log += 1
        bar.update()

        done = step + 1
        if done % tc.log_every == 0 or done == end:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t_log
            sps = n_log * tc.batch_size * world / dt
            mfu = flops_per_sample * sps / (peak * world) if peak and flops_per_sample else float("nan")
            last = {"step": done, "lr": lr, **out_loss.items(), "grad_norm": grad_norm.item(), "samples_per_s": sps,
                    "mfu": mfu}
            mfu_text = "n/a (no GPU peak)" if not math.isfinite(mfu) else f"{100 * mfu:.1f}%" + (
                " (the recomputed forward counted too)" if tc.grad_checkpointing else "")
            log.info("step %d/%d | loss %.4f itc %.3f qrc %.3f lm c/m/f %.3f/%.3f/%.3f | lr %.2e | %.1f samples/s | MFU %s",
                     done, tc.steps, last["loss"], last["itc"], last["qrc"], last["lm_coarse"], last["lm_middle"],
                     last["lm_fine"], lr, sps, mfu_text)
            record(last)
            t_log, n_log = time.perf_counter(), 0
        if tc.eval_every and done % tc.eval_every == 0 and done < end:
            retrieval = evaluate(done)
            t_log = time.perf_counter()
        if tc.save_every and done % tc.save_every == 0 and done < end:
            checkpoint(done, last)
            t_log = time.perf_counter()
    bar.close()
    retrieval = evaluate(done)
    checkpoint(done, last)
    if rank == 0:
        log.info("done: step %d, checkpoint %s, log %s", done, ckpt_dir, out / "train.log")
    if writer is not None:
        mf.close()
    if tb is not None:
        tb.close()
    return {"step": done, "last": last, "retrieval": retrieval, "checkpoint": str(ckpt_dir),
            "flops_per_sample": flops_per_sample}
