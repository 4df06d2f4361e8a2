#!/usr/bin/env bash
# Installs the Debian packages sparsebudget builds and tests with, only those missing.
# Usage: tools/install_deps.sh [core|all]   (default: all)
set -euo pipefail
core=(cmake make g++ pkg-config libeigen3-dev libfmt-dev libspdlog-dev nlohmann-json3-dev
      libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev)
extra=(pybind11-dev python3-dev python3-numpy python3-matplotlib python3-pytest python3-torch
       libopenblas-dev clang-14 libclang-rt-14-dev clang-tidy cppcheck doxygen)
want=("${core[@]}")
[ "${1:-all}" = all ] && want+=("${extra[@]}")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "sparsebudget: missing Debian packages: ${missing[*]}" >&2
  echo "sparsebudget: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "sparsebudget: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
