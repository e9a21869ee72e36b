#!/usr/bin/env bash
# Installs what a Debian 12 machine lacks for netwatcher, then configures and
# builds it into build/. Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake pkg-config clang llvm
  libbpf-dev bpftool libelf-dev zlib1g-dev
  libboost-dev libboost-program-options-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev
  libgtest-dev
  # the http plugin's HTTP/2 header blocks (HPACK)
  libnghttp2-dev
  # the OCI config.json of container runtimes (pod and container names)
  nlohmann-json3-dev
  # the prometheus sink's endpoint: HTTP(S) server, TLS, bcrypt (crypt_r)
  libmicrohttpd-dev libgnutls28-dev libcrypt-dev
  # used by the tests and bench/: namespaces, traffic, firewall rules
  iproute2 iperf3 nftables python3 procps iputils-ping curl
  # the dns tests and bench: a resolver, dig, and a load generator
  dnsmasq-base bind9-dnsutils dnsperf
  # the redis tests and bench: the server, redis-cli and redis-benchmark
  redis-server redis-tools
  # the mysql tests and bench: MariaDB server and client, sysbench
  mariadb-server mariadb-client sysbench
  # the TLS tests and bench: an HTTPS server and a load generator
  nginx wrk
  # the HTTP/2 and gRPC tests and bench: h2c server, clients, h2load, grpcio,
  # and hyper-h2 for a server that takes the HTTP/1.1 Upgrade: h2c
  nghttp2-server nghttp2-client python3-grpcio python3-h2
  # the endpoint tests: certificates, and the real Prometheus server scraping
  openssl prometheus
  # libFuzzer for the parser fuzz targets
  libclang-rt-14-dev
  # the packaging tests: cpack's dependency list, and systemd-analyze verify
  dpkg-dev systemd
  # the Kubernetes manifest test reads YAML
  python3-yaml
  # the stdout sink's top view is tested on a real terminal
  tmux
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "netwatcher setup: missing packages: ${missing[*]}; run as root (sudo) to install them" >&2
    exit 1
  fi
  echo "netwatcher setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build_type=${NETWATCHER_BUILD_TYPE:-RelWithDebInfo}
# Warnings fail the build here and in CI (the CMake default is off, for others).
cmake -S . -B build -DCMAKE_BUILD_TYPE="$build_type" -DNETWATCHER_WERROR=ON \
  ${NETWATCHER_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"
