#!/usr/bin/env bash
# Runs every command of the README's "Using mlagpt" block, as written, in a scratch directory, so the README cannot
# rot: each must exit 0. Only two things are changed, and both are printed: the line that sets `mlagpt=` names the
# executable under test, and every `train` gets small step counts appended (later overrides win), so the whole
# block takes a minute or two. The inputs a user brings are made here: corpus/ (a directory of text files) and
# input.txt (one text file), from the fortunes corpus.
#   check_readme_usage.sh SOURCE_DIR MLAGPT_EXECUTABLE
set -euo pipefail
src=$1
executable=$2
fortunes=/usr/share/games/fortunes
if [ ! -d "$fortunes" ]; then
  echo "$fortunes is missing: install Debian's fortunes package (deploy/setup.sh does)"
  [ "${CI:-}" = true ] && exit 1
  exit 77
fi

block=$(awk '/^## Using mlagpt/ {in_section = 1; next}
             in_section && /^## / {exit}
             in_section && /^```sh/ {in_block = 1; next}
             in_block && /^```/ {exit}
             in_block {print}' "$src/README.md")
commands=()
while IFS= read -r line; do
  line=${line%%#*}                             # comments (no command of the block has a # of its own)
  line="${line%"${line##*[![:space:]]}"}"      # trailing blanks
  [ -n "$line" ] && commands+=("$line")
done <<<"$block"
if [ ${#commands[@]} -lt 5 ] || [[ ${commands[0]} != mlagpt=* ]]; then
  echo "README.md: no 'Using mlagpt' sh block starting with 'mlagpt=...' (found ${#commands[@]} commands)"
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
ln -s "$src/launch" launch
mkdir corpus
for file in "$fortunes"/*; do  # the fortune text files (not the .dat indexes or the .u8 links), ~2.5 MB
  [[ -f $file && ! -L $file && $file != *.dat ]] && cp "$file" corpus/
done
cat "$fortunes/literature" "$fortunes/songs-poems" >input.txt

small="--run.max_steps=4 --schedule.warmup_steps=2 --eval.every=2 --eval.batches=2 --checkpoint.every=2 --data.batch_size=4 --run.threads=1"
failures=0
for command in "${commands[@]}"; do
  if [[ $command == mlagpt=* ]]; then
    command="mlagpt=$executable"
  elif [[ " $command " == *" train "* ]]; then
    command="$command $small"
  fi
  echo "+ $command"
  if ! bash -c "set -euo pipefail; mlagpt=$executable; $command" >output.log 2>&1; then
    echo "FAILED (see its output below): $command"
    tail -n 20 output.log
    failures=$((failures + 1))
  fi
done
echo "${#commands[@]} README commands run, $failures failed"
[ "$failures" -eq 0 ]
