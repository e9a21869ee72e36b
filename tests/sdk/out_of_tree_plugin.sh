#!/usr/bin/env bash
# sdk.out_of_tree_plugin: a plugin folder outside the tree builds through the
# same CMake helper as the tree's own (find_package(netwatcher) against the
# build tree) and the host loads it.
#   out_of_tree_plugin.sh <source dir> <build dir> <netwatcher binary> <cc> <c++>
# Fails (never skips) on any step; the --check step needs root and CI runs
# as root, so it is only left out for a non-root run outside CI.
set -euo pipefail
source_dir=$1 build_dir=$2 binary=$3 cc=$4 cxx=$5

work=$(mktemp -d /tmp/nw-out-of-tree.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "sdk.out_of_tree_plugin: $*" >&2
  exit 1
}
case $work/ in "$source_dir"/* | "$build_dir"/*) fail "$work is inside the tree" ;; esac

cp -r "$source_dir/examples/hello" "$work/hello"
[[ ! -e $work/hello/hello.h ]] || fail "the example must do without hello.h"
if ! cmake -S "$work/hello" -B "$work/build" -Dnetwatcher_DIR="$build_dir" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" >"$work/configure.log" 2>&1; then
  cat "$work/configure.log"
  fail "configure failed"
fi
if ! cmake --build "$work/build" -j2 >"$work/build.log" 2>&1; then
  cat "$work/build.log"
  fail "build failed"
fi
plugin=$work/build/plugins/netwatcher-hello.so
[[ -f $plugin ]] || fail "no $plugin"

cat >"$work/netwatcher.toml" <<TOML
[netwatcher]
plugin_dirs = ["$work/build/plugins"]

[plugins.hello]
enabled = true
TOML
run() {
  local out=$work/out.txt
  if ! "$binary" --config "$work/netwatcher.toml" "$@" >"$out" 2>&1; then
    cat "$out" >&2
    fail "netwatcher $* failed"
  fi
  cat "$out"
}
listing=$(run --list-plugins)
echo "$listing"
for expected in "plugin hello 1.0.0  (probe, ABI " "$plugin)" \
  "  programs executed (an out-of-tree example)" "    exec: count_exec" \
  "    hello_execs: programs executed since the plugin started" \
  "      execs u64 - execve() calls that succeeded"; do
  grep -qF -- "$expected" <<<"$listing" || fail "--list-plugins lacks '$expected'"
done

if ((EUID != 0)); then
  [[ ${CI:-} != true ]] || fail "CI runs the tests as root"
  echo "not root: --check (loading the BPF program) left out"
  exit 0
fi
check=$(run --check)
echo "$check"
grep -qF "plugin hello: ok" <<<"$check" || fail "--check did not load the plugin"
