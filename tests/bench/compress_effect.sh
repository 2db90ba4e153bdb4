#!/usr/bin/env bash
# The training effect of compression (issue 12): each tiny config of launch/configs/ (MHA, GQA, MQA, MLA) trained
# for its 1500 steps on the default corpus (character level) twice with the same tokens: as it is, and with its MLP
# projections (gate, fc, proj of every block) factorized to half their weights (compress.param_ratio = 0.5) after
# step 750. The figure is the validation loss of the last evaluation (step 1500, eval.batches of the config) and
# the compressed run's ratio to the uncompressed one (goal: within 2%, a ratio <= 1.02).
#
#   tests/bench/compress_effect.sh [MLAGPT] [VARIANTS]     e.g. build/ci/trainer/mlagpt "mla mha"
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mlagpt=$(realpath "${1:-$root/build/ci/trainer/mlagpt}")
variants=${2:-"mha gqa mqa mla"}
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$mlagpt" prepare --tokenizer char --out "$work/data" > /dev/null

last_val_loss() {
  "$python" -c "import json, sys; print([r for r in map(json.loads, open(sys.argv[1])) if r['kind'] == 'eval'][-1]['val_loss'])" \
    "$1/metrics.jsonl"
}

run() {  # variant name extra...
  local out="$work/$1_$2"
  "$mlagpt" train --config "$root/launch/configs/tiny_$1.toml" --data.dir="$work/data" --run.out_dir="$out" \
    --run.device=cpu --eval.sample_tokens=0 "${@:3}" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
  last_val_loss "$out"
}

printf '%-5s %14s %16s %8s %s\n' model val_loss_dense val_loss_compress ratio "parameters (compressed run)"
for variant in $variants; do
  dense=$(run "$variant" dense)
  compressed=$(run "$variant" compressed --compress.start_step=750 --compress.every=100000 \
    '--compress.targets=blocks.*.mlp.*' --compress.param_ratio=0.5)
  params=$(grep -o 'model [0-9]* -> [0-9]* parameters' "$work/${variant}_compressed.log" | head -1)
  printf '%-5s %14.4f %16.4f %8.4f %s\n' "$variant" "$dense" "$compressed" \
    "$("$python" -c "print($compressed / $dense)")" "$params"
done
