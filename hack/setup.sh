#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Python venv with the project (editable), the control-plane
# binaries built from the Kubernetes Go modules into the cache, and Prometheus from Debian's package.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "setup: Python >= 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
command -v go >/dev/null || { echo "setup: the Go toolchain (>= 1.24) is required to build the control plane" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
# Builds kube-all (etcd, kube-apiserver, kube-scheduler, kube-controller-manager) and kwok once;
# later runs find them in the cache and return at once.
.venv/bin/apolloctl cluster build >/dev/null
