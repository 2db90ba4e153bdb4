#!/usr/bin/env bash
# run-tests.sh TORCH_LIB [TEST ...]: runs the bundle's gpu-label tests, or the named ones. gpu-tests.txt lists them
# as CTest does, one a line: the test's name, its executable in bin/ and its arguments. A TEST named here is looked
# up there first, else taken as an executable in bin/ run without arguments.
# MLAGPT_REQUIRE_GPU=1: a gpu test that finds no device fails instead of skipping, and an executable whose tests all
# skipped (exit 77) counts as a failure too. Exits 1 if any test executable failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=env.sh source-path=SCRIPTDIR
. "$here/env.sh" "$1"
shift
export OMP_NUM_THREADS=4 MLAGPT_REQUIRE_GPU=1

tests=()  # one "NAME EXECUTABLE [ARG ...]" a line
while read -r line; do
  [ -n "$line" ] && tests+=("$line")
done <"$here/gpu-tests.txt"
if [ $# -gt 0 ]; then
  wanted=()
  for name in "$@"; do
    found=""
    for line in "${tests[@]}"; do
      [ "${line%% *}" = "$name" ] && found=$line
    done
    wanted+=("${found:-$name $name}")
  done
  tests=("${wanted[@]}")
fi

status=0
for line in "${tests[@]}"; do
  read -r -a words <<<"$line"
  name=${words[0]}
  echo "=== $name"
  rc=0
  "$here/bin/${words[1]}" "${words[@]:2}" </dev/null || rc=$?
  if [ $rc -ne 0 ]; then
    echo "=== $name FAILED: exit status $rc$([ $rc -eq 77 ] && echo ' (every test skipped)')"
    status=1
  fi
done
exit $status
