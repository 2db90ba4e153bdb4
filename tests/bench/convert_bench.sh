#!/usr/bin/env bash
# MHA -> MLA conversion (issue 12): launch/configs/tiny_mha.toml trained for its 1500 steps on the default corpus
# (character level), converted by `mlagpt convert --to-mla` at each kv_lora_rank (default 32 and 16; the rope
# dimensions default to a quarter of the head width), then fine-tuned for 10% of the original tokens (150 steps,
# same batch; the config's warmup, cosine decay over the 150 steps). Prints the validation loss (eval.batches of the
# config) of the MHA model, of the MLA model right after conversion, and after fine-tuning, and the KV cache.
#
#   tests/bench/convert_bench.sh [MLAGPT] [RANKS]     e.g. build/ci/trainer/mlagpt "32 16"
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mlagpt=$(realpath "${1:-$root/build/ci/trainer/mlagpt}")
ranks=${2:-"32 16"}
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
config="$root/launch/configs/tiny_mha.toml"
"$mlagpt" prepare --tokenizer char --out "$work/data" > /dev/null
"$mlagpt" train --config "$config" --data.dir="$work/data" --run.out_dir="$work/mha" --run.device=cpu \
  --eval.sample_tokens=0 > "$work/mha.log" 2>&1 || { cat "$work/mha.log"; exit 1; }

last_val_loss() {
  "$python" -c "import json, sys; print([r for r in map(json.loads, open(sys.argv[1])) if r['kind'] == 'eval'][-1]['val_loss'])" \
    "$1/metrics.jsonl"
}
echo "MHA after 1500 steps: val loss $(last_val_loss "$work/mha")"
printf '%-13s %12s %14s %16s %s\n' kv_lora_rank val_loss_mha val_loss_after val_loss_finetune "KV values/token"
for rank in $ranks; do
  out=$("$mlagpt" convert --to-mla --ckpt "$work/mha/checkpoints" --out "$work/mla$rank" --kv-lora-rank "$rank" \
    --batches 20 --device cpu 2> "$work/convert$rank.log") || { cat "$work/convert$rank.log"; exit 1; }
  read -r before after < <(grep -o 'val loss [0-9.]* -> [0-9.]*' <<<"$out" | awk '{print $3, $5}')
  kv=$(grep -o 'KV cache [0-9]* -> [0-9]*' <<<"$out" | awk '{print $3 " -> " $5}')
  resume=$(grep -o -- '--resume .*' <<<"$out")
  # shellcheck disable=SC2086  # the printed overrides are separate words
  "$mlagpt" train --config "$config" --data.dir="$work/data" --run.out_dir="$work/mla${rank}_tuned" --run.device=cpu \
    --run.max_steps=150 --eval.every=150 --eval.sample_tokens=0 --checkpoint.every=0 $resume \
    > "$work/tune$rank.log" 2>&1 || { cat "$work/tune$rank.log"; exit 1; }
  printf '%-13s %12s %14s %16.4f %s\n' "$rank" "$before" "$after" "$(last_val_loss "$work/mla${rank}_tuned")" "$kv"
done
