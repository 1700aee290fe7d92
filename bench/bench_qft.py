"""Benchmark one QFT pre-training step (random data) per setting: samples/s, step time, peak memory, MFU.

    python bench/bench_qft.py --size paper --batches 32,128 --settings fp32-eager,bf16-eager,bf16-compile,bf16-blocks
    python bench/bench_qft.py --size paper --anchor ../shared/bench/anchor_qft_step.py   # + the official step
    python bench/bench_qft.py --size tiny                                                  # CPU: tiny config

``paper`` = configs/base.json (ViT-B/16 at 224, 12-layer BERT, 3-layer QFT x 32 queries, 12-layer GPT-2,
report 200 / coarse 200 / middle 100 / fine 50 tokens, vocab 21128 as the anchor). The step timed is
the trainer's: on-device augmentation of both views, forward under autocast, backward, clipping, AdamW.
FLOPs are counted once per setting with torch's FlopCounterMode; MFU = FLOPs/step / step time / peak,
with the peak measured as a bf16 8192^3 matmul (as the anchor script does) and the nominal one if known.
``--profile N`` then profiles N more steps per setting: GPU kernel time by kind (GEMM, attention, optimiser,
Triton, other), how busy the GPU was, and the busiest kernels: where a step's time goes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.utils.flop_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model.augment import augment  # noqa: E402
from model.config import load_config  # noqa: E402
from model.losses import IGNORE, target_positions  # noqa: E402
from model.qft import QFT, compile_blocks, set_grad_checkpointing  # noqa: E402
from model.train import PEAK_BF16  # noqa: E402

VOCAB = {"paper": 21128, "tiny": 2000}  # the anchor's vocabulary at paper shapes; tiny.json's otherwise


def random_batch(cfg, bs: int, dev: torch.device, lengths: dict, vocab: int) -> dict:
    g = torch.Generator().manual_seed(0)
    S = cfg.model.image_size
    r = lambda n: torch.randint(7, vocab, (bs, n), generator=g)  # noqa: E731
    b = {"image0": torch.randint(0, 256, (bs, S, S), dtype=torch.uint8, generator=g),
         "image1": torch.randint(0, 256, (bs, S, S), dtype=torch.uint8, generator=g),
         "report": r(lengths["report"]), "report_mask": torch.ones(bs, lengths["report"], dtype=torch.long),
         "report_key": torch.arange(bs)}
    for name in ("coarse", "middle", "fine"):
        b[name] = r(lengths[name])
        t = r(lengths[name])
        t[:, :8] = IGNORE  # a short question prompt
        b[name + "_targets"] = t
        b[name + "_positions"] = target_positions(t)  # as the trainer's collate computes them on the host
    return {k: v.to(dev) for k, v in b.items()}


def run_setting(cfg, setting: str, bs: int, steps: int, dev: torch.device, lengths: dict, vocab: int,
                backend: str = "inductor", profile: int = 0) -> dict:
    precision, mode = setting.split("-")
    torch._dynamo.reset()  # each setting compiles afresh (else a second batch size recompiles with dynamic shapes)
    torch.manual_seed(0)
    try:  # parameters created and initialised on the device: seconds saved per setting at paper size
        with dev:
            model = QFT(cfg.model, vocab, 0, 5, 6)
    except Exception:  # noqa: BLE001  (a backbone that insists on CPU construction)
        model = QFT(cfg.model, vocab, 0, 5, 6)
    model = model.to(dev).train()  # anything still elsewhere
    if cfg.train.grad_checkpointing:  # --set train.grad_checkpointing=true: as the trainer does
        set_grad_checkpointing(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=dev.type == "cuda")
    fwd = torch.compile(model, backend=backend) if mode == "compile" else model
    if mode == "blocks":  # regional compilation: each repeated transformer block once
        compile_blocks(model, backend=backend)
    use_bf16 = precision == "bf16" and dev.type == "cuda"
    batch = random_batch(cfg, bs, dev, lengths, vocab)
    gen = torch.Generator().manual_seed(0)
    d = cfg.data

    def step(f):
        b = dict(batch)
        b["pixels0"] = augment(b.pop("image0"), gen, d.augment_scale, d.augment_rotate, d.augment_jitter)
        b["pixels1"] = augment(b.pop("image1"), gen, d.augment_scale, d.augment_rotate, d.augment_jitter)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = f(b)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    fc = torch.utils.flop_counter.FlopCounterMode(display=False)
    with fc, torch.compiler.set_stance("force_eager"):
        step(model)
    flops = fc.get_total_flops()
    warm = 3 if mode == "eager" else 5
    times = []
    t_first = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warm + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(fwd)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warm:
            times.append(time.perf_counter() - t0)
        elif i == 0:
            first_s = time.perf_counter() - t_first  # includes compilation
    med = statistics.median(times)
    out = {"setting": setting, "batch": bs, "step_s": round(med, 4), "samples_per_s": round(bs / med, 1),
           "first_step_s": round(first_s, 1),
           "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
           "TFLOP_per_sample": float(f"{flops / bs / 1e12:.4g}"), "achieved_TFLOPs": round(flops / med / 1e12, 2)}
    if profile:
        try:  # a diagnostic: its failure must not cost the timed row
            out["profile"] = profile_steps(lambda: step(fwd), dev, profile)
        except Exception as e:  # noqa: BLE001
            out["profile_error"] = repr(e)[:200]
    return out


# kernel-name fragments -> where the GPU time goes (cuBLAS / CUTLASS GEMMs, SDPA kernels, the fused optimiser,
# inductor's generated Triton kernels; everything else is eager elementwise / reduction / copy work)
KERNEL_KINDS = (("attention", ("flash", "fmha", "attention", "sdpa")),  # first: CUTLASS attention is not a GEMM
                ("gemm", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "triton_tem")),
                ("optimizer", ("multi_tensor", "adam", "foreach")),
                ("triton", ("triton_",)))


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def profile_steps(step, dev: torch.device, n: int) -> dict:
    """Profile n more steps: GPU kernel time per step by kind and the busiest kernels, and how much of the wall
    time the GPU was busy at all (the rest is launch / Python overhead or synchronisation). On CPU: the
    busiest operators by self time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    out = {"steps": n, "wall_ms_per_step": round(wall * 1e3 / n, 2)}
    if dev.type != "cuda":
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
        out["top"] = [[e.key[:70], round(e.self_cpu_time_total / 1e3 / n, 2)] for e in ops]
        return out
    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return {**out, **kernel_summary(kernels, n, wall)}


def kernel_summary(kernels: list[tuple[str, float]], n: int, wall_s: float) -> dict:
    """(kernel name, microseconds) of n profiled steps that took wall_s -> per-step GPU time by kind, the
    fraction of the wall time the GPU was busy, and the 12 busiest kernels."""
    by_kind: dict[str, float] = {}
    by_name: dict[str, float] = {}
    for name, us in kernels:
        kind = kernel_kind(name)
        by_kind[kind] = by_kind.get(kind, 0.0) + us
        by_name[name] = by_name.get(name, 0.0) + us
    busy_ms = sum(by_kind.values()) / 1e3 / n
    return {"gpu_busy_ms_per_step": round(busy_ms, 2), "busy_fraction": round(busy_ms / (wall_s * 1e3 / n), 3),
            "kernels_per_step": len(kernels) // n,
            "ms_per_step_by_kind": {k: round(v / 1e3 / n, 2) for k, v in sorted(by_kind.items(), key=lambda x: -x[1])},
            "top": [[k[:70], round(v / 1e3 / n, 2)] for k, v in sorted(by_name.items(), key=lambda x: -x[1])[:12]]}


def matmul_ceiling() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--batches", default=None, help="comma-separated (default: 32,128 paper / 32 tiny)")
    ap.add_argument("--settings", default=None,
                    help="precision-mode list, e.g. fp32-eager,bf16-eager,bf16-compile (whole model),bf16-blocks "
                         "(each repeated block compiled once: qft.compile_blocks)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (eager: a quick CPU dry run)")
    ap.add_argument("--anchor", default=None, help="path to anchor_qft_step.py: time the official step too")
    ap.add_argument("--anchor-runs", default="anchor:25,tuned:100",
                    help="setting:batch pairs of the anchor (its 'anchor' setting has anomaly detection on: slow)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, profile N more steps per setting: GPU time by kernel kind and the top kernels")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                    help="config override for our rows, e.g. model.momentum=0 (the official recipe's online queue)")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    overrides = {k: json.loads(v) for k, _, v in (x.partition("=") for x in a.set)}
    cfg = load_config("base" if a.size == "paper" else "tiny", overrides)
    if overrides:
        print(f"# config overrides: {overrides}")
    d = cfg.data
    lengths = {"report": d.report_tokens, "coarse": d.coarse_tokens, "middle": d.middle_tokens, "fine": d.fine_tokens}
    batches = [int(x) for x in (a.batches or ("32,128" if a.size == "paper" else "32")).split(",")]
    settings = (a.settings or ("fp32-eager,bf16-eager,bf16-compile" if dev.type == "cuda" else "fp32-eager")).split(",")
    ceiling = nominal = None
    if dev.type == "cuda":
        name = torch.cuda.get_device_name()
        ceiling = matmul_ceiling()
        nominal = next((v for k, v in PEAK_BF16.items() if k in name), None)
        print(f"# {name}: bf16 matmul ceiling {ceiling / 1e12:.0f} TFLOP/s, nominal {nominal and nominal / 1e12} TFLOP/s")
    else:
        print(f"# CPU, {torch.get_num_threads()} threads")
    rows = []
    for bs in batches:
        for s in settings:
            try:
                r = run_setting(cfg, s, bs, a.steps, dev, lengths, VOCAB[a.size], a.backend, a.profile)
                if ceiling:
                    r["MFU_vs_matmul"] = round(r["achieved_TFLOPs"] * 1e12 / ceiling, 3)
                if nominal:
                    r["MFU_vs_nominal"] = round(r["achieved_TFLOPs"] * 1e12 / nominal, 3)
            except Exception as e:  # keep the table going (e.g. out of memory)
                r = {"setting": s, "batch": bs, "error": repr(e)[:200]}
            if dev.type == "cuda":  # the setting's model and optimiser are gone with its frame: hand the memory back
                torch.cuda.empty_cache()
            rows.append({"who": "ours", **r})
            print(json.dumps(rows[-1]), flush=True)
    if a.anchor:
        spec = importlib.util.spec_from_file_location("anchor_qft_step", a.anchor)
        anchor = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(anchor)
        for run in a.anchor_runs.split(","):
            s, _, bs = run.partition(":")
            try:
                r = anchor.run(s, a.size, int(bs), a.steps, dev.type)
            except Exception as e:  # noqa: BLE001
                r = {"setting": s, "batch": bs, "error": repr(e)[:200]}
            rows.append({"who": "anchor", **r})
            print(json.dumps(rows[-1]), flush=True)
    print()
    cols = ["who", "setting", "batch", "samples_per_s", "step_s", "first_step_s", "peak_GiB", "TFLOP_per_sample", "MFU_vs_matmul",
            "MFU_vs_nominal", "error"]
    cols = [c for c in cols if any(c in r for r in rows)]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    ours = [r for r in rows if r["who"] == "ours" and "samples_per_s" in r]
    anch = [r for r in rows if r["who"] == "anchor" and "samples_per_s" in r]
    if ours and anch:
        best, ref = max(ours, key=lambda r: r["samples_per_s"]), min(anch, key=lambda r: r["samples_per_s"])
        print(f"\nbest ours {best['samples_per_s']} samples/s ({best['setting']}, batch {best['batch']}) = "
              f"{best['samples_per_s'] / ref['samples_per_s']:.1f}x the anchor's {ref['setting']} "
              f"(batch {ref['batch']}, {ref['samples_per_s']} samples/s)")
        for r in anch:
            print(f"  vs anchor {r['setting']} batch {r['batch']}: {best['samples_per_s'] / r['samples_per_s']:.2f}x")
    for r in rows:
        p = r.get("profile")
        if not p:
            continue
        print(f"\nprofile {r['setting']} batch {r['batch']} ({p['steps']} steps): {p['wall_ms_per_step']} ms/step wall"
              + (f", GPU busy {p['gpu_busy_ms_per_step']} ms ({p['busy_fraction']:.0%}), {p['kernels_per_step']} "
                 f"kernels; by kind (ms): {p['ms_per_step_by_kind']}" if "busy_fraction" in p else ""))
        for name, ms in p["top"]:
            print(f"  {ms:9.2f} ms  {name}")


if __name__ == "__main__":
    main()
