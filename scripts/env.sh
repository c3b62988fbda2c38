# Sourced by the scripts: where the two Python environments and the build live.
# Both environments sit outside the checkout (so a fresh clone reuses them) and carry a stamp of their
# requirements file's hash; setup.sh refreshes one whose stamp differs.
BEITV2_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BEITV2_CACHE=${BEITV2_CACHE:-$HOME/.cache/beitv2}
BEITV2_BUILD_ENV=$BEITV2_CACHE/build-env
BEITV2_REF_ENV=$BEITV2_CACHE/ref-env
BEITV2_BUILD_DIR=${BEITV2_BUILD_DIR:-$BEITV2_ROOT/build}
export CCACHE_DIR=${CCACHE_DIR:-$BEITV2_CACHE/ccache}
export BEITV2_REF_PYTHON=$BEITV2_REF_ENV/bin/python
export BEITV2_BUILD_PYTHON=$BEITV2_BUILD_ENV/bin/python
# Use the system cmake/ninja: pyenv's shims prepend their own Python to PATH, hiding the build env's torch.
BEITV2_CMAKE=$( [ -x /usr/bin/cmake ] && echo /usr/bin/cmake || command -v cmake )
