#!/usr/bin/env bash
# The GPU benchmark suite: one prepared command for a lent GPU that finishes within 8 minutes and
# writes one JSON (issue 12). No network: every model has random weights and its config ships
# in the repository (segzero_model/tiny/real_size.py, the sam2 package's configs).
#
#   benchmarks/gpu_suite.sh [--output FILE]   # on the GPU machine, from the repository root
#   benchmarks/gpu_suite.sh --smoke            # every step, reduced, on the CPU (CI runs it)
#
# Steps (full mode, CUDA):
#   pipeline_3b, pipeline_7b    benchmarks/pipeline.py: the released Qwen2.5-VL-3B / -7B
#                               architectures + SAM2 hiera-large, 128 forced new tokens, eager
#                               and compiled (static KV cache + torch.compile)
#   prefix_3b, prefix_7b        benchmarks/prefix_reuse.py: same-frame prefix reuse
#   sam2_large                  benchmarks/sam2_embedding.py: hiera-large image embedding,
#                               eager and compiled
#   tracking                    benchmarks/tracking.py: per-frame tracking with hiera-large
#   remote                      benchmarks/remote_overhead.py: the openai backend against a local
#                               `transformers serve` (recorded as skipped without the serving
#                               extras: pip install "transformers[serving]")
#   segmenters                  benchmarks/segmenters.py: sam2 hiera t/s/b+/l, EdgeTAM (needs
#                               timm: carry its wheel) and the SAM3 tracker side by side
# Each step has its own time limit (together 515 s at most, kills included); a step that fails or runs out of time is recorded with its
# exit code and the end of its log, and the suite goes on. The JSON holds every step's own JSON
# object, the device, the date and the git commit.
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --output) output="$2"; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "gpu_suite: unknown argument $1 (--smoke, --output FILE)" >&2; exit 2 ;;
  esac
  shift
done
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
if [ -z "$output" ]; then
  mode=$([ "$smoke" = 1 ] && echo smoke || echo gpu)
  output="benchmarks/gpu_suite-$mode-$(date -u +%Y%m%dT%H%M%SZ).json"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/segzero-suite-XXXXXX")
trap 'rm -rf "$work"' EXIT
steps=()

# step NAME SECONDS COMMAND...: run it, its stdout (one JSON object) to $work/NAME.json.
step() {
  local name=$1 limit=$2
  shift 2
  steps+=("$name")
  echo "gpu_suite: $name (at most ${limit} s)" >&2
  local started=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >"$work/$name.json" 2>"$work/$name.log"
  echo $? >"$work/$name.rc"
  echo $((SECONDS - started)) >"$work/$name.seconds"
}

if [ "$smoke" = 1 ]; then
  device=cpu
  tiny=(--new-tokens 4 --width 64 --height 48)
  step pipeline_tiny 300 "$python" -m benchmarks.pipeline --arch tiny --device cpu --repeats 1 "${tiny[@]}"
  step prefix_tiny 300 "$python" -m benchmarks.prefix_reuse --arch tiny --device cpu --frames 1 --queries 2 "${tiny[@]}"
  step sam2_tiny 300 "$python" -m benchmarks.sam2_embedding --config sam2.1_hiera_t --device cpu --repeats 1 --width 64 --height 48 --no-compile
  step tracking 300 "$python" -m benchmarks.tracking --device cpu --frames 20 --pipeline-frames 1 --width 160 --height 120
  step remote 300 "$python" -m benchmarks.remote_overhead --device cpu --queries 2 --new-tokens 8
  step segmenters 300 "$python" -m benchmarks.segmenters --tiny --device cpu --repeats 1 --models hiera_t,hiera_l,edgetam,sam3_tracker
else
  device=cuda
  step pipeline_3b 90 "$python" -m benchmarks.pipeline --arch 3b --device cuda --new-tokens 128 --repeats 3 --compile
  step pipeline_7b 120 "$python" -m benchmarks.pipeline --arch 7b --device cuda --new-tokens 128 --repeats 3 --compile
  step prefix_3b 35 "$python" -m benchmarks.prefix_reuse --arch 3b --device cuda --frames 3 --new-tokens 32
  step prefix_7b 50 "$python" -m benchmarks.prefix_reuse --arch 7b --device cuda --frames 3 --new-tokens 32
  step sam2_large 55 "$python" -m benchmarks.sam2_embedding --config sam2.1_hiera_l --device cuda
  step tracking 35 "$python" -m benchmarks.tracking --sam2-config sam2.1_hiera_l --device cuda --frames 200 --pipeline-frames 3
  step remote 35 "$python" -m benchmarks.remote_overhead --device cuda --queries 5 --new-tokens 32
  step segmenters 60 "$python" -m benchmarks.segmenters --device cuda --repeats 3
fi

"$python" - "$work" "$output" "$device" "$smoke" "${steps[@]}" <<'EOF'
"""Gather the steps' JSON objects (or how they failed) into one file."""
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

work, output, device, smoke, *steps = sys.argv[1:]
work = Path(work)


def gpu_name():
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as error:  # the suite must still write its file
        return f"unknown ({error})"


def commit():
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


report = {
    "suite": "benchmarks/gpu_suite.sh",
    "mode": "smoke" if smoke == "1" else "gpu",
    "device": device,
    "gpu": gpu_name(),
    "host": platform.node(),
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "git_commit": commit(),
    "steps": {},
}
for name in steps:
    rc = int((work / f"{name}.rc").read_text())
    entry = {"exit_code": rc, "seconds": int((work / f"{name}.seconds").read_text())}
    text = (work / f"{name}.json").read_text()
    if rc == 0:
        try:
            entry["result"] = json.loads(text)
        except ValueError as error:
            entry["error"] = f"stdout is not one JSON object ({error}): {text[-500:]}"
    else:
        entry["error"] = "timed out" if rc in (124, 137) else f"exit code {rc}"
        entry["log_tail"] = (work / f"{name}.log").read_text()[-2000:]
    report["steps"][name] = entry
Path(output).write_text(json.dumps(report, indent=2) + "\n")
failed = [name for name, entry in report["steps"].items() if "error" in entry]
print(f"gpu_suite: wrote {output}; failed: {failed or 'none'}", file=sys.stderr)
sys.exit(1 if failed else 0)
EOF
