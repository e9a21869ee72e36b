#!/usr/bin/env bash
# The build matrix CI runs after scripts/test.sh has passed (it needs the
# packages scripts/setup.sh installs). Each tree is built with -Werror from
# this checkout, without bench/ and the fuzz target (scripts/test.sh's tree
# builds both), and runs its tests:
#   build-release  gcc, Release                    unit tests
#   build-clang    clang (CC=clang CXX=clang++)    unit tests
#   build-tsan     gcc, RelWithDebInfo, -fsanitize=thread
#                  unit tests and the integration tests of start-up and of
#                  the agent's own metrics (its threads meet there)
# One line per stage says whether it passed and its wall time. Stages can be
# picked by name: scripts/ci-matrix.sh release tsan
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc)
common=(-DNETWATCHER_WERROR=ON -DNETWATCHER_BUILD_BENCH=OFF -DNETWATCHER_BUILD_FUZZ=OFF)

# configure_and_build <dir> <cmake args...>: the build log goes to <dir>/build.log
# and only its end is shown, on failure.
configure_and_build() {
  local dir=$1
  shift
  mkdir -p "$dir"
  if ! cmake -S . -B "$dir" "$@" "${common[@]}" >"$dir/configure.log" 2>&1; then
    tail -n 50 "$dir/configure.log"
    return 1
  fi
  if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
    grep -E -A6 'error|warning:' "$dir/build.log" | head -n 80 || true
    echo "--- end of $dir/build.log:"
    tail -n 30 "$dir/build.log"
    return 1
  fi
}

# run_tests <dir> <regex>: fails when no unit test matched, so a renamed
# prefix cannot turn a stage into one that tests nothing; other parts of the
# regex (integration.Startup) may match nothing.
run_tests() {
  local dir=$1 regex=$2
  local units
  units=$(ctest --test-dir "$dir" -N -R '^unit\.' | sed -n 's/^Total Tests: //p')
  if [[ -z $units || $units -eq 0 ]]; then
    echo "no unit tests found in $dir"
    return 1
  fi
  ctest --test-dir "$dir" -R "$regex" --output-on-failure --timeout 600
}

stage_release() {
  CC=gcc CXX=g++ configure_and_build build-release -DCMAKE_BUILD_TYPE=Release &&
    run_tests build-release '^unit\.'
}

stage_clang() {
  CC=clang CXX=clang++ configure_and_build build-clang -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    run_tests build-clang '^unit\.'
}

stage_tsan() {
  CC=gcc CXX=g++ configure_and_build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DNETWATCHER_SANITIZE=thread &&
    TSAN_OPTIONS="halt_on_error=1 ${TSAN_OPTIONS:-}" \
      run_tests build-tsan '^unit\.|^integration\.(Startup|SelfMetrics)'
}

stages=("$@")
((${#stages[@]})) || stages=(release clang tsan)
started=$SECONDS
for stage in "${stages[@]}"; do
  if ! declare -F "stage_$stage" >/dev/null; then
    echo "ci-matrix: unknown stage '$stage' (release, clang, tsan)" >&2
    exit 2
  fi
  echo "ci-matrix: $stage: starting"
  t0=$SECONDS
  if "stage_$stage"; then
    echo "ci-matrix: $stage: passed in $((SECONDS - t0)) s"
  else
    echo "ci-matrix: $stage: FAILED after $((SECONDS - t0)) s"
    exit 1
  fi
done
echo "ci-matrix: ${stages[*]}: all passed in $((SECONDS - started)) s"
