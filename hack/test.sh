#!/usr/bin/env bash
# Set up, then run every check: lint, types and the whole test suite (unit + end-to-end on a real
# local control plane). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
