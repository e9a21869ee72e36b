#!/usr/bin/env bash
# Set up, build and run netwatcher with the default netwatcher.toml.
# Extra arguments go to netwatcher, e.g. `scripts/run.sh -x -r --duration 30`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec build/netwatcher --config netwatcher.toml "$@"
