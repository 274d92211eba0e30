#!/usr/bin/env bash
# Prepared GPU performance pass (reports/perf/README.md, "GPU"). Run from anywhere on a
# machine with one CUDA GPU and the project venv; finishes in < 8 min on one H100:
#   1. `invbench perf --device cuda` (small prior, 32x32): floor, vs_deepinv, throughput, fast_paths
#      (capped at 150 s), then vml_vs_dps (DPS-1000 on the demo tasks; capped at 120 s)
#   2. scripts/gpu_perf.py: ADM FFHQ-size and ImageNet-size architectures, random weights, 256x256,
#      each solver at batch 1 and 8 with and without each fast path (time-budgeted).
# Outputs: reports/perf/gpu-<device>-invbench.{json,md}, reports/perf/gpu-<device>.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
TOTAL_S=${TOTAL_S:-460}
START=$(date +%s)
mkdir -p reports/perf
DEV=$("$PY" -c "import re, torch; n = torch.cuda.get_device_name(0); print(re.sub(r'[^a-z0-9]+', '-', n.lower()).strip('-'))")
echo "gpu_perf.sh: device $DEV" >&2
timeout 150 "$PY" -m bench.cli perf --device cuda --reps 5 --cases floor,vs_deepinv,throughput,fast_paths \
    --json "reports/perf/gpu-$DEV-invbench.json" > "reports/perf/gpu-$DEV-invbench.md" \
    || echo "gpu_perf.sh: invbench perf --device cuda stopped (exit $?); continuing" >&2
timeout 120 "$PY" -m bench.cli perf --device cuda --reps 5 --cases vml_vs_dps \
    --json "reports/perf/gpu-$DEV-invbench-vml.json" > "reports/perf/gpu-$DEV-invbench-vml.md" \
    || echo "gpu_perf.sh: invbench perf --cases vml_vs_dps stopped (exit $?); continuing" >&2
LEFT=$(( TOTAL_S - ($(date +%s) - START) - 15 ))
"$PY" scripts/gpu_perf.py --budget-s "$LEFT" --invbench-json "reports/perf/gpu-$DEV-invbench.json"
echo "gpu_perf.sh: done in $(( $(date +%s) - START )) s" >&2
