"""Fault injection for `qft pretrain`: kill -9 and damaged checkpoints, then --resume (issue 18, item 6).

    python bench/fault_pretrain.py                 # a table case -> outcome; a few minutes on 2 CPU cores
    python bench/fault_pretrain.py --seed 3 --work /tmp/fp   # other kill points; keep the run folders

``cases()`` gives (name, callable) pairs; each callable runs one scenario and returns its outcome, a line
beginning "ok:" or "FAIL:" (``bench/fault_injection.py`` imports it). Every run is a `qft pretrain` process with
one thread (the thread count changes float sums) on a small synthetic corpus and the `tiny` config shrunk to a
batch of 8 and 60 steps, saving every 5; the cases share one corpus, image cache and uninterrupted reference
run, made on first use. A resumed run passes when its losses (every metrics.csv column but timing), final
weights and AdamW state are bit-identical to the reference's and metrics.csv has no step twice.
"""
from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
STEPS, SAVE_EVERY, STOP_AT = 60, 5, 32  # the stopped run keeps checkpoint (32) and checkpoint.1 (30)
SETTINGS = {"train.steps": STEPS, "train.batch_size": 8, "train.save_every": SAVE_EVERY, "train.log_every": 1,
            "train.eval_every": 0, "train.eval_studies": 16, "train.warmup_steps": 5, "data.workers": 0}
TIMING = {"samples_per_s", "mfu"}  # metrics.csv columns that differ between identical runs
_state: dict = {"seed": 0, "work": None}


# ----------------------------------------------------------------------------------------------------
# runs


def work() -> Path:
    """The shared folder: corpus, image cache, the reference run; made on first use."""
    if _state["work"] is None:
        d = Path(tempfile.mkdtemp(prefix="fault_pretrain-"))
        atexit.register(shutil.rmtree, d, True)
        _state["work"] = d
    w = Path(_state["work"])
    if not (w / "data" / "qa.parquet").exists():
        from model.synthetic import make_corpus
        make_corpus(w / "data", w / "images", n_studies=60, size=64, seed=1)
    return w


def qft(out: Path, *extra: str) -> subprocess.Popen:
    w = work()
    cmd = [sys.executable, "-m", "model.cli", "pretrain", "--data", str(w / "data"), "--images", str(w / "images"),
           "--config", "tiny", "--cache", str(w / "cache"), "--out", str(out), "--device", "cpu", "--no-progress",
           *extra, *[a for k, v in SETTINGS.items() for a in ("--set", f"{k}={json.dumps(v)}")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def reference() -> Path:
    out = work() / "reference"
    if not (out / "checkpoint" / "trainer.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        rc, err = finish(qft(out))
        if rc != 0:
            raise RuntimeError(f"the uninterrupted reference run failed (exit {rc}): {err.strip()[-300:]}")
    return out


def stopped() -> Path:
    """A run stopped after step STOP_AT: the folder each damage case copies and damages."""
    out = work() / "stopped"
    if not (out / "checkpoint" / "trainer.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        rc, err = finish(qft(out, "--stop-at", str(STOP_AT)))
        if rc != 0:
            raise RuntimeError(f"the stopped run failed (exit {rc}): {err.strip()[-300:]}")
    return out


def fresh(name: str) -> Path:
    out = work() / name
    shutil.rmtree(out, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------------------
# comparisons


def metric_rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def compare(out: Path) -> list[str]:
    """What differs from the reference run (empty: bit-identical, no duplicate step)."""
    import torch
    from safetensors.torch import load_file

    ref = reference()
    wrong = []
    a = [{k: v for k, v in r.items() if k not in TIMING} for r in metric_rows(out)]
    b = [{k: v for k, v in r.items() if k not in TIMING} for r in metric_rows(ref)]
    dup = [k for k, n in Counter((r["step"], bool(r["loss"])) for r in a).items() if n > 1]
    if dup:
        wrong.append(f"metrics.csv has {len(dup)} step(s) twice: {sorted(dup)[:5]}")
    elif a != b:
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        wrong.append(f"metrics differ from row {i + 1} (step {a[i]['step'] if i < len(a) else 'missing'})")
    for name in ("model.safetensors", "optimizer.safetensors"):
        ta, tb = load_file(str(out / "checkpoint" / name)), load_file(str(ref / "checkpoint" / name))
        if ta.keys() != tb.keys() or not all(torch.equal(ta[k], tb[k]) for k in ta):
            wrong.append(f"{name} differs")
    return wrong


def warnings_in(text: str) -> list[str]:
    return [line.split(" WARNING ", 1)[1] for line in text.splitlines() if " WARNING " in line]


def identical(out: Path) -> str:
    wrong = compare(out)
    return "bit-identical to the uninterrupted run, no step twice in metrics.csv" if not wrong else "; ".join(wrong)


# ----------------------------------------------------------------------------------------------------
# cases


def kill_9_ten_times() -> str:
    """SIGKILL a run at 10 seeded random points (after a chosen step's log line + a random 0-80 ms, so inside a
    step or a save; point 0: during start-up), resuming after each, then once more to the end."""
    from model.checkpoint import slots

    rng = random.Random(_state["seed"])
    points = sorted(rng.sample(range(0, STEPS - 1), 10))
    out = fresh("kill9")
    log = out / "train.log"
    landed, in_save = [], 0
    for t in points:
        mode = "--resume" if slots(out / "checkpoint") else "--resume-or-start"  # killed before any save
        seen = log.stat().st_size if log.exists() else 0
        p = qft(out, mode)
        deadline, fired = time.time() + 120, False
        while time.time() < deadline and p.poll() is None:
            new = log.read_text()[seen:] if log.exists() else ""
            if (t == 0 and "corpus:" in new) or (t > 0 and f"step {t}/{STEPS} " in new):
                time.sleep(rng.uniform(0, 0.08))
                p.send_signal(signal.SIGKILL)
                fired = True
                break
            time.sleep(0.003)
        rc, err = finish(p)
        if not fired or rc != -signal.SIGKILL:
            return f"FAIL: the run meant to be killed at step {t} ended with exit {rc}: {err.strip()[-200:]}"
        new = log.read_text()[seen:]
        steps = [int(line.split(" step ", 1)[1].split("/")[0]) for line in new.splitlines() if f"/{STEPS} |" in line]
        landed.append(max(steps) if steps else "start-up")
        in_save += (out / "checkpoint.tmp").exists() or any(out.glob("*.drop"))
    rc, err = finish(qft(out, "--resume"))
    if rc != 0:
        return f"FAIL: the final --resume exited {rc}: {err.strip()[-200:]}"
    text = log.read_text()
    fallbacks = [w for w in warnings_in(text) if "falling back" in w]
    wrong = compare(out)
    where = (f"killed after steps {landed} ({in_save} inside a save), resumed {text.count('resumed from')} times, "
             f"{len(fallbacks)} fallback(s)")
    return (f"ok: {identical(out)}; {where}" if not wrong else f"FAIL: {'; '.join(wrong)}; {where}")


def damaged_latest(damage: Callable[[Path], None], expect: str) -> Callable[[], str]:
    def case() -> str:
        out = fresh("damaged")
        shutil.copytree(stopped(), out)
        damage(out / "checkpoint")
        rc, err = finish(qft(out, "--resume"))
        if rc != 0:
            return f"FAIL: --resume exited {rc}: {err.strip()[-200:]}"
        warns = [w for w in warnings_in((out / "train.log").read_text()) if "falling back" in w]
        if len(warns) != 1 or expect not in warns[0]:
            return f"FAIL: expected one warning about {expect!r}, got {warns}"
        wrong = compare(out)
        said = warns[0].replace(str(out) + "/", "")
        return f"ok: warned '{said}'; {identical(out)}" if not wrong else f"FAIL: {'; '.join(wrong)}"
    return case


def _truncate(ck: Path) -> None:
    p = ck / "model.safetensors"
    os.truncate(p, p.stat().st_size // 2)


def _flip(ck: Path) -> None:
    p = ck / "optimizer.safetensors"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01
    p.write_bytes(b)


def one_line(err: str) -> str | None:
    lines = [line for line in err.strip().splitlines() if line]
    return lines[0] if len(lines) == 1 and "Traceback" not in err else None


def no_usable_checkpoint() -> str:
    """trainer.json gone from both kept checkpoints: --resume refuses (one line, exit 2, nothing touched);
    --resume-or-start starts over and ends like the reference, the unreadable folders moved aside."""
    out = fresh("unusable")
    shutil.copytree(stopped(), out)
    for ck in (out / "checkpoint", out / "checkpoint.1"):
        (ck / "trainer.json").unlink()
    before = (out / "metrics.csv").read_bytes()
    rc, err = finish(qft(out, "--resume"))
    line = one_line(err)
    if rc != 2 or line is None or "no usable checkpoint" not in line:
        return f"FAIL: --resume exited {rc} with {err.strip()[-300:]!r}"
    if (out / "metrics.csv").read_bytes() != before:
        return "FAIL: the refused --resume changed metrics.csv"
    rc, err = finish(qft(out, "--resume-or-start"))
    if rc != 0:
        return f"FAIL: --resume-or-start exited {rc}: {err.strip()[-200:]}"
    aside = sorted(p.name for p in out.glob("*.damaged"))
    wrong = compare(out)
    if wrong or aside != ["checkpoint.1.damaged", "checkpoint.damaged"]:
        return f"FAIL: {'; '.join(wrong)} (moved aside: {aside})"
    return f"ok: --resume refused, exit 2, 1 line; --resume-or-start {identical(out)}; both kept as *.damaged"


def no_checkpoint() -> str:
    out = fresh("none")
    rc, err = finish(qft(out, "--resume"))
    line = one_line(err)
    if rc != 2 or line is None:
        return f"FAIL: exit {rc}, stderr {err.strip()[-300:]!r}"
    return f"ok: exit 2, '{line.replace(str(out), 'OUT')}'" + ("" if not out.exists() else " (OUT created)")


def cases() -> list[tuple[str, Callable[[], str]]]:
    def guarded(f: Callable[[], str]) -> Callable[[], str]:
        def run() -> str:
            try:
                return f()
            except Exception as e:  # a broken harness or run is a failed case, not a crashed table
                return f"FAIL: {type(e).__name__}: {e}"
        return run

    return [(name, guarded(f)) for name, f in [
        ("pretrain: kill -9 at 10 random points, --resume", kill_9_ten_times),
        ("pretrain: truncated checkpoint/model.safetensors", damaged_latest(_truncate, "model.safetensors: truncated")),
        ("pretrain: checkpoint/trainer.json missing",
         damaged_latest(lambda ck: (ck / "trainer.json").unlink(), "trainer.json: missing")),
        ("pretrain: flipped byte in checkpoint/optimizer.safetensors",
         damaged_latest(_flip, "optimizer.safetensors: sha256 differs")),
        ("pretrain: trainer.json missing in every checkpoint", no_usable_checkpoint),
        ("pretrain: --resume with no checkpoint", no_checkpoint),
    ]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill points")
    ap.add_argument("--work", default=None, help="folder for the corpus and runs (default: a temporary one, removed)")
    a = ap.parse_args()
    _state["seed"] = a.seed
    if a.work:
        Path(a.work).mkdir(parents=True, exist_ok=True)
        _state["work"] = a.work
    rows, t0 = [], time.perf_counter()
    for name, case in cases():
        t = time.perf_counter()
        outcome = case()
        rows.append((name, outcome, time.perf_counter() - t))
        print(f"{name:<60} {rows[-1][2]:6.1f} s  {outcome}", file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':<{width}}  outcome")
    for name, outcome, _ in rows:
        print(f"{name:<{width}}  {outcome}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0 if all(r[1].startswith("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
