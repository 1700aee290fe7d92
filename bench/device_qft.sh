#!/usr/bin/env bash
# Issue 5's GPU measurement in one call of the device tool (a session lent a GPU has ~15 minutes).
#
# Here, once:   mkdir -p .device && cp ../shared/bench/anchor_qft_step.py .device/ &&
#               mkdir -p .git/info && (grep -qsx '/.device/' .git/info/exclude || echo '/.device/' >> .git/info/exclude)
# Then:         run(command="bash bench/device_qft.sh", carry=[".device"], timeout_s=560)
# The table (ours and the official step, same GPU, with ratios) lands in $OUT/bench_qft.txt.
# CPU dry run:  SIZE=tiny BATCHES=8 SETTINGS=fp32-eager ANCHOR_BATCHES=4 STEPS=2 bash bench/device_qft.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=.
OUT=${OUT:-/tmp}
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
anchor=()
[ -f .device/anchor_qft_step.py ] && anchor=(--anchor .device/anchor_qft_step.py --anchor-batches "${ANCHOR_BATCHES:-25,100}")
timeout 520 $PY bench/bench_qft.py --size "${SIZE:-paper}" --batches "${BATCHES:-128,256}" \
    --settings "${SETTINGS:-bf16-eager,bf16-compile}" --steps "${STEPS:-10}" "${anchor[@]}" 2>&1 | tee "$OUT/bench_qft.txt"
