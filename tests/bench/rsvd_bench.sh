#!/usr/bin/env bash
# The randomized-SVD benchmark of issue 9 from end to end: rsvd_bench writes the test matrices and times
# at::linalg_svd and rsvd(); rsvd_torch.py times torch.linalg.svd and torch.svd_lowrank on the same matrices with the
# same settings; rsvd_bench measures torch's errors as it measures its own; rsvd_torch.py prints one JSON line per
# case, the table and the goals. Arguments go to `rsvd_bench --mode single` (--sizes, --ranks, --power-iters,
# --spectra, --dtype, --threads, --repeats, ...; see rsvd_bench --help).
#   tests/bench/rsvd_bench.sh [--keep] [rsvd_bench options]     # --keep: leave the matrices and JSON in place
#   tests/bench/rsvd_bench.sh --sharded N [rsvd_bench options]  # sharded_rsvd on N ranks (mpiexec)
# RSVD_BENCH (the executable; default build/ci/tests/bench/rsvd_bench) and MLAGPT_PYTHON (default .venv/bin/python)
# override the defaults.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=${RSVD_BENCH:-$root/build/ci/tests/bench/rsvd_bench}
python=${MLAGPT_PYTHON:-$root/.venv/bin/python}
if [ ! -x "$bench" ]; then
  echo "rsvd_bench.sh: $bench is not built (cmake --build --preset ci --target rsvd_bench)" >&2
  exit 1
fi

if [ "${1:-}" = --sharded ]; then
  ranks=${2:?rsvd_bench.sh: --sharded needs a rank count}
  shift 2
  # Open MPI refuses root without these (containers, CI); --bind-to none leaves rank 0's one-rank reference every
  # core instead of the one core Open MPI would bind it to.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  exec mpiexec --oversubscribe --bind-to none -n "$ranks" "$bench" --mode sharded "$@"
fi

keep=0
if [ "${1:-}" = --keep ]; then
  keep=1
  shift
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/mlagpt-rsvd-bench.XXXXXX")
if [ "$keep" = 1 ]; then
  echo "rsvd_bench.sh: results in $dir" >&2
else
  trap 'rm -rf "$dir"' EXIT
fi
"$bench" --mode single --dir "$dir" "$@" >"$dir/single.out"
"$python" "$here/rsvd_torch.py" measure "$dir"
"$bench" --mode evaluate --dir "$dir" >"$dir/evaluate.out"
"$python" "$here/rsvd_torch.py" table "$dir"
