#!/usr/bin/env bash
# The comparison the MLA experiment repositories draw: the four tiny attention variants (launch/configs/tiny_{mha,
# gqa,mqa,mla}.toml: same width, depth, data and schedule) trained one after the other on the default corpus
# (Debian's fortunes, character-level) with the same token budget (the configs' 1500 steps x 16 x 128 tokens), then
# `mlagpt report` on the four runs: OUT/report/report.md (parameters, KV-cache bytes per token, final validation
# loss and perplexity, tokens/s, wall time) and its plots OUT/report/loss.png and OUT/report/tokens_per_second.png.
# A record, not a test; on a 2-core CPU it takes about 9 minutes. Run it alone: tokens/s and wall time are timings.
#
#   tests/bench/attention_report.sh OUT [MLAGPT] [STEPS]      e.g. /tmp/variants build/ci/trainer/mlagpt 1500
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
mlagpt=$(realpath "${2:-$root/build/ci/trainer/mlagpt}")
steps=${3:-1500}
mkdir -p "$out"
cd "$out"
[ -f datasets/fortunes_char/dataset.json ] || "$mlagpt" prepare --tokenizer char --out datasets/fortunes_char
mkdir -p runs
runs=()
for variant in mha gqa mqa mla; do
  run=runs/tiny_$variant
  if [ -e "$run" ]; then
    echo "$out/$run exists: remove it (or choose another OUT) to train it again" >&2
    exit 1
  fi
  echo "training tiny_$variant ($steps steps) -> $out/$run" >&2
  "$mlagpt" train --config "$root/launch/configs/tiny_$variant.toml" --data.dir=datasets/fortunes_char \
    --run.out_dir="$run" --run.max_steps="$steps" --eval.sample_tokens=0 >"$run.log" 2>&1 ||
    { tail -n 20 "$run.log" >&2; exit 1; }
  runs+=("$run")
done
"$mlagpt" report "${runs[@]}" --out report
echo "$out/report/report.md" >&2
