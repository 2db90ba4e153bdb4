#!/usr/bin/env bash
# CPU step time and tokens/s of tensor parallelism at TP 1, 2 and 4 (issue 11), on launch/configs/tiny_mla.toml:
# mpiexec -n TP, one rank per TP rank (dp 1), one intra-op thread each, the config's global batch; plus one process
# with 2 threads, which uses both cores as TP 2 does. Each run trains STEPS steps on the default corpus (character
# level); the figures are the medians over the steps after the first 5 (metrics.jsonl, one record per step). A
# record, not a goal: on a 2-core CPU TP 4 oversubscribes the cores, and a CPU is not where tensor parallelism pays
# (it splits each matmul and adds four all-reduces of [B, T, d] per block).
#
#   tests/bench/tp_train_bench.sh [MLAGPT] [STEPS]     e.g. build/ci/trainer/mlagpt 30
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mlagpt=$(realpath "${1:-$root/build/ci/trainer/mlagpt}")
steps=${2:-30}
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
"$mlagpt" prepare --tokenizer char --out "$work/data" > /dev/null

medians() {  # metrics.jsonl -> "step_ms tokens_per_second"
  "$python" - "$1" <<'PY'
import json, statistics, sys
records = [r for r in map(json.loads, open(sys.argv[1])) if r.get("kind") == "train"][5:]
print(f'{1000 * statistics.median(r["step_seconds"] for r in records):.1f} '
      f'{statistics.median(r["tokens_per_second"] for r in records):.0f}')
PY
}

run() {  # tp threads
  local out="$work/tp$1_threads$2"
  local launcher=()
  if [[ $1 -gt 1 ]]; then launcher=(mpiexec -n "$1"); fi
  "${launcher[@]}" "$mlagpt" train --config "$root/launch/configs/tiny_mla.toml" --data.dir="$work/data" \
    --run.out_dir="$out" --run.max_steps="$steps" --run.log_every=1 --run.threads="$2" --run.device=cpu \
    --eval.every=0 --eval.sample_tokens=0 --checkpoint.every=0 --parallel.tp="$1" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  medians "$out/metrics.jsonl"
}

printf '%-4s %-8s %12s %12s %10s\n' tp threads step_ms tokens/s vs_tp1
read -r base_ms base_rate < <(run 1 1)
printf '%-4s %-8s %12s %12s %10.3f\n' 1 1 "$base_ms" "$base_rate" 1
read -r ms rate < <(run 1 2)
printf '%-4s %-8s %12s %12s %10.3f\n' 1 2 "$ms" "$rate" "$("$python" -c "print($rate / $base_rate)")"
for tp in 2 4; do
  read -r ms rate < <(run "$tp" 1)
  printf '%-4s %-8s %12s %12s %10.3f\n' "$tp" "1/rank" "$ms" "$rate" "$("$python" -c "print($rate / $base_rate)")"
done
