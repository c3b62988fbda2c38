#!/usr/bin/env bash
# Installs what is missing, then configures and builds Release into build/. Idempotent: a second run
# installs nothing and rebuilds only what changed.
#
#   scripts/setup.sh            # everything
#   BEITV2_SKIP_REF_ENV=1 scripts/setup.sh   # skip the 5.5 GB reference env (no golden regeneration, no slow tests)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$BEITV2_ROOT"

# ---- Debian packages ----
APT_PACKAGES=(build-essential cmake ninja-build ccache python3-venv
  libopencv-dev libyaml-cpp-dev libspdlog-dev libgtest-dev nlohmann-json3-dev libcli11-dev
  dataset-fashion-mnist opencv-doc clang libclang-rt-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=$( [ "$(id -u)" -eq 0 ] && echo "" || echo sudo )
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" > /dev/null
fi

# ---- Python environments (outside the checkout, refreshed when the requirements change) ----
ensure_env() {  # ensure_env DIR REQUIREMENTS
  local dir=$1 req=$2 stamp
  stamp=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -f "$dir/.requirements.sha256" ] && [ "$(cat "$dir/.requirements.sha256")" = "$stamp" ]; then
    return
  fi
  echo "setup: preparing $dir from $req"
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$stamp" > "$dir/.requirements.sha256"
}
mkdir -p "$BEITV2_CACHE"
ensure_env "$BEITV2_BUILD_ENV" scripts/requirements-build.txt
if [ "${BEITV2_SKIP_REF_ENV:-0}" != 1 ]; then
  ensure_env "$BEITV2_REF_ENV" scripts/requirements-ref.txt
fi

# ---- configure + build ----
TORCH_PREFIX=$("$BEITV2_BUILD_PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)')
GEN=()
[ -f "$BEITV2_BUILD_DIR/CMakeCache.txt" ] || { command -v ninja > /dev/null && GEN=(-G Ninja); }
"$BEITV2_CMAKE" -S . -B "$BEITV2_BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DBEITV2_PYTHON="$BEITV2_BUILD_PYTHON" > "$BEITV2_CACHE/configure.log" \
  || { cat "$BEITV2_CACHE/configure.log"; exit 1; }
start=$(date +%s)
"$BEITV2_CMAKE" --build "$BEITV2_BUILD_DIR" -j "${BEITV2_JOBS:-2}"
echo "setup: built in $(( $(date +%s) - start )) s -> $BEITV2_BUILD_DIR/bin"
