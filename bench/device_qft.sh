#!/usr/bin/env bash
# Issue 5's GPU measurement in one call of the device tool (a session lent a GPU has ~15 minutes, machine
# start included, so the command must stay under ~9 minutes).
#
# Here, once:   mkdir -p .device && cp ../shared/bench/anchor_qft_step.py .device/ &&
#               mkdir -p .git/info && (grep -qsx '/.device/' .git/info/exclude || echo '/.device/' >> .git/info/exclude)
# Then:         run(command="bash bench/device_qft.sh", carry=[".device"], timeout_s=560)
# Everything lands in $OUT/bench_qft.txt. Stages, most important first, each under its own time limit (cut to
# what is left of BUDGET seconds; skipped under 45 s) so a slow compile cannot cost the rows after it:
#   1. ours bf16 eager at batch 128 and the official step (its fp16 + anomaly-detection settings at batch 25,
#      the tidy bf16 version at batch 100): the ratios
#   2. ours with regional compilation (each repeated block compiled once, --compile blocks)
#   3. the official recipe's online queue (momentum 0: no momentum encoder, the anchor's FLOPs), blocks compiled
#   4. ours with the whole step compiled as one graph (most fusion, minutes of compilation)
#   5. batch 256 with activation checkpointing (without it ~1 GiB of fp32-equivalent activations per sample would
#      not fit even the H200; this row says what recomputation costs on a GPU)
# Stages 1-4 also profile two steps each (--profile): GPU time by kernel kind, how busy the GPU was, top kernels.
# CPU dry run (eager backend: no inductor codegen):
#   SIZE=tiny BATCHES=8 BIG=16 STEPS=2 ANCHOR_RUNS=anchor:4 PREC=fp32 BACKEND=eager PY=.venv/bin/python bash bench/device_qft.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-/tmp}
PY=${PY:-python3}
SIZE=${SIZE:-paper}
BATCHES=${BATCHES:-128}
BIG=${BIG:-256}
STEPS=${STEPS:-10}
PREC=${PREC:-bf16}
BUDGET=${BUDGET:-530}
log="$OUT/bench_qft.txt"
: > "$log"
start=$SECONDS
stage() {  # stage LIMIT ARGS...: one bench_qft.py run, appended to the log
    local limit=$1 left=$((BUDGET - (SECONDS - start))); shift
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 45 ]; then echo "## skipped (${left} s left): $*" | tee -a "$log"; return; fi
    echo "## stage at +$((SECONDS - start)) s (limit ${limit} s): $*" | tee -a "$log"
    timeout "$limit" $PY bench/bench_qft.py --size "$SIZE" --steps "$STEPS" --backend "${BACKEND:-inductor}" "$@" 2>&1 |
        tee -a "$log"
    echo "## exit ${PIPESTATUS[0]} at +$((SECONDS - start)) s" | tee -a "$log"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee -a "$log"
anchor=()
[ -f .device/anchor_qft_step.py ] && anchor=(--anchor .device/anchor_qft_step.py --anchor-runs "${ANCHOR_RUNS:-anchor:25,tuned:100}")
prof=(--profile "${PROFILE:-2}")  # where each setting's step time goes (kernel kinds, GPU busy fraction)
stage 150 --batches "$BATCHES" --settings "$PREC-eager" "${prof[@]}" "${anchor[@]}"
stage 200 --batches "$BATCHES" --settings "$PREC-blocks" "${prof[@]}"
stage 150 --batches "$BATCHES" --settings "$PREC-blocks" --set model.momentum=0 "${prof[@]}"
stage 240 --batches "$BATCHES" --settings "$PREC-compile" "${prof[@]}"
stage 150 --batches "$BIG" --settings "$PREC-blocks" --set train.grad_checkpointing=true
echo "## done at +$((SECONDS - start)) s" | tee -a "$log"
