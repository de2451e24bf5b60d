#!/usr/bin/env bash
# GPU check (docs/gpu.md): ERM throughput of ResNet-50 (224 px) and BERT-base
# (128 tokens), batch 32, through the project's input pipeline and from
# tensors already on the GPU, with 1, 2 and 4 jobs sharing the GPU, peak
# memory per job, then a tiny workflow run on cuda compared with the CPU.
# Downloads nothing; at most 8 minutes. One table; exit status 0 when all passed.
#
#   bash benchmarks/gpu_check.sh          # on a machine with a GPU
#   bash benchmarks/gpu_check.sh --cpu    # dry mode: tiny models on the CPU (under a minute)
#   bash benchmarks/gpu_check.sh --cpu --workflow  # ... and the workflow step against a simulated GPU
#   bash benchmarks/gpu_check.sh --help   # the other options (--jobs, --seconds, --no-workflow, --keep)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"; else py="$(command -v python3 || command -v python)"; fi
fi
# The whole check stops after 8 minutes (the dry mode without its workflow step: 2).
limit=480 cpu=0 workflow=0
for arg in "$@"; do
  case "$arg" in --cpu) cpu=1 ;; --workflow) workflow=1 ;; esac
done
if [[ $cpu -eq 1 && $workflow -eq 0 ]]; then limit=120; fi
export LLR_GPU_CHECK_LIMIT=$limit
# The workflow's rules run `python -m llr`: this interpreter's bin first.
export PATH="$(dirname "$py"):$PATH"
cd "$repo"
rc=0
timeout --kill-after=10 "$limit" "$py" "$here/gpu_check.py" "$@" || rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "gpu_check: FAILED: stopped after ${limit}s; look at the job logs in the work folder printed at the start (jobs*/job*.log, workflow-*.log)" >&2
fi
exit $rc
