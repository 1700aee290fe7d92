"""A resume that survives: the last K checkpoints kept and verified, fallback past a damaged one, a refusal when
none is usable, metrics.csv cut back to the resumed step, save lines in train.log, kill -9 (issue 18, item 5)."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import CheckpointError, find_checkpoint, load_pretrained, save_checkpoint, slots
from model.cli import main
from model.config import load_config
from model.synthetic import make_corpus
from model.train import pretrain
from model_shapes import micro

ROOT = Path(__file__).resolve().parents[1]
SMALL = micro(128, **{
    "model.queue_size": 10, "model.momentum": 0.95, "model.queue_warmup_steps": 2, "data.vocab_size": 300,
    "data.workers": 0,
    "train.batch_size": 4, "train.steps": 6, "train.warmup_steps": 2, "train.log_every": 1,
    "train.eval_every": 0, "train.save_every": 2, "train.eval_studies": 8})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root / "data", root / "images", n_studies=40, size=40, seed=2)
    return root


def run(corpus, out, over=None, **kw):
    cfg = load_config("tiny", {**SMALL, **(over or {})})
    return pretrain(cfg, corpus / "data", corpus / "images", out, cache=corpus / "cache", progress=False, **kw)


@pytest.fixture(scope="module")
def ref(corpus, tmp_path_factory):
    """An uninterrupted 6-step run saving every 2 steps."""
    out = tmp_path_factory.mktemp("ref") / "run"
    run(corpus, out)
    return out


@pytest.fixture(scope="module")
def stopped(corpus, tmp_path_factory):
    """The same run stopped after step 5: checkpoint (step 5) and checkpoint.1 (step 4) kept, 2 dropped."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    run(corpus, out, stop_at=5)
    return out


def rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def losses(out: Path) -> list[tuple]:
    return [(r["step"], r["loss"], r["itc"], r["lm_coarse"]) for r in rows(out) if r["loss"]]


def assert_no_step_twice(out: Path) -> None:
    """One training row per step, one evaluation row per evaluated step."""
    kinds = Counter((r["step"], bool(r["loss"])) for r in rows(out))
    assert max(kinds.values()) == 1, [k for k, n in kinds.items() if n > 1]


def assert_same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "optimizer.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name


def step_of(folder: Path) -> int:
    return json.loads((folder / "trainer.json").read_text())["step"]


def test_the_last_two_checkpoints_are_kept_hashed_and_logged(ref):
    ck = ref / "checkpoint"
    assert slots(ck) == [ck, ref / "checkpoint.1"] and [step_of(p) for p in slots(ck)] == [6, 4]
    assert not list(ref.glob("checkpoint.*.*")) and not (ref / "checkpoint.tmp").exists()
    files = json.loads((ck / "trainer.json").read_text())["files"]
    assert set(files) >= {"model.safetensors", "optimizer.safetensors", "optimizer.json", "config.json",
                          "tokenizer/tokenizer.json"}
    import hashlib
    assert files["model.safetensors"]["sha256"] == hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
    log = (ref / "train.log").read_text()
    assert [f"checkpoint saved: step {s} -> {ck}" in log for s in (2, 4, 6)] == [True] * 3


def test_rotation_keeps_k_moves_damaged_aside_and_replaces_an_earlier_run(tmp_path):
    from model.data.tokenizer import train_wordpiece

    cfg, tok, m = load_config("tiny"), train_wordpiece(["a b c"], 50), torch.nn.Linear(2, 2)
    ck = tmp_path / "checkpoint"

    def save(step, **kw):
        save_checkpoint(ck, m, None, cfg, tok, {"step": step}, **kw)
        return [step_of(p) for p in slots(ck)]

    assert [save(s, keep=3) for s in (1, 2, 3, 4)] == [[1], [2, 1], [3, 2, 1], [4, 3, 2]]
    assert save(5, keep=2) == [5, 4]  # keeping fewer drops the oldest
    (ck / "trainer.json").unlink()
    found = find_checkpoint(ck, optimizer=False)
    assert found.path == tmp_path / "checkpoint.1" and found.damaged == [ck]
    assert save(6, keep=2, damaged=found.damaged) == [6, 4]  # the unreadable one moved aside, not kept
    assert (tmp_path / "checkpoint.damaged" / "model.safetensors").exists()
    assert save(7, keep=2, replace=True) == [7]  # a run begun from step 0 replaces the earlier run's
    # a save killed after moving the newest to .1 but before its own rename: the newest kept is .1
    os.rename(ck, tmp_path / "checkpoint.1")
    found = find_checkpoint(ck, optimizer=False)
    assert found.path == tmp_path / "checkpoint.1" and "missing (a save was interrupted)" in found.problems[0]
    assert save(8, keep=2) == [8, 7]


DAMAGE = {
    "truncated model.safetensors": (
        lambda ck: os.truncate(ck / "model.safetensors", (ck / "model.safetensors").stat().st_size // 2),
        "checkpoint/model.safetensors: truncated"),
    "missing trainer.json": (lambda ck: (ck / "trainer.json").unlink(), "checkpoint/trainer.json: missing"),
    "corrupt trainer.json": (lambda ck: (ck / "trainer.json").write_text('{"step": 5, "fil'),
                             "checkpoint/trainer.json: not valid JSON"),
    "a flipped byte": (lambda ck: _flip_last_byte(ck / "optimizer.safetensors"),
                       "checkpoint/optimizer.safetensors: sha256 differs from the one recorded in trainer.json"),
}


def _flip_last_byte(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[-1] ^= 0xFF
    p.write_bytes(b)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_falls_back_and_ends_like_an_uninterrupted_run(tmp_path, corpus, ref, stopped, damage):
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    do, said = DAMAGE[damage]
    do(out / "checkpoint")
    damaged = sorted(p.name for p in (out / "checkpoint").rglob("*"))
    s = run(corpus, out, resume=True)
    warn = [line for line in (out / "train.log").read_text().splitlines() if " WARNING " in line]
    assert len(warn) == 2 and said in warn[0], warn
    assert warn[0].endswith(f"; falling back to {out / 'checkpoint.1'} (step 4)")
    assert "moved aside" in warn[1]
    assert s["step"] == 6 and "resumed from" in (out / "train.log").read_text()
    assert_same_weights(out / "checkpoint", ref / "checkpoint")  # bit-identical to the uninterrupted run
    assert losses(out) == losses(ref)
    assert_no_step_twice(out)  # step 5 of the stopped run was cut before being logged again
    # the unreadable folder was kept (moved aside) once the new save was complete, never overwritten
    assert sorted(p.name for p in (out / "checkpoint.damaged").rglob("*")) == damaged
    assert [step_of(p) for p in slots(out / "checkpoint")] == [6, 4]


def test_no_usable_checkpoint_refuses_then_resume_or_start_starts_over(tmp_path, corpus, ref, stopped):
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    (out / "checkpoint" / "trainer.json").unlink()
    os.truncate(out / "checkpoint.1" / "model.safetensors", 100)
    before = (out / "metrics.csv").read_bytes()
    with pytest.raises(CheckpointError) as e:
        run(corpus, out, resume=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--resume: no usable checkpoint")
    assert "checkpoint/trainer.json: missing" in msg and "checkpoint.1/model.safetensors: truncated" in msg
    assert (out / "metrics.csv").read_bytes() == before  # nothing touched
    assert not (out / "checkpoint" / "trainer.json").exists() and (out / "checkpoint.1").exists()
    s = run(corpus, out, resume="or-start")
    assert s["step"] == 6 and losses(out) == losses(ref)
    assert_same_weights(out / "checkpoint", ref / "checkpoint")
    assert (out / "checkpoint.damaged").is_dir() and (out / "checkpoint.1.damaged").is_dir()


def test_cli_resume_refusal_is_one_line_and_the_flags_work(tmp_path, corpus, capsys):
    base = ["pretrain", "--data", str(corpus / "data"), "--images", str(corpus / "images"), "--cache",
            str(corpus / "cache"), "--no-progress", "--device", "cpu"]
    sets = [a for k, v in SMALL.items() if k != "train.save_every" for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(base + ["--out", str(tmp_path / "none"), "--resume"] + sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0] == (f"qft pretrain: error: --resume: no usable checkpoint ({tmp_path / 'none' / 'checkpoint'}: "
                      "not found); --resume-or-start starts from step 0")
    assert not (tmp_path / "none").exists()
    # --resume-or-start with nothing there starts; --save-every is train.save_every
    assert main(base + ["--out", str(tmp_path / "run"), "--resume-or-start", "--save-every", "3"] + sets) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "checkpoint saved: step 3 ->" in log and "checkpoint saved: step 6 ->" in log
    assert "checkpoint saved: step 2 ->" not in log
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--save-every N" in help_text and "--resume-or-start" in help_text
    # a damaged checkpoint given to finetune: one line naming the file
    os.truncate(tmp_path / "run" / "checkpoint" / "model.safetensors", 1000)
    assert main(["finetune", "--checkpoint", str(tmp_path / "run" / "checkpoint"), "--data", str(corpus / "data"),
                 "--images", str(corpus / "images"), "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint/model.safetensors: truncated (1000 bytes" in err[0], err
    with pytest.raises(CheckpointError, match="model.safetensors: truncated"):
        load_pretrained(tmp_path / "run" / "checkpoint")


def test_tensorboard_log_is_purged_from_the_resumed_step(tmp_path, corpus, stopped, monkeypatch):
    """Event files cannot be cut: the resumed run's new file starts with TensorBoard's purge marker."""
    made = []

    class FakeWriter:
        def __init__(self, logdir, purge_step=None):
            made.append({"purge_step": purge_step, "steps": []})

        def add_scalar(self, tag, value, step):
            made[-1]["steps"].append(step)

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    run(corpus, out, resume=True)  # from step 5
    assert made[0]["purge_step"] == 6 and min(made[0]["steps"]) == 6
    run(corpus, tmp_path / "fresh", over={"train.steps": 2})
    assert made[1]["purge_step"] == 0


def test_kill_9_then_resume_is_bit_identical_without_duplicate_steps(tmp_path, corpus):
    """All three runs are `qft pretrain` processes with the same thread count (it changes float sums)."""
    over = {"train.steps": 20, "train.save_every": 4}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}

    def qft(out: Path, *extra: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "model.cli", "pretrain", "--data", str(corpus / "data"), "--images",
               str(corpus / "images"), "--cache", str(corpus / "cache"), "--out", str(out), "--no-progress",
               "--device", "cpu", *extra,
               *[a for k, v in {**SMALL, **over}.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    ref, out = tmp_path / "ref", tmp_path / "killed"
    r, p = qft(ref), qft(out)
    log, deadline = out / "train.log", time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if log.exists() and "step 10/20" in log.read_text():  # mid-run: saved at 8, logged 10
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert len([row for row in rows(out) if row["loss"]]) >= 10
    q = qft(out, "--resume")
    assert q.wait(timeout=120) == 0 and r.wait(timeout=120) == 0, q.stderr.read()[-2000:] + r.stderr.read()[-2000:]
    assert "cut back to step" in (out / "train.log").read_text()
    assert losses(out) == losses(ref)
    assert_same_weights(out / "checkpoint", ref / "checkpoint")
    assert_no_step_twice(out)
