#!/usr/bin/env bash
# The main job of the README: set up, build, prepare the default corpus (Debian's fortune files, character-level),
# train a small MLA model on the CPU for a few minutes with checkpoints, evaluate it, and sample from it.
#
#   deploy/demo.sh [--section.key=value ...]     extra arguments are config overrides for `mlagpt train`
#
# It builds the `ci` preset, the build the README's test command makes, so the two share one build (build/ci).
# Re-running it skips what is done, and says so: setup finds everything installed, the build is up to date, the
# dataset is kept, and training resumes the run in runs/tiny_mla (nothing to train once it has finished; delete
# that directory to train again from scratch).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '[demo] %s\n' "$*" >&2; }

deploy/setup.sh
cmake --preset ci >/dev/null
cmake --build --preset ci --target mlagpt
mlagpt=build/ci/trainer/mlagpt

if [ -f datasets/fortunes_char/dataset.json ]; then
  say "datasets/fortunes_char is prepared already: not preparing it again (delete it to do so)"
else
  "$mlagpt" prepare --tokenizer char --out datasets/fortunes_char
fi
"$mlagpt" train --config launch/configs/tiny_mla.toml --resume auto "$@"
"$mlagpt" eval --ckpt runs/tiny_mla/checkpoints
"$mlagpt" sample --ckpt runs/tiny_mla/checkpoints --prompt "The secret of life is" --max-new-tokens 300 --seed 7
