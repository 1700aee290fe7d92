"""bench/bench_qft.py, the GPU benchmark's script, on CPU: a timed row with FLOPs and a profile of where time goes."""
import importlib.util
from pathlib import Path

import torch

from model.config import load_config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_qft", ROOT / "bench" / "bench_qft.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_kernel_kinds_of_typical_cuda_kernel_names():
    assert bench.kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "gemm"
    assert bench.kernel_kind("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT") == "gemm"
    assert bench.kernel_kind("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64>>") == "attention"
    assert bench.kernel_kind("fmha_cutlassB_bf16_aligned_64x64_k64_sm80") == "attention"  # CUTLASS, yet attention
    assert bench.kernel_kind("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>") \
        == "optimizer"
    assert bench.kernel_kind("triton_per_fused_add_native_layer_norm_0") == "triton"
    assert bench.kernel_kind("void at::native::vectorized_elementwise_kernel<4, GeluCUDAKernelImpl>") == "other"


def test_kernel_summary_per_step_by_kind_busy_fraction_and_top():
    kernels = [("sm90_xmma_gemm_bf16", 3000.0), ("flash_fwd_kernel", 1000.0), ("triton_poi_fused_add_0", 500.0),
               ("sm90_xmma_gemm_bf16", 3000.0), ("vectorized_elementwise_kernel", 500.0)]
    s = bench.kernel_summary(kernels, n=2, wall_s=0.010)  # two steps of 5 ms wall, 8 ms of kernels
    assert s["gpu_busy_ms_per_step"] == 4.0 and s["busy_fraction"] == 0.8 and s["kernels_per_step"] == 2
    assert s["ms_per_step_by_kind"] == {"gemm": 3.0, "attention": 0.5, "triton": 0.25, "other": 0.25}
    assert list(s["ms_per_step_by_kind"]) == ["gemm", "attention", "triton", "other"]  # busiest first
    assert s["top"][0] == ["sm90_xmma_gemm_bf16", 3.0]


def test_run_setting_times_counts_flops_and_profiles_on_cpu():
    cfg = load_config("tiny")
    lengths = {"report": 24, "coarse": 24, "middle": 16, "fine": 12}
    r = bench.run_setting(cfg, "fp32-eager", 2, 1, torch.device("cpu"), lengths, 300, profile=1)
    assert r["batch"] == 2 and r["samples_per_s"] > 0 and r["TFLOP_per_sample"] >= 0
    assert r["achieved_TFLOPs"] > 0  # FlopCounterMode saw the step's matmuls
    p = r["profile"]
    assert p["steps"] == 1 and p["wall_ms_per_step"] > 0
    names = [name for name, _ in p["top"]]
    assert any(n in ("aten::mm", "aten::addmm", "aten::bmm") for n in names), names
    # --set train.grad_checkpointing=true: the recomputed forward shows in the FLOPs
    ck = load_config("tiny", {"train.grad_checkpointing": True})
    assert bench.run_setting(ck, "fp32-eager", 2, 1, torch.device("cpu"), lengths, 300)["TFLOP_per_sample"] > \
        r["TFLOP_per_sample"]
