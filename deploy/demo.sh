#!/usr/bin/env bash
# The main job of the README: set up, build, prepare the default corpus (Debian's fortune files, character-level),
# train a small MLA model on the CPU for a few minutes with checkpoints, evaluate it, and sample from it.
#
#   deploy/demo.sh [--section.key=value ...]     extra arguments are config overrides for `mlagpt train`
#
# Re-running it resumes the run in runs/tiny_mla (and does nothing more once it has finished); delete that
# directory to train again from scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

deploy/setup.sh
cmake --preset dev >/dev/null
cmake --build --preset dev --target mlagpt
mlagpt=build/dev/trainer/mlagpt

"$mlagpt" prepare --tokenizer char --out datasets/fortunes_char
"$mlagpt" train --config launch/configs/tiny_mla.toml --resume auto "$@"
"$mlagpt" eval --ckpt runs/tiny_mla/checkpoints
"$mlagpt" sample --ckpt runs/tiny_mla/checkpoints --prompt "The secret of life is" --max-new-tokens 300 --seed 7
