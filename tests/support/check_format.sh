#!/usr/bin/env bash
# The tree stays formatted: clang-format (with the root .clang-format) would change none of the C++ and CUDA files
# of the project. Prints the files it would change and exits 1; without clang-format it exits 77 (skipped), or 1
# under CI=true, where deploy/setup.sh installs it.
#   check_format.sh SOURCE_DIR
set -u
cd "$1" || exit 1
if ! command -v clang-format >/dev/null 2>&1; then
  echo "clang-format is not installed (deploy/setup.sh installs it)"
  [ "${CI:-}" = true ] && exit 1
  exit 77
fi
mapfile -d '' files < <(find launch linalg model data monitoring trainer tests \
  \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print0 | sort -z)
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  printf 'not formatted (run clang-format -i on it): %s\n' "${bad[@]}"
  exit 1
fi
echo "${#files[@]} files formatted ($(clang-format --version))"
