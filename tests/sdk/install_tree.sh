#!/usr/bin/env bash
# sdk.install_tree: `cmake --install` into a temporary prefix lays out an FHS
# tree, examples/hello builds against that prefix alone (find_package through
# CMAKE_PREFIX_PATH, no source or build tree) and installs itself into it, and
# the installed host, run from a folder without a netwatcher.toml, finds its
# installed config and both the installed plugins and the example's:
# --list-plugins, --check and a short capture with real execs.
#   install_tree.sh <source dir> <build dir> <cc> <c++>
# Fails (never skips) on any step; --check and the capture need root and CI
# runs as root, so they are only left out for a non-root run outside CI.
set -euo pipefail
source_dir=$1 build_dir=$2 cc=$3 cxx=$4

work=$(mktemp -d /tmp/nw-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "sdk.install_tree: $*" >&2
  exit 1
}
case $work/ in "$source_dir"/* | "$build_dir"/*) fail "$work is inside the tree" ;; esac
prefix=$work/prefix

if ! cmake --install "$build_dir" --prefix "$prefix" >"$work/install.log" 2>&1; then
  cat "$work/install.log"
  fail "cmake --install failed"
fi
for path in bin/netwatcher etc/netwatcher/netwatcher.toml lib/systemd/system/netwatcher.service \
  lib/netwatcher/netwatcher-tcp.so lib/netwatcher/netwatcher-l7.so \
  lib/netwatcher/netwatcher-sink-stdout.so lib/netwatcher/netwatcher-sink-prometheus.so \
  include/netwatcher/plugin.hpp include/netwatcher/bpf/common.bpf.h \
  lib/cmake/netwatcher/netwatcher-config.cmake lib/cmake/netwatcher/NetwatcherPlugin.cmake \
  lib/libnetwatcher_sdk.a lib/libnetwatcher_sdk_kernel.a \
  share/doc/netwatcher/README.md share/doc/netwatcher/docs/writing-a-plugin.md \
  share/doc/netwatcher/plugins/tcp.md; do
  [[ -f $prefix/$path ]] || fail "nothing installed at $path"
done
grep -qxF "ExecStart=$prefix/bin/netwatcher --config $prefix/etc/netwatcher/netwatcher.toml" \
  "$prefix/lib/systemd/system/netwatcher.service" || fail "the unit does not follow the prefix"
# Test fixtures and the bench's synthetic plugin are not for users.
if ls "$prefix/lib/netwatcher" | grep -Eqv '^netwatcher-[a-z0-9_]+\.so$|^netwatcher-sink-[a-z0-9_]+\.so$'; then
  ls "$prefix/lib/netwatcher"
  fail "lib/netwatcher holds more than plugins and sinks"
fi
[[ ! -e $prefix/lib/netwatcher/netwatcher-synthetic.so ]] || fail "the bench plugin was installed"
# The package must not lean on the tree it was built from.
if grep -rlF -e "$source_dir" -e "$build_dir" "$prefix/lib/cmake" "$prefix/include"; then
  fail "the installed SDK names the source or build tree"
fi

cp -r "$source_dir/examples/hello" "$work/hello"
if ! cmake -S "$work/hello" -B "$work/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  >"$work/configure.log" 2>&1; then
  cat "$work/configure.log"
  fail "configuring the example against $prefix failed"
fi
grep -rqF -e "$source_dir/core" "$work/build/CMakeCache.txt" &&
  fail "the example's build found the source tree's SDK"
if ! cmake --build "$work/build" -j2 >"$work/build.log" 2>&1 ||
  ! cmake --install "$work/build" >>"$work/build.log" 2>&1; then
  cat "$work/build.log"
  fail "building or installing the example failed"
fi
[[ -f $prefix/lib/netwatcher/netwatcher-hello.so ]] || fail "the example did not install itself"

# From a folder without netwatcher.toml: the installed config and plugins.
mkdir "$work/elsewhere"
cd "$work/elsewhere"
run() {
  local out=$work/out.txt
  if ! "$prefix/bin/netwatcher" "$@" >"$out" 2>&1; then
    cat "$out" >&2
    fail "netwatcher $* failed"
  fi
  cat "$out"
}
listing=$(run --list-plugins)
for expected in "plugin tcp " "$prefix/lib/netwatcher/netwatcher-tcp.so)" "plugin hello 1.0.0  (probe" \
  "$prefix/lib/netwatcher/netwatcher-hello.so)" "sink prometheus " \
  "config: $prefix/etc/netwatcher/netwatcher.toml"; do
  grep -qF -- "$expected" <<<"$listing" || {
    echo "$listing"
    fail "--list-plugins lacks '$expected'"
  }
done

if ((EUID != 0)); then
  [[ ${CI:-} != true ]] || fail "CI runs the tests as root"
  echo "not root: --check and the capture left out"
  exit 0
fi
# Like the integration tests: one run of netwatcher at a time on the machine.
exec 9>/run/netwatcher-integration.lock
flock 9

# The installed default config plus the example, and --check loads them all.
cp "$prefix/etc/netwatcher/netwatcher.toml" "$work/with-hello.toml"
printf '\n[plugins.hello]\nenabled = true\n' >>"$work/with-hello.toml"
check=$(run --config "$work/with-hello.toml" --check)
for expected in "plugin hello: ok" "plugin tcp: ok" "plugin drop: ok"; do
  grep -qF "$expected" <<<"$check" || {
    echo "$check"
    fail "--check lacks '$expected'"
  }
done

# A short capture: 25 execs while it runs, then the count it reports.
cat >"$work/capture.toml" <<TOML
[netwatcher]
snapshot_interval = 0.5

[plugins.tcp]
enabled = false

[plugins.drop]
enabled = false

[plugins.hello]
enabled = true

[[sinks]]
type = "json"
path = "$work/events.jsonl"
TOML
"$prefix/bin/netwatcher" --config "$work/capture.toml" --duration 4 >"$work/capture.log" 2>&1 &
capture=$!
for _ in $(seq 100); do
  grep -q "running" "$work/capture.log" && break
  kill -0 $capture 2>/dev/null || break
  sleep 0.1
done
grep -q "running" "$work/capture.log" || {
  cat "$work/capture.log"
  fail "the installed host did not start"
}
before=$(grep -c '"hello_execs"' "$work/events.jsonl" || true)
for _ in $(seq 25); do /bin/true; done
wait $capture || {
  cat "$work/capture.log"
  fail "the capture exited with $?"
}
last=$(grep '"hello_execs"' "$work/events.jsonl" | tail -1)
execs=$(sed -E 's/.*"execs":([0-9]+).*/\1/' <<<"$last")
[[ $execs =~ ^[0-9]+$ ]] || fail "no hello_execs count in the capture: $last"
((execs >= 25)) || fail "the capture counted $execs execs of at least 25 (events before: $before)"
echo "sdk.install_tree: installed tree at $prefix worked; the capture counted $execs execs"
