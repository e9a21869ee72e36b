#!/usr/bin/env bash
# sdk.debian_package: CPack builds the netwatcher and netwatcher-dev packages
# from this build tree; their control data (dependencies from
# dpkg-shlibdeps, the conffile) and contents are what Debian users get, the
# unit passes systemd-analyze verify, and the host unpacked from the package
# (dpkg -x, the machine itself left alone) finds its plugins and loads them.
#   debian_package.sh <build dir>
# Fails (never skips) on any step; --check needs root and CI runs as root, so
# it is only left out for a non-root run outside CI.
set -euo pipefail
build_dir=$1

work=$(mktemp -d /tmp/nw-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "sdk.debian_package: $*" >&2
  exit 1
}

if ! cpack --config "$build_dir/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1; then
  cat "$work/cpack.log"
  fail "cpack failed"
fi
arch=$(dpkg --print-architecture)
runtime=$(ls "$work/out"/netwatcher_*_"$arch".deb)
dev=$(ls "$work/out"/netwatcher-dev_*_"$arch".deb)
version=$(dpkg-deb -f "$runtime" Version)

depends=$(dpkg-deb -f "$runtime" Depends)
depended=$(sed -e 's/ ([^)]*)//g' -e 's/, /\n/g' <<<"$depends")
for needed in libbpf1 libboost-program-options1.74.0 libtomlplusplus3 libspdlog1.10-fmt9 \
  libmicrohttpd12 libnghttp2-14 libstdc++6; do
  grep -qxF "$needed" <<<"$depended" || fail "netwatcher does not depend on $needed: $depends"
done
dev_depends=$(dpkg-deb -f "$dev" Depends)
for needed in "netwatcher (= $version)" libbpf-dev clang bpftool; do
  grep -qF "$needed" <<<"$dev_depends" || fail "netwatcher-dev does not depend on $needed: $dev_depends"
done

dpkg-deb -e "$runtime" "$work/control"
grep -qxF /etc/netwatcher/netwatcher.toml "$work/control/conffiles" ||
  fail "the config is not a conffile"

contents() { dpkg-deb -c "$1" | awk '{print $6}'; }
runtime_files=$(contents "$runtime")
for path in ./usr/bin/netwatcher ./etc/netwatcher/netwatcher.toml \
  ./usr/lib/netwatcher/netwatcher-tcp.so ./usr/lib/netwatcher/netwatcher-sink-prometheus.so \
  ./usr/lib/systemd/system/netwatcher.service ./usr/share/doc/netwatcher/README.md; do
  grep -qxF "$path" <<<"$runtime_files" || fail "netwatcher lacks $path"
done
grep -q '^./usr/include/' <<<"$runtime_files" && fail "the SDK headers are in netwatcher, not -dev"
dev_files=$(contents "$dev")
for path in ./usr/include/netwatcher/plugin.hpp ./usr/include/netwatcher/bpf/common.bpf.h \
  ./usr/lib/cmake/netwatcher/netwatcher-config.cmake ./usr/lib/libnetwatcher_sdk.a; do
  grep -qxF "$path" <<<"$dev_files" || fail "netwatcher-dev lacks $path"
done
grep -q '^./usr/bin/' <<<"$dev_files" && fail "netwatcher-dev carries programs"

root=$work/root
dpkg -x "$runtime" "$root"
dpkg -x "$dev" "$root"
unit=$root/usr/lib/systemd/system/netwatcher.service
grep -qxF "ExecStart=/usr/bin/netwatcher --config /etc/netwatcher/netwatcher.toml" "$unit" ||
  fail "the unit does not run the packaged binary with the packaged config: $(grep ExecStart "$unit")"
# Verified where it was unpacked: the same unit with the unpacked paths.
mkdir "$work/units"
sed -e "s|/usr/bin/netwatcher|$root/usr/bin/netwatcher|" -e "s|/etc/netwatcher/|$root/etc/netwatcher/|" \
  "$unit" >"$work/units/netwatcher.service"
if ! systemd-analyze verify "$work/units/netwatcher.service" >"$work/verify.log" 2>&1; then
  cat "$work/verify.log"
  fail "systemd-analyze verify refused the unit"
fi

binary=$root/usr/bin/netwatcher
listing=$("$binary" --config "$root/etc/netwatcher/netwatcher.toml" --list-plugins 2>&1) ||
  fail "the packaged netwatcher --list-plugins failed: $listing"
for expected in "$root/usr/lib/netwatcher/netwatcher-tcp.so)" "$root/usr/lib/netwatcher/netwatcher-dns.so)" \
  "$root/usr/lib/netwatcher/netwatcher-sink-json.so)"; do
  grep -qF -- "$expected" <<<"$listing" || {
    echo "$listing"
    fail "--list-plugins lacks '$expected'"
  }
done
if ((EUID != 0)); then
  [[ ${CI:-} != true ]] || fail "CI runs the tests as root"
  echo "not root: --check left out"
  exit 0
fi
exec 9>/run/netwatcher-integration.lock
flock 9
check=$("$binary" --config "$root/etc/netwatcher/netwatcher.toml" --check 2>&1) ||
  fail "the packaged netwatcher --check failed: $check"
for expected in "plugin tcp: ok" "plugin drop: ok"; do
  grep -qF "$expected" <<<"$check" || {
    echo "$check"
    fail "--check lacks '$expected'"
  }
done
echo "sdk.debian_package: $(basename "$runtime") and $(basename "$dev") built and checked"
