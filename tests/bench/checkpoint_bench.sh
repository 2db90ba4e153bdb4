#!/usr/bin/env bash
# Checkpoint write and read times on 1, 2 and 4 ranks (issue 10), on the CPU. For each rank count and each of
# parallel.zero = 0 and 1, trains an MLA model of 6 layers x 384 (9.6 M parameters: 110 MiB of parameters and
# moments) for 2 steps with a checkpoint at step 2, then resumes it for one more step on the same mesh, and prints
# what rank 0 recorded in metrics.jsonl: save seconds and bytes (its file, all ranks' files), load seconds and bytes
# read. Page cache warm (the files were just written); fsync is part of every save.
#
#   tests/bench/checkpoint_bench.sh [MLAGPT]      default build/ci/trainer/mlagpt
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mlagpt=$(realpath "${1:-$root/build/ci/trainer/mlagpt}")
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
"$mlagpt" prepare --tokenizer char --out "$work/data" > /dev/null
model=(--model.attention=mla --model.n_layer=6 --model.n_embd=384 --model.n_head=6 --model.block_size=64
       --model.kv_lora_rank=96 --model.qk_nope_head_dim=64 --model.qk_rope_head_dim=32 --model.v_head_dim=64)

printf '%-6s %-5s %10s %14s %14s %10s %12s\n' ranks zero save_s rank0_MiB all_MiB load_s read_MiB
for ranks in 1 2 4; do
  for zero in 0 1; do
    out="$work/run_${ranks}_${zero}"
    common=(train "${model[@]}" --data.dir="$work/data" --data.batch_size=2 --data.seq_len=64 --run.out_dir="$out"
            --run.device=cpu --run.threads=1 --eval.every=0 --checkpoint.every=2 --parallel.zero="$zero"
            --schedule.warmup_steps=1)
    launcher=()
    if [[ $ranks -gt 1 ]]; then launcher=(mpiexec -n "$ranks"); fi
    "${launcher[@]}" "$mlagpt" "${common[@]}" --run.max_steps=2 > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
    "${launcher[@]}" "$mlagpt" "${common[@]}" --run.max_steps=3 --resume auto >> "$out.log" 2>&1 ||
      { cat "$out.log"; exit 1; }
    "$python" - "$out/metrics.jsonl" "$ranks" "$zero" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
save = next(r for r in records if r["kind"] == "checkpoint_save" and r["step"] == 2)
load = next(r for r in records if r["kind"] == "checkpoint_load")
mib = 1 << 20
print(f"{sys.argv[2]:<6} {sys.argv[3]:<5} {save['seconds']:10.3f} {save['bytes'] / mib:14.1f} "
      f"{save['bytes_all_ranks'] / mib:14.1f} {load['seconds']:10.3f} {load['bytes'] / mib:12.1f}")
PY
  done
done
