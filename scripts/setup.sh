#!/usr/bin/env bash
# Everything rlscale needs on a fresh Debian 12 machine with Python 3.11: the Debian prometheus
# package (for the sandbox and the metrics-path tests), a virtualenv in .venv, the CPU build of
# torch (pinned first: an unpinned torch pulls a multi-GB CUDA build), then the package.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "setup: prometheus not found and not root; install Debian's 'prometheus' package for the sandbox" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, stable_baselines3, gymnasium, rlscale; print('setup: ok, torch', torch.__version__)"
