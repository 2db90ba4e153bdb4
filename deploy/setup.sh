#!/usr/bin/env bash
# Installs everything mlagpt's build, tests and demo need on Debian 12, and nothing more.
#
#   deploy/setup.sh            Debian packages + LibTorch (PyPI torch wheel) in <repo>/.venv
#   Torch_DIR=/opt/libtorch/share/cmake/Torch deploy/setup.sh
#                              uses that LibTorch and skips the wheel
#
# Idempotent: a second run that finds everything in place installs nothing, says in one line what it
# skipped, and takes about a second. Runs as root, or as a normal user through sudo. pip's cache (~/.cache/pip) and the venv
# are kept, so re-running on the same machine does not download the wheel (several GB with its
# CUDA libraries) again.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
torch_version=2.11.0
venv=${MLAGPT_VENV:-$repo/.venv}

say() { printf '[setup] %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  say "not root and no sudo: install the Debian packages listed in deploy/setup.sh by hand"
  exit 1
fi

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  python3 python3-venv python3-pip
  openmpi-bin libopenmpi-dev
  libhdf5-dev hdf5-tools
  prometheus-cpp-dev libcivetweb-dev prometheus
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libcli11-dev libtomlplusplus-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libsentencepiece-dev libssl-dev
  fortunes gnuplot-nox
  clang-format clang-tidy
  shellcheck python3-yaml
)

missing=()
for p in "${debian_packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The prometheus package starts a server on :9090 through systemd where systemd runs; the tests
  # start their own on an ephemeral port, so a running one is neither needed nor in the way.
fi

# The Python venv holds LibTorch (unless Torch_DIR names another) and the packages the PyTorch
# reference in tests/reference/ uses to write its fixtures.
if [ ! -x "$venv/bin/python" ]; then
  say "creating the venv $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

want=()
if [ -z "${Torch_DIR:-}" ]; then
  have=$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)
  [ "${have%%+*}" = "$torch_version" ] || want+=("torch==$torch_version")
fi
for mod in numpy h5py; do
  "$py" -c "import $mod" 2>/dev/null || want+=("$mod")
done
if [ ${#want[@]} -gt 0 ]; then
  say "installing into the venv: ${want[*]} (the torch wheel and its CUDA libraries are large; pip's cache is kept)"
  "$py" -m pip install -q --disable-pip-version-check "${want[@]}"
fi
if [ ${#missing[@]} -eq 0 ] && [ ${#want[@]} -eq 0 ]; then
  torch_from=${Torch_DIR:-"torch $torch_version in $venv"}
  say "nothing to install: the ${#debian_packages[@]} Debian packages, $torch_from, numpy and h5py are in place"
fi
