#!/usr/bin/env bash
# Set up, build and run the whole test suite: unit tests (no root) and
# integration tests (root: real kernel, network namespaces, real traffic).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure --timeout 600 "$@"
