"""Command line: ``qft pretrain | finetune | answer | prepare | synth`` (also ``python -m model.cli ...``).

    qft pretrain --data OUT --images IMAGES --config tiny --out runs/tiny
    qft finetune --checkpoint runs/tiny/checkpoint --data OUT --images IMAGES --out runs/tiny_probe [--mode full]
    qft answer   --checkpoint runs/tiny/checkpoint --data OUT --images IMAGES --out runs/tiny_answers
    torchrun --nproc_per_node 8 -m model.cli pretrain --data OUT --images IMAGES --config base --out runs/base
    qft prepare  --data OUT --images IMAGES --config base --cache CACHE --workers 16   # image cache only
    qft synth    DATA IMAGES --studies 400                                             # tiny synthetic corpus
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _overrides(a) -> dict:
    o = {}
    for key, attr in (("train.steps", "steps"), ("train.batch_size", "batch_size"), ("train.lr", "lr"),
                      ("train.seed", "seed"), ("train.precision", "precision"), ("train.save_every", "save_every"),
                      ("data.workers", "workers"),
                      ("data.tokenizer", "tokenizer")):
        v = getattr(a, attr, None)
        if v is not None:
            o[key] = v
    if getattr(a, "compile", None):
        o["train.compile"] = True
        o["train.compile_scope"] = a.compile
    for item in getattr(a, "set", None) or []:
        key, _, value = item.partition("=")
        try:
            o[key] = json.loads(value)
        except json.JSONDecodeError:
            o[key] = value
    return o


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder with reports.parquet and qa.parquet (qa-build output)")
    p.add_argument("--images", required=True,
                   help="image root (mimic-cxr-2.0.0-metadata.csv + files/ tree) or a CSV with study_id,path[,view]")
    p.add_argument("--config", default="tiny", help="tiny | base | path to a JSON/YAML config")
    p.add_argument("--cache", default=None, help="image cache folder (default: OUT/cache; runs/<config>/cache for prepare)")
    p.add_argument("--workers", type=int, default=None, help="image decoding / data loading processes")
    p.add_argument("--tokenizer", default=None, help="tokenizer dir or hub name (default: train one on the corpus)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=JSON", help="override any config field")


def _checkpoint_args(p: argparse.ArgumentParser, data_help: str, out_help: str) -> None:
    """Arguments of the commands that use a pre-trained checkpoint on a data folder."""
    p.add_argument("--checkpoint", required=True, help="a pre-training checkpoint folder (runs/<config>/checkpoint)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--images", required=True, help="image root or CSV, as for pretrain")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--cache", default=None, help="image cache folder (default OUT/cache; reuse the pre-training's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=2, help="image decoding processes for the cache")
    p.add_argument("--no-progress", action="store_true")


def _require_checkpoint(folder: str) -> None:
    from pathlib import Path

    if not (Path(folder) / "model.safetensors").exists():
        raise FileNotFoundError(f"{folder}: not a checkpoint folder (no model.safetensors)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="qft", description="QFT vision-language pre-training on QA Parquet tables")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("pretrain", help="pre-train QFT")
    _data_args(p)
    p.add_argument("--out", default=None, help="run folder: checkpoint/, train.log, metrics.csv (default runs/<config>)")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint exactly; a damaged one falls back to the previous one kept "
                        "(OUT/checkpoint.1, ...) with a warning; no usable checkpoint is an error (exit 2)")
    r.add_argument("--resume-or-start", action="store_true",
                   help="as --resume, but start from step 0 when there is no usable checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per process")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None)
    p.add_argument("--compile", nargs="?", const="model", choices=["model", "blocks"], default=None,
                   help="torch.compile the whole step as one graph (model, the default) or each repeated "
                        "transformer block once (blocks: compiles in a fraction of the time)")
    p.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="save a checkpoint every N steps (train.save_every; always one at the end); the last "
                        "train.keep_checkpoints (default 2) are kept")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (resume continues the schedule)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("finetune", help="multi-label classification on a checkpoint (labels.parquet), AUROC")
    _checkpoint_args(p, "folder with reports.parquet, qa.parquet and labels.parquet",
                     "folder for metrics.json, predictions.csv, head.safetensors")
    p.add_argument("--mode", choices=["probe", "full"], default="probe",
                   help="probe: frozen encoder + logistic regression; full: train the encoder too")
    p.add_argument("--random-init", action="store_true", help="untrained weights of the same architecture (baseline)")
    p.add_argument("--baseline", default=None, metavar="RUN",
                   help="another finetune run's folder (e.g. --random-init): macro-AUROC difference, paired bootstrap")
    p.add_argument("--scheme", default="chexpert", help="labels.parquet scheme: chexpert | chestxray14")
    p.add_argument("--uncertain", choices=["ignore", "ones", "zeros"], default="ignore",
                   help="uncertain labels: left out, positive (U-Ones) or negative (U-Zeros)")
    p.add_argument("--l2", type=float, default=1e-2, help="probe: L2 penalty on the standardised features")
    p.add_argument("--epochs", type=int, default=10, help="full: passes over the train split")
    p.add_argument("--batch-size", type=int, default=32, help="full")
    p.add_argument("--lr", type=float, default=1e-4, help="full: encoder learning rate (the new classifier: 10x)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("answer", help="answer the held-out QA pairs with a checkpoint (greedy) and score them")
    _checkpoint_args(p, "folder with reports.parquet and qa.parquet", "folder for answers.csv and metrics.json")
    p.add_argument("--granularity", action="append", choices=["coarse", "middle", "fine"],
                   help="which pairs (repeatable; default all three)")
    p.add_argument("--max-studies", type=int, default=None, help="answer for the first N held-out studies only")
    p.add_argument("--batch-size", type=int, default=64)

    p = sub.add_parser("prepare", help="decode + resize all images into the uint8 cache (parallel, resumable)")
    _data_args(p)
    p.add_argument("--size", type=int, default=None, help="image size (default: the config's)")

    p = sub.add_parser("synth", help="write a tiny synthetic corpus (tables + images) for smoke runs")
    p.add_argument("data")
    p.add_argument("images")
    p.add_argument("--studies", type=int, default=400)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)

    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        if a.cmd == "synth":
            from .synthetic import make_corpus
            make_corpus(a.data, a.images, n_studies=a.studies, size=a.size, seed=a.seed)
            print(f"wrote {a.studies} studies: tables in {a.data}, images in {a.images}")
            return 0
        if a.cmd == "finetune":
            return _finetune(a)
        if a.cmd == "answer":
            return _answer(a)
        from .config import load_config
        cfg = load_config(a.config, _overrides(a))
        if a.cmd == "prepare":
            from .data.dataset import attach_images
            from .data.tables import load_studies
            _, _, _, cache = attach_images(load_studies(a.data), a.images, a.cache or f"runs/{cfg.name}/cache",
                                           a.size or cfg.model.image_size,
                                           workers=cfg.data.workers if a.workers is None else a.workers)
            print(f"cache {cache.folder}: {int(cache.ok.sum())}/{cache.count} images ready")
            return 0
        from .evaluate import wilson_interval
        from .train import pretrain
        resume = "or-start" if a.resume_or_start else a.resume
        summary = pretrain(cfg, a.data, a.images, a.out or f"runs/{cfg.name}", cache=a.cache, resume=resume,
                           device=a.device, stop_at=a.stop_at, progress=not a.no_progress)
        r = summary["retrieval"]
        if r:
            print(f"held-out image-report retrieval top-1: image->report {r['i2t_top1']:.3f}, "
                  f"report->image {r['t2i_top1']:.3f} over {r['n']} studies (chance {r['chance']:.3f})")
            if "label_chance" in r:  # same positive CheXpert labels: what an image can actually show
                ci = [wilson_interval(r[k], r["n"]) for k in ("i2t_label_top1", "t2i_label_top1")]
                print(f"held-out label-aware retrieval top-1: image->report {r['i2t_label_top1']:.3f} "
                      f"({ci[0][0]:.3f}-{ci[0][1]:.3f}), report->image {r['t2i_label_top1']:.3f} "
                      f"({ci[1][0]:.3f}-{ci[1][1]:.3f}; 95 % intervals); chance {r['label_chance']:.3f}, the "
                      f"retrieved items against shuffled queries {r['i2t_label_prior']:.3f} / "
                      f"{r['t2i_label_prior']:.3f}")
            if "vqa_auroc" in r:  # the decoder's yes/no answers, and the same with images shuffled
                print(f"held-out closed VQA ({r['vqa_n']} yes/no questions): AUROC {r['vqa_auroc']:.3f}, balanced "
                      f"accuracy {r['vqa_bal_acc']:.3f}, within-question AUROC {r['vqa_auroc_within_q']:.3f}; images "
                      f"shuffled among studies: {r['vqa_auroc_shuffled']:.3f} / {r['vqa_bal_acc_shuffled']:.3f} / "
                      f"{r['vqa_auroc_within_q_shuffled']:.3f}")
        print(f"checkpoint: {summary['checkpoint']}")
        return 0
    except (FileNotFoundError, ValueError) as e:  # bad input: one clear line, no traceback
        if os.environ.get("RANK", "0") == "0":  # under torchrun: once, not once per process
            print(f"qft {a.cmd}: error: {e}", file=sys.stderr)
        return 2


def _answer(a) -> int:
    from .finetune.answer import answer_held_out
    _require_checkpoint(a.checkpoint)
    m = answer_held_out(a.checkpoint, a.data, a.images, a.out,
                        granularities=tuple(a.granularity or ("coarse", "middle", "fine")), max_studies=a.max_studies,
                        cache=a.cache, device=a.device, batch_size=a.batch_size, workers=a.workers,
                        progress=not a.no_progress)
    tables = [("granularity", {g: m[g] for g in ("coarse", "middle", "fine") if g in m})]
    if "by_question_type" in m:
        tables.append(("question type", m["by_question_type"]))
    for title, table in tables:
        print(f"{title:<14}{'pairs':>7}{'exact':>8}{'token F1':>10}{'yes/no acc':>14}")
        for g, r in table.items():
            yn = f"{r['yes_no_accuracy']:.3f} ({r['yes_no_n']})" if "yes_no_n" in r else "-"
            print(f"{g or '(none)':<14}{r['n']:>7}{r['exact']:>8.3f}{r['token_f1']:>10.3f}{yn:>14}")
    print(f"answers of {m['studies']} held-out studies in {a.out}/answers.csv")
    return 0


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt_interval(ci: list[float] | None, signed: bool = False) -> str:
    return "-" if ci is None else f"{ci[0]:+.3f} to {ci[1]:+.3f}" if signed else f"{ci[0]:.3f}-{ci[1]:.3f}"


def _finetune(a) -> int:
    from .finetune.classify import finetune_classifier
    _require_checkpoint(a.checkpoint)
    m = finetune_classifier(a.checkpoint, a.data, a.images, a.out, mode=a.mode, random_init=a.random_init,
                            scheme=a.scheme, uncertain=a.uncertain, cache=a.cache, device=a.device, l2=a.l2,
                            epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, workers=a.workers,
                            progress=not a.no_progress, baseline=a.baseline)
    splits = [s for s in ("held_out", "validate", "test") if s in m]
    width = max(len(n) for n in m["labels"]) + 2
    print(f"{'label':<{width}}{'train pos':>10}" + "".join(f"{s + ' pos/n':>18}{'AUROC':>7}" for s in splits))
    for n in m["labels"]:
        row = f"{n:<{width}}{m['train']['positives'][n]:>10}"
        for s in splits:
            auc = m[s]["auroc"][n]
            row += f"{m[s]['positives'][n]:>13}/{m[s]['n']:<4}{'-' if auc is None else f'{auc:.3f}':>7}"
        print(row)
    print(f"{'macro AUROC':<{width}}{'':>10}" + "".join(
        f"{m[s]['labels_scored']:>13} lbl{_fmt(m[s]['macro_auroc']):>8}" for s in splits))
    k = m[splits[0]]["min_positives"]
    print(f"{f'macro, >= {k} pos':<{width}}{'':>10}" + "".join(
        f"{len(m[s]['frequent_labels']):>13} lbl{_fmt(m[s]['macro_auroc_frequent']):>8}" for s in splits))
    rows = [("  bootstrap 95 % CI", [_fmt_interval(m[s]["macro_auroc_frequent_ci95"]) for s in splits])]
    if "baseline" in m:  # paired: both runs scored on the same resampled studies
        vs = [m[s]["vs_baseline"] for s in splits]
        rows += [("  minus baseline", ["-" if v["diff"] is None else f"{v['diff']:+.3f}" for v in vs]),
                 ("  paired 95 % CI", [_fmt_interval(v["ci95"], signed=True) for v in vs])]
    for title, cells in rows:
        print(f"{title:<{width}}{'':>10}" + "".join(f"{c:>25}" for c in cells))
    print(f"({m['mode']}, {m['init']} weights) metrics, predictions and head in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
