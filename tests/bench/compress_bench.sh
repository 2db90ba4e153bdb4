#!/usr/bin/env bash
# Wall time of one compression pass (issue 12) at DP 1, 2, 4 and TP 1, 2 on the CPU: `mlagpt train` of a
# 4-layer, 512-wide MLA model (GELU MLP 2048 wide, kv_lora_rank 128) for one step, then a factorize pass over
# every attention and MLP projection (24 of them) at rank 64. The figure is the pass's seconds on rank 0 (the
# `compression` record of metrics.jsonl: the factorizations of its share of the layers, then the broadcasts of
# every layer's factors), the median of REPEATS runs, and its ratio to DP 1 x TP 1. One intra-op thread per rank;
# on a 2-core machine 4 ranks oversubscribe the cores, so DP 4 cannot beat DP 2 there.
#
#   tests/bench/compress_bench.sh [MLAGPT] [REPEATS]     e.g. build/ci/trainer/mlagpt 3
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mlagpt=$(realpath "${1:-$root/build/ci/trainer/mlagpt}")
repeats=${2:-3}
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
"$mlagpt" prepare --tokenizer char --out "$work/data" > /dev/null

pass_seconds() {  # ranks tp run -> seconds of the pass
  local out="$work/np$1_tp$2_$3"
  local launcher=()
  if [[ $1 -gt 1 ]]; then launcher=(mpiexec -n "$1"); fi
  "${launcher[@]}" "$mlagpt" train --data.dir="$work/data" --run.out_dir="$out" --run.device=cpu --run.threads=1 \
    --run.max_steps=1 --data.batch_size=$((4 / ($1 / $2))) --data.seq_len=64 --model.block_size=64 \
    --model.n_layer=4 --model.n_embd=512 --model.n_head=8 --model.attention=mla --model.kv_lora_rank=128 \
    --model.qk_nope_head_dim=64 --model.qk_rope_head_dim=32 --model.v_head_dim=64 --model.mlp=gelu \
    --model.norm=layernorm --schedule.warmup_steps=1 --eval.every=0 --eval.sample_tokens=0 --checkpoint.every=0 \
    --parallel.tp="$2" --compress.every=1 '--compress.targets=blocks.*.attn.*,blocks.*.mlp.*' --compress.rank=64 \
    > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  "$python" -c "import json, sys; print(next(r['seconds'] for r in map(json.loads, open(sys.argv[1])) if r['kind'] == 'compression'))" \
    "$out/metrics.jsonl"
}

median() {  # ranks tp
  local values=()
  for i in $(seq "$repeats"); do values+=("$(pass_seconds "$1" "$2" "$i")"); done
  "$python" -c "import statistics, sys; print(f'{statistics.median(map(float, sys.argv[1:])):.4f}')" "${values[@]}"
}

printf '%-4s %-4s %-6s %12s %10s\n' dp tp ranks pass_s vs_dp1_tp1
base=$(median 1 1)
printf '%-4s %-4s %-6s %12s %10.3f\n' 1 1 1 "$base" 1
for config in "2 1" "4 1" "2 2" "4 2"; do
  read -r ranks tp <<<"$config"
  seconds=$(median "$ranks" "$tp")
  printf '%-4s %-4s %-6s %12s %10.3f\n' $((ranks / tp)) "$tp" "$ranks" "$seconds" \
    "$("$python" -c "print($seconds / $base)")"
done
