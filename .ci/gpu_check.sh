#!/usr/bin/env bash
# The GPU check, one command for the day a CUDA machine is at hand (under 8 minutes on one A100/H100-class GPU):
#   .ci/gpu_check.sh [OUT.json]                 the `gpu` tests, `bench sample` (full fine-tune: vanilla, swapped,
#                                               bf16 prior; LoRA: vanilla, free prior) and `bench train` at XL/2 and
#                                               S/2 (random weights built here: no hub needed), then the paper recipe's
#                                               short true-size fit; every figure in one JSON (default gpu_check.json)
#   .ci/gpu_check.sh --cpu-dry-run [OUT.json]   the same pieces at toy sizes on the CPU, to show the script works
# Without a CUDA device (and without --cpu-dry-run) it refuses in one line, exit 2.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--cpu-dry-run" ]; then dry=1; shift; fi
out=$(realpath -m "${1:-gpu_check.json}")
py=${PYTHON:-python}
if [ $dry = 0 ] && ! $py -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: error: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, or --cpu-dry-run" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
cli="$py -m priorswap.toolkit"
if [ $dry = 1 ]; then  # toy sizes on the CPU: every piece runs, no figure means anything
  sizes=(tiny); device=cpu; sample_batches=(2); repeats=1; train=(--resolution 32 --batch-size 2 --steps 1 --repeats 1)
  export PRIORSWAP_REAL_SIZE_DIT=tiny PRIORSWAP_REAL_SIZE_ACCELERATOR=cpu
else  # paper sizes: XL/2 and S/2 at 256 px, the fast-DiT comparison's batch per GPU
  sizes=(XL/2 S/2); device=cuda; sample_batches=(8 32); repeats=5; train=(--resolution 256 --batch-size 128 --steps 10 --repeats 2)
  export PRIORSWAP_REAL_SIZE_DIT=XL/2 PRIORSWAP_REAL_SIZE_ACCELERATOR=cuda
fi
start=$(date +%s)
slow=$(( dry ? 3 : 1 ))  # a shared CPU starts each bench cell's process slowly
step() {  # step NAME SECONDS COMMAND...: bounded, its output kept, its status recorded
  local name=$1 limit=$(( $2 * slow )); shift 2
  echo "+ [$name] $*" >&2
  local rc=0
  timeout "$limit" "$@" >"$work/$name.log" 2>&1 || rc=$?
  echo "$rc" >"$work/$name.rc"
  tail -n 3 "$work/$name.log" >&2
}
step gpu_tests 120 $py -m pytest -m gpu tests/dit/test_gpu.py -q -p no:cacheprovider
for size in "${sizes[@]}"; do
  tag=${size//\//}
  step "bench_sample_$tag" 150 $cli bench sample --size "$size" --batch-sizes "${sample_batches[@]}" \
    --modes vanilla swapped bf16-prior lora-vanilla lora-free --repeats $repeats --device $device --json
  step "bench_train_$tag" 150 $cli bench train --size "$size" "${train[@]}" --json
done
PRIORSWAP_REAL_SIZE=1 PRIORSWAP_REAL_SIZE_OUT="$work/fit.json" \
  step real_size_fit 240 $py -m pytest tests/training/test_real_size.py -m slow_real_size -q -p no:cacheprovider --basetemp "$work/fit"
$py - "$work" "$out" "$dry" "$(( $(date +%s) - start ))" <<'EOF'
import glob, json, os, sys

import torch

work, out, dry, seconds = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
report = {"cpu_dry_run": dry, "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not dry else "cpu",
          "torch": torch.__version__, "seconds": seconds, "steps": {}}
for rc_file in sorted(glob.glob(os.path.join(work, "*.rc"))):
    name = os.path.basename(rc_file)[:-3]
    log = open(os.path.join(work, name + ".log")).read().strip().splitlines()
    entry = {"exit": int(open(rc_file).read()), "last_line": log[-1] if log else ""}
    if entry["exit"] != 0:  # 124: over its time limit
        entry["log_tail"] = log[-25:]
    if name.startswith("bench_") and entry["exit"] == 0:
        entry["figures"] = json.loads(log[-1])  # --json: the last line
    if name == "real_size_fit" and os.path.isfile(os.path.join(work, "fit.json")):
        entry["figures"] = json.load(open(os.path.join(work, "fit.json")))
    report["steps"][name] = entry
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(report, f, indent=1)
os.replace(tmp, out)
failed = [k for k, v in report["steps"].items() if v["exit"] != 0]
print(f"gpu_check: wrote {out} in {seconds} s; " + (f"FAILED: {', '.join(failed)}" if failed else "every step passed"))
sys.exit(1 if failed else 0)
EOF
