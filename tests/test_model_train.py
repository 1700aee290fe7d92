"""The trainer end to end on a tiny synthetic corpus: pretrain, exact resume, NaN guard, DDP (gloo), CLI errors."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_pretrained
from model.config import load_config
from model.synthetic import make_corpus
from model.train import NonFiniteLoss, pretrain
from model_shapes import micro

ROOT = Path(__file__).resolve().parents[1]
SMALL = micro(128, **{
    "model.queue_size": 10, "model.momentum": 0.95, "model.queue_warmup_steps": 2, "data.vocab_size": 300,
    "data.workers": 0,
    "train.batch_size": 4, "train.steps": 6, "train.warmup_steps": 2, "train.log_every": 1,
    "train.eval_every": 0, "train.save_every": 0, "train.eval_studies": 8})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root / "data", root / "images", n_studies=40, size=40, seed=2)
    return root


def losses(run: Path) -> list[tuple]:
    with open(run / "metrics.csv") as f:
        return [(r["step"], r["loss"], r["itc"], r["lm_coarse"]) for r in csv.DictReader(f) if r["loss"]]


def test_pretrain_writes_checkpoint_log_metrics_and_reloads(tmp_path, corpus):
    cfg = load_config("tiny", SMALL)
    s = pretrain(cfg, corpus / "data", corpus / "images", tmp_path / "run", progress=False)
    assert s["step"] == 6 and s["retrieval"]["n"] == 8 and s["flops_per_sample"] > 0
    assert s["retrieval"]["vqa_n"] > 0 and 0 <= s["retrieval"]["vqa_auroc_shuffled"] <= 1
    ck = tmp_path / "run" / "checkpoint"
    assert {p.name for p in ck.iterdir()} >= {"model.safetensors", "optimizer.safetensors", "optimizer.json",
                                              "trainer.json", "config.json", "tokenizer"}
    assert json.loads((ck / "trainer.json").read_text())["step"] == 6
    assert "samples/s" in (tmp_path / "run" / "train.log").read_text()
    assert len(losses(tmp_path / "run")) == 6
    model, tok, cfg2 = load_pretrained(ck)
    assert cfg2.model.num_queries == 4 and model.image_queue.filled.item() == 10
    f = model.encode_image(torch.zeros(2, 32, 32, dtype=torch.uint8))
    assert f.embedding.shape == (2, cfg2.model.embed_dim)


def test_resume_continues_exactly(tmp_path, corpus):
    cfg = load_config("tiny", SMALL)
    pretrain(cfg, corpus / "data", corpus / "images", tmp_path / "a", cache=tmp_path / "cache", progress=False)
    pretrain(cfg, corpus / "data", corpus / "images", tmp_path / "b", cache=tmp_path / "cache", progress=False,
             stop_at=3)
    assert len(losses(tmp_path / "b")) == 3
    # a run begun by an older version has fewer metrics.csv columns: resuming appends rows in the file's own
    with open(tmp_path / "b" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][-2:] == ["i2t_label_prior", "t2i_label_prior"]  # the columns this version appended
    with open(tmp_path / "b" / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(r[:-2] for r in rows)
    pretrain(cfg, corpus / "data", corpus / "images", tmp_path / "b", cache=tmp_path / "cache", progress=False,
             resume=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    with open(tmp_path / "b" / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) > 4 and all(len(r) == len(rows[0]) for r in rows)


def test_regional_compile_trains_like_eager_and_counts_flops_eagerly(tmp_path, corpus, monkeypatch):
    import model.train as train_mod
    from model.qft import compile_blocks

    calls = []

    def eager_backend(m):  # dynamo traces every block; no inductor codegen (minutes on 2 cores)
        calls.append(compile_blocks(m, backend="eager"))
        return calls[-1]

    monkeypatch.setattr(train_mod, "compile_blocks", eager_backend)
    cfg = load_config("tiny", {**SMALL, "train.compile": True, "train.compile_scope": "blocks"})
    s = pretrain(cfg, corpus / "data", corpus / "images", tmp_path / "c", cache=tmp_path / "cache", progress=False)
    e = pretrain(load_config("tiny", SMALL), corpus / "data", corpus / "images", tmp_path / "e",
                 cache=tmp_path / "cache", progress=False)
    assert calls == [7] and s["flops_per_sample"] == e["flops_per_sample"] > 0
    assert [r[:3] for r in losses(tmp_path / "c")] == [r[:3] for r in losses(tmp_path / "e")]
    # activation checkpointing, also under regional compilation: the same training, a recomputed forward more
    cfg = load_config("tiny", {**SMALL, "train.grad_checkpointing": True})
    g = pretrain(cfg, corpus / "data", corpus / "images", tmp_path / "g", cache=tmp_path / "cache", progress=False)
    assert [r[:3] for r in losses(tmp_path / "g")] == [r[:3] for r in losses(tmp_path / "e")]
    assert g["flops_per_sample"] > e["flops_per_sample"]  # the recomputed forward is counted
    with pytest.raises(ValueError, match="compile_scope"):
        load_config("tiny", {"train.compile_scope": "layers"})


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, corpus, monkeypatch):
    from model import qft
    real = qft.QFT.forward

    def poisoned(self, batch):
        out = real(self, batch)
        out.loss = out.loss * float("nan")
        return out
    monkeypatch.setattr(qft.QFT, "forward", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"step 0: non-finite loss or gradient .*itc="):
        pretrain(load_config("tiny", SMALL), corpus / "data", corpus / "images", tmp_path / "run", progress=False)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


def _sets(over: dict) -> list[str]:
    return [a for k, v in over.items() for a in ("--set", f"{k}={json.dumps(v)}")]


def test_ddp_two_cpu_processes_gloo(tmp_path, corpus):
    over = {**SMALL, "train.steps": 3}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "model.cli", "pretrain", "--data", str(corpus / "data"), "--images", str(corpus / "images"),
           "--config", "tiny", "--out", str(tmp_path / "ddp"), "--device", "cpu", "--no-progress", *_sets(over)]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "ddp" / "train.log").read_text()
    assert "2 process(es) on cpu" in log and "step 3/3" in log
    model, _, _ = load_pretrained(tmp_path / "ddp" / "checkpoint")
    assert model.image_queue.filled.item() == 10  # 3 steps x global batch 8, gathered from both ranks


def test_cli_bad_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "model.cli", "pretrain", "--data", str(tmp_path / "nope"),
                        "--images", str(tmp_path), "--out", str(tmp_path / "run")], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "reports.parquet: not found" in err[0]
    # a bad config value is refused when the config loads, before any data is read
    r = subprocess.run([sys.executable, "-m", "model.cli", "pretrain", "--data", str(tmp_path / "nope"),
                        "--images", str(tmp_path), "--out", str(tmp_path / "run"),
                        "--set", 'model.negatives="text"'], cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=120)
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert r.returncode == 2 and len(err) == 1 and "model.negatives must be" in err[0], r.stderr[-500:]


def test_cli_synth_prepare_and_yaml_config(tmp_path, capsys):
    from model.cli import main
    assert main(["synth", str(tmp_path / "d"), str(tmp_path / "i"), "--studies", "6", "--size", "24"]) == 0
    (tmp_path / "c.yaml").write_text("model:\n  image_size: 16\ndata:\n  workers: 0\n")
    args = ["prepare", "--data", str(tmp_path / "d"), "--images", str(tmp_path / "i"), "--config",
            str(tmp_path / "c.yaml"), "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    assert "9/9 images ready" in capsys.readouterr().out  # 6 frontal + 3 lateral
    assert main(args) == 0  # resumable: a second run finds everything done
    assert main(["prepare", "--data", str(tmp_path / "d"), "--images", str(tmp_path / "nope"),
                 "--cache", str(tmp_path / "cache")]) == 2
    assert "expected an image root folder or a CSV" in capsys.readouterr().err


def test_wilson_interval_matches_the_textbook_values():
    from model.evaluate import wilson_interval

    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    lo, hi = wilson_interval(0.0, 20)  # never 0-width, never below 0
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(0.278, 115)  # make pretrain's label-aware retrieval: +-0.08 by chance alone
    assert 0.20 < lo < 0.21 and 0.36 < hi < 0.37


def test_label_aware_retrieval_prior_exposes_a_hub_and_not_a_matching_model():
    """A model that retrieves one common-label item for every query beats label chance but not its own prior
    (the retrieved items scored against shuffled queries); a model that matches each pair beats both."""
    import types

    import numpy as np

    from model.evaluate import HeldOut, retrieval_eval

    sets = [frozenset({"No Finding"})] * 6 + [frozenset({"Edema"})] * 2 + [frozenset({"Effusion"})] * 2
    corpus = types.SimpleNamespace(studies=[types.SimpleNamespace(report_id=f"r{i}") for i in range(10)])
    labels = {f"r{i}": x for i, x in enumerate(sets)}
    eye = torch.eye(10)
    hub = torch.zeros(10, 10)
    hub[:, 0] = 1  # every image and every report sits next to study 0 (normal)

    def score(image, report):
        e = HeldOut(np.arange(10), image, report, torch.arange(10), torch.zeros(10, 1, 1))
        return retrieval_eval(None, corpus, None, np.arange(10), torch.device("cpu"), 4, labels=labels, encoded=e)

    h = score(hub, eye)  # every image retrieves report 0
    assert h["label_chance"] == pytest.approx((6 * 0.6 + 2 * 0.2 + 2 * 0.2) / 10)  # 0.44
    assert h["i2t_label_top1"] == pytest.approx(0.6) and h["i2t_label_top1"] > h["label_chance"]  # beats chance ...
    assert h["i2t_label_prior"] == pytest.approx(0.6)  # ... but only by its prior
    m = score(eye, eye)  # each image retrieves its own report
    assert m["i2t_label_top1"] == m["t2i_label_top1"] == 1.0
    assert m["i2t_label_prior"] == pytest.approx(m["label_chance"])  # retrieves every label set as often as it occurs


def test_retrieval_eval_label_aware_metric(tmp_path):
    """Exact-text and label-aware (same positive label set) top-1, with their chance levels."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from model.data.dataset import build_corpus
    from model.data.tables import load_label_sets
    from model.qft import QFT
    from model.evaluate import retrieval_eval

    make_corpus(tmp_path / "data", tmp_path / "images", n_studies=12, size=40, seed=3, labels=False)
    cfg = load_config("tiny", SMALL)
    c = build_corpus(tmp_path / "data", tmp_path / "images", tmp_path / "cache", 32, cfg.data, progress=False)
    assert load_label_sets(tmp_path / "data") == {}  # labels.parquet is optional
    rids = [s.report_id for s in c.studies]
    rows = [{"report_id": r, "scheme": "chexpert", "label": lab, "value": int(i % 2 == (lab == "Edema"))}
            for i, r in enumerate(rids) for lab in ("Edema", "No Finding")]
    rows.append({"report_id": rids[0], "scheme": "other", "label": "X", "value": 1})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "labels.parquet")
    labels = load_label_sets(tmp_path / "data")
    assert labels[rids[0]] == {"No Finding"} and labels[rids[1]] == {"Edema"}
    torch.manual_seed(0)
    model = QFT(cfg.model, c.tokenizer.vocab_size, c.tokenizer.pad_id, c.tokenizer.bos_id, c.tokenizer.eos_id)
    r = retrieval_eval(model, c, cfg.data, np.arange(len(rids)), torch.device("cpu"), 4, labels=labels)
    assert r["n"] == len(rids) and abs(r["label_chance"] - 0.5) < 0.1  # two label sets, half each
    assert r["i2t_label_top1"] >= r["i2t_top1"] and r["t2i_label_top1"] >= r["t2i_top1"]
    assert "label_chance" not in retrieval_eval(model, c, cfg.data, np.arange(4), torch.device("cpu"), 4)
    # negatives = "labels": studies key by their positive label set; the exact metric still keys by text
    exact = retrieval_eval(model, c, cfg.data, np.arange(len(rids)), torch.device("cpu"), 4)
    del labels[rids[2]]  # a study without labels keeps its report-text key
    assert c.use_label_keys(labels) == len(rids) - 1
    assert c.keys[0] == c.keys[4] and c.keys[1] == c.keys[3] and c.keys[0] != c.keys[1]
    assert c.keys[2] not in (c.keys[0], c.keys[1])
    from model.data.dataset import Collate, StudyDataset
    ds = StudyDataset(c, cfg.data)
    batch = Collate(c.tokenizer.pad_id)([ds[(i, 0)] for i in range(6)])
    assert batch["report_key"].tolist() == c.keys[:6].tolist()
    assert retrieval_eval(model, c, cfg.data, np.arange(len(rids)), torch.device("cpu"), 4) == exact


def test_cli_compile_flag_sets_scope():
    import argparse

    from model.cli import _overrides
    assert _overrides(argparse.Namespace(compile="blocks")) == {"train.compile": True, "train.compile_scope": "blocks"}
    assert _overrides(argparse.Namespace(compile=None)) == {}


def test_closed_vqa_reads_each_question_at_its_sep_and_shuffles_images(tmp_path, monkeypatch):
    import numpy as np

    from model.data.dataset import build_corpus
    from model.evaluate import closed_questions, closed_vqa_eval, yes_no_scores
    from model.qft import QFT

    make_corpus(tmp_path / "data", tmp_path / "images", n_studies=12, size=40, seed=5)
    cfg = load_config("tiny", SMALL)
    c = build_corpus(tmp_path / "data", tmp_path / "images", tmp_path / "cache", 32, cfg.data, progress=False)
    idx = np.arange(len(c.studies))
    study, questions, answers = closed_questions(c, idx)
    # every fifth synthetic study has no fine pair; the others ask yes/no about each of the 5 findings
    assert len(study) == 5 * sum(k % 5 != 0 for k in range(12)) and set(answers.tolist()) == {0, 1}
    assert len(closed_questions(c, idx[:2])[0]) == 5  # only the studies asked for (study 0 has none)
    torch.manual_seed(0)
    model = QFT(cfg.model, c.tokenizer.vocab_size, c.tokenizer.pad_id, c.tokenizer.bos_id, c.tokenizer.eos_id).eval()
    ctx = torch.randn(3, 2 * (1 + cfg.model.num_queries), 32)
    qs = [questions[0], questions[1][:3], questions[2][:5]]  # three lengths: right padding in a batch
    together = yes_no_scores(model, c.tokenizer, qs, ctx, cfg.data.fine_tokens)
    alone = torch.cat([yes_no_scores(model, c.tokenizer, [q], ctx[j:j + 1], cfg.data.fine_tokens)
                       for j, q in enumerate(qs)])
    assert torch.allclose(together, alone, atol=1e-5)
    r = closed_vqa_eval(model, c, cfg.data, idx, torch.device("cpu"), 4)
    assert r["vqa_n"] == len(study) and r["vqa_yes"] == answers.sum()
    assert r["vqa_auroc"] != r["vqa_auroc_shuffled"]  # the images differ, so do the scores
    # a decoder context that ignores the image: shuffling the images changes nothing
    real = QFT.encode_image

    def blind(self, *views):
        f = real(self, *views)
        f.decoder_context = torch.zeros_like(f.decoder_context)
        return f

    monkeypatch.setattr(QFT, "encode_image", blind)
    r = closed_vqa_eval(model, c, cfg.data, idx, torch.device("cpu"), 4)
    assert r["vqa_auroc"] == r["vqa_auroc_shuffled"] and r["vqa_bal_acc"] == r["vqa_bal_acc_shuffled"]
    # ... and within one question every study gets the same score: nothing to rank by
    assert r["vqa_auroc_within_q"] == r["vqa_auroc_within_q_shuffled"] == 0.5


def test_marked_lengths_compile_the_whole_model_graph_once():
    """Dynamic padding: every batch has new lengths. Marked up front, they cost one compile, not one per
    dimension found to vary later."""
    from model.train import mark_dynamic_lengths

    def loss(b):
        return (b["report"].float() * b["report_mask"]).sum() + b["fine_targets"].flatten()[b["fine_positions"]].sum()

    def compiles(mark: bool) -> int:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        f = torch.compile(loss, backend="eager")
        for L, Lf, n in ((7, 5, 3), (9, 4, 6), (12, 6, 2)):
            b = {"report": torch.ones(2, L, dtype=torch.long), "report_mask": torch.ones(2, L, dtype=torch.long),
                 "fine_targets": torch.ones(2, Lf, dtype=torch.long), "fine_positions": torch.arange(n),
                 "report_key": torch.arange(2)}
            if mark:
                mark_dynamic_lengths(b)
            f(b)
        return torch._dynamo.utils.counters["stats"]["unique_graphs"]

    assert compiles(mark=False) >= 2 and compiles(mark=True) == 1
