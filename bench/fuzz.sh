#!/usr/bin/env bash
# Every parser of untrusted bytes under libFuzzer (ASan + UBSan), SECONDS each.
#
# Targets are found, not listed: every executable fuzz_* in the build tree
# (the FUZZ arguments of the plugins' CMake calls build them). Every
# *_fuzz.cpp source in the tree must have its binary (fuzz_<stem>), so a new
# parser whose target was not built is an error, not a silent gap.
#
# Each target runs in a scratch corpus seeded from its checked-in seeds
# (plugins/*/tests/fuzz/corpus/<name>, or <name> up to its first "_", e.g.
# http for http_parser; tests/fuzz/corpus/<name> likewise), which stay untouched.
# A crash does not end a target's time: the crash file is kept and fuzzing
# restarts from the corpus until SECONDS are used (at most 10 crashes).
#
# Prints per target: executions, exec/s, crashes (with the crash files),
# final coverage (edges, features, corpus) and seconds used. "crashes"
# counts runs that ended in a crash, a leak, a timeout or running out of
# memory; the distinct files are listed under it. Exit status 1 when anything
# crashed, otherwise 2 when a target is missing.
#
# Usage: bench/fuzz.sh SECONDS
#   BUILD=dir           build tree (default build)
#   MAX_RUNS=N          also stop a target after N executions (time to N is printed)
#   ARTIFACTS=dir       where crash files go (default $BUILD/fuzz-artifacts/<target>)
#   KEEP_CORPUS=1       keep the scratch corpora (their paths are printed)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: bench/fuzz.sh SECONDS}
build=${BUILD:-build}
max_runs=${MAX_RUNS:-0}
max_crashes=10

[[ -d $build ]] || { echo "no build tree '$build': run scripts/setup.sh first" >&2; exit 2; }
mapfile -t targets < <(find "$build" -type f -executable -name 'fuzz_*' | sort)
mapfile -t sources < <(find tests plugins sinks core -name '*_fuzz.cpp' 2>/dev/null | sort)
status=0
for src in "${sources[@]}"; do
  stem=$(basename "$src" _fuzz.cpp)
  found=0
  for t in "${targets[@]}"; do [[ $(basename "$t") == "fuzz_$stem" ]] && found=1; done
  if ((!found)); then
    echo "$src has no built target fuzz_$stem under $build (clang++ missing?)" >&2
    status=2
  fi
done
((${#targets[@]})) || { echo "no fuzz_* targets under $build" >&2; exit 2; }

scratch=$(mktemp -d /tmp/nw-fuzz.XXXXXX)
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  if [[ ${KEEP_CORPUS:-0} == 1 ]]; then echo "scratch corpora kept in $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

# Checked-in seeds of a target name (without fuzz_), or nothing.
seeds_of() {
  local name=$1 dir
  for dir in plugins/*/tests/fuzz/corpus sinks/*/tests/fuzz/corpus tests/fuzz/corpus; do
    for candidate in "$dir/$name" "$dir/${name%%_*}"; do
      [[ -d $candidate ]] && { echo "$candidate"; return 0; }
    done
  done
  return 0
}

summary=()
for target in "${targets[@]}"; do
  name=$(basename "$target")
  name=${name#fuzz_}
  corpus=$scratch/$name
  artifacts=${ARTIFACTS:-$build/fuzz-artifacts}/$name
  mkdir -p "$corpus" "$artifacts"
  seeds=$(seeds_of "$name")
  if [[ -n $seeds ]]; then cp -r "$seeds"/. "$corpus"/; else echo "$name: no seeds, starting empty" >&2; fi
  before=$(find "$artifacts" -type f | sort)
  log=$scratch/$name.log
  runs=0 crashes=0 cov=- ft=- corp=- t0=$(date +%s.%N) elapsed=0
  while :; do
    left=$(awk -v s="$seconds" -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN {l = s - (now - t0); print (l < 1 ? 0 : int(l + 0.5))}')
    ((left > 0)) || break
    args=(-max_total_time="$left" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1
      -artifact_prefix="$artifacts/")
    ((max_runs > 0)) && args+=(-runs=$((max_runs - runs)))
    echo "$name: fuzzing for ${left} s (seeds: ${seeds:-none})" >&2
    rc=0
    "$target" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?
    n=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
    if [[ -z $n ]]; then
      # A crash ends the run before the final stats: the last status line
      # carries the count.
      n=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
    fi
    runs=$((runs + ${n:-0}))
    if line=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1); then
      cov=$(sed -E 's/.* cov: ([0-9]+).*/\1/' <<<"$line")
      ft=$(sed -E 's/.* ft: ([0-9]+).*/\1/' <<<"$line")
      corp=$(sed -E 's/.* corp: ([^ ]+).*/\1/' <<<"$line")
    fi
    if ((rc != 0)); then
      crashes=$((crashes + 1))
      grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error:|artifact_prefix|Test unit written)' "$log" |
        head -8 | sed "s/^/  $name: /" >&2
      ((crashes < max_crashes)) || break
    fi
    ((max_runs > 0 && runs >= max_runs)) && break
    ((rc != 0)) || break
  done
  elapsed=$(awk -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN {printf "%.0f", now - t0}')
  new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | grep -E '/(crash|leak|timeout|oom)-' || true)
  files=$(echo "$new" | grep -c . || true)
  ((files > crashes)) && crashes=$files
  ((crashes == 0)) || status=1
  rate=$(awk -v r="$runs" -v e="$elapsed" 'BEGIN {printf "%d", (e > 0 ? r / e : r)}')
  summary+=("$(printf '%-16s %12d %8d %8d %8s %8s %10s %8s' "$name" "$runs" "$rate" "$crashes" \
    "$cov" "$ft" "$corp" "$elapsed")")
  while read -r f; do [[ -n $f ]] && summary+=("    crash file: $f"); done <<<"$new"
  [[ ${KEEP_CORPUS:-0} == 1 ]] && summary+=("    corpus: $corpus")
done

printf '%-16s %12s %8s %8s %8s %8s %10s %8s\n' target executions exec/s crashes cov ft corpus seconds
printf '%s\n' "${summary[@]}"
exit "$status"
