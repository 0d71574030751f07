#!/usr/bin/env bash
# Installs the Debian packages hotserve builds, tests and benchmarks with (needs root; no-op when present).
set -euo pipefail
PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libdnnl-dev libmicrohttpd-dev libjansson-dev libyajl-dev libssl-dev libcmocka-dev
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler python3-grpcio python3-grpc-tools
      python3 python3-numpy python3-onnx python3-torch python3-torchvision python3-opencv
      libonnx-testdata prometheus wrk curl)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "hotserve: missing packages: ${missing[*]} (run as root, or apt-get install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y "${missing[@]}"
fi
