#!/usr/bin/env bash
# Training throughput of two mlagpt executables on the same machine in the same run (issue 10: before and after a
# change), on the tiny configs of launch/configs, on the CPU: one process with 2 threads, and 2 ranks with 1 thread
# each (mpiexec). Each run trains STEPS steps on the default corpus (character level) with the config's batch; the
# figure is the median tokens/s of the steps after the first 5 (metrics.jsonl, one record per step). The two
# executables alternate run by run, so load on the machine falls on both alike.
#
#   tests/bench/train_bench.sh BEFORE AFTER [STEPS]     e.g. /tmp/mlagpt_before build/ci/trainer/mlagpt 40
set -euo pipefail
before=$(realpath "$1")
after=$(realpath "$2")
steps=${3:-40}
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
"$after" prepare --tokenizer char --out "$work/data" > /dev/null

median_tokens_per_second() {
  "$python" - "$1" <<'PY'
import json, statistics, sys
rates = [r["tokens_per_second"] for r in map(json.loads, open(sys.argv[1])) if r.get("kind") == "train"]
print(f"{statistics.median(rates[5:]):.0f}")
PY
}

run() {  # binary label config ranks threads
  local out="$work/run_$2_$(basename "$3" .toml)_$4"
  local launcher=()
  if [[ $4 -gt 1 ]]; then launcher=(mpiexec -n "$4"); fi
  "${launcher[@]}" "$1" train --config "$root/launch/configs/$3" --data.dir="$work/data" --run.out_dir="$out" \
    --run.max_steps="$steps" --run.log_every=1 --run.threads="$5" --run.device=cpu --eval.every=0 \
    --checkpoint.every=0 > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  median_tokens_per_second "$out/metrics.jsonl"
}

printf '%-16s %-6s %12s %12s %8s\n' config ranks before after ratio
for config in tiny_mla.toml tiny_mha.toml tiny_gqa.toml tiny_mqa.toml; do
  for ranks in 1 2; do
    threads=$((2 / ranks))
    b=$(run "$before" before "$config" "$ranks" "$threads")
    a=$(run "$after" after "$config" "$ranks" "$threads")
    printf '%-16s %-6s %12s %12s %8.3f\n' "$config" "$ranks" "$b" "$a" "$("$python" -c "print($a / $b)")"
  done
done
