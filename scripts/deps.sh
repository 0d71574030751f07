#!/usr/bin/env bash
# The one list of Debian 12 packages hotserve needs, in groups, and their installer (needs root; no-op when present).
#   bash scripts/deps.sh                   install every group (README, CI)
#   bash scripts/deps.sh build             install only these groups, without recommends (deploy/Dockerfile)
#   bash scripts/deps.sh --list build      print a group's packages, one per line (deploy/check_packages.py)
# Groups:
#   build    what CMake needs to configure and build hotserve (the Dockerfile's build stage)
#   runtime  the shared libraries the hotserve binary links (the Dockerfile's runtime stage); checked against
#            the binary's NEEDED entries by deploy/check_packages.py (ctest deploy.packages, .ci/run)
#   test     the test suite, sanitizers, benchmarks and the local fleet (deploy/fleet/run.sh)
set -euo pipefail
BUILD=(build-essential cmake pkg-config libdnnl-dev libmicrohttpd-dev libjansson-dev libyajl-dev libssl-dev
       libcmocka-dev ocl-icd-opencl-dev libgrpc-dev libprotobuf-c-dev protobuf-c-compiler zlib1g-dev)  # ocl-icd-opencl-dev: dnnl-config.cmake requires OpenCL
RUNTIME=(libdnnl2 libgomp1 libmicrohttpd12 libjansson4 libyajl2 libssl3 libgrpc29 libprotobuf-c1 zlib1g)
TEST=(clang libclang-rt-14-dev python3 python3-numpy python3-onnx python3-torch python3-torchvision python3-opencv
      python3-yaml python3-grpcio python3-grpc-tools libonnx-testdata prometheus haproxy wrk curl
      python3-pil fonts-dejavu-core)  # python3-pil, fonts-dejavu-core: tools/int8_trained.py renders text images

group() {
  case "$1" in
    build) printf '%s\n' "${BUILD[@]}" ;;
    runtime) printf '%s\n' "${RUNTIME[@]}" ;;
    test) printf '%s\n' "${TEST[@]}" ;;
    *) echo "scripts/deps.sh: unknown group '$1' (build, runtime or test)" >&2; return 2 ;;
  esac
}

list=false
if [ "${1:-}" = "--list" ]; then
  list=true
  shift
fi
groups=("$@")
apt_opts=(-y --no-install-recommends) # named groups (the image): only what the list says
if [ ${#groups[@]} -eq 0 ]; then
  groups=(build runtime test)
  apt_opts=(-y)
fi
PKGS=()
for g in "${groups[@]}"; do
  group "$g" >/dev/null || exit 2
  mapfile -t more < <(group "$g")
  PKGS+=("${more[@]}")
done
if $list; then
  printf '%s\n' "${PKGS[@]}"
  exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  # Root only for the install itself: as root (containers, CI) directly, else through sudo when there is one.
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      echo "hotserve: installing missing packages with sudo: ${missing[*]}" >&2
      as_root=(sudo)
    else
      echo "hotserve: missing packages: ${missing[*]} (run as root, or apt-get install them)" >&2
      exit 1
    fi
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" "${missing[@]}"
fi
