#!/usr/bin/env bash
# Set up, then run the main job: a fresh local cluster with the whole stack and its scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
exec .venv/bin/apolloctl demo "$@"
