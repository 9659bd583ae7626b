#!/usr/bin/env bash
# Idempotent machine set-up for aar: Debian packages, the project-local Python
# environment with libtorch (pip's torch, the build tch expects), and test extras.
#   scripts/setup.sh           what building and running aar needs
#   scripts/setup.sh --test    also what the test suite needs (independent references, servers,
#                              headless Chromium and chromedriver for the browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

log() { printf '[setup] %s\n' "$*" >&2; }

# Debian packages, installed only when missing.
apt_packages=(build-essential pkg-config python3-venv bubblewrap strace fonts-dejavu-core)
if (( want_test )); then
  # chromium-driver: chromedriver, for the headless-Chromium UI tests (tests/ui).
  apt_packages+=(postgresql chromium chromium-driver)
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# Project-local virtual environment with libtorch, numpy and torch; sandboxes run its
# python3 as their own unprivileged uids, so its base interpreter must be one they can
# reach: the system's /usr/bin/python3 (every sandbox mounts /usr) unless PYTHON says
# otherwise. A .venv built on another base (e.g. pyenv's under a private /root) is rebuilt.
python=${PYTHON:-python3}
if [[ -z "${PYTHON:-}" && -x /usr/bin/python3 ]]; then python=/usr/bin/python3; fi
want_home=$(dirname "$("$python" -c 'import sys; print(sys.executable)')")
if [[ -f .venv/pyvenv.cfg ]] && ! grep -qx "home = $want_home" .venv/pyvenv.cfg; then
  log "rebuilding .venv on $python (it was built on $(sed -n 's/^home = //p' .venv/pyvenv.cfg))"
  rm -rf .venv
fi
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv on $python"
  "$python" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION into .venv (about 4.6 GB, once)"
  .venv/bin/pip install --disable-pip-version-check --progress-bar on "torch==$TORCH_VERSION" numpy
fi
# A stable path for the build (.cargo/config.toml points LIBTORCH here).
torch_dir=$(.venv/bin/python -c "import torch, pathlib; print(pathlib.Path(torch.__file__).parent)")
ln -sfn "$torch_dir" .venv/libtorch

if (( want_test )); then
  test_requirements=scripts/requirements-test.txt
  stamp=.venv/.requirements-test.sha256
  if [[ -s $test_requirements ]] && ! sha256sum -c --status "$stamp" 2>/dev/null; then
    log "installing test references from $test_requirements"
    .venv/bin/pip install --disable-pip-version-check -r "$test_requirements"
    sha256sum "$test_requirements" > "$stamp"
  fi
fi
log "ready"
