#!/usr/bin/env bash
# Here (with network), before a GPU run: fill .whl/ with what bench/modelserver/gpu.sh installs there.
#   bash bench/modelserver/gpu_wheels.sh [--onnxruntime-gpu]
# Python 3.12 manylinux wheels (the GPU image's python3), versions from constraints.txt, for the
# packages the model server needs that the image lacks (or has in another version), plus
# .whl/tritonserver.tar.xz: tritonserver and its Python backend (3.12 stub) cut from the
# nvidia-pytriton wheel (the whole wheel, 55 MB, would not fit the 64 MiB a call may carry).
# onnxruntime-gpu is ~300 MB, over that limit: without it the GPU bench runs TorchScript on CUDA.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || grep -qx '/.whl/' .gitignore || echo /.whl/ >> .git/info/exclude
pin() { grep -i "^$1==" constraints.txt | head -1; }
pkgs=(grpcio grpcio-health-checking protobuf fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv
      annotated-types typing-inspection typing_extensions annotated-doc uvicorn h11 click anyio)
[ "${1:-}" = "--onnxruntime-gpu" ] && pkgs+=(onnxruntime-gpu)
specs=()
for p in "${pkgs[@]}"; do
  s=$(pin "$p"); specs+=("${s:-$p}")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
  -d .whl "${specs[@]}"

bash infra/tools/fetch.sh >/dev/null
T=.tools/triton
tar -cJf .whl/tritonserver.tar.xz -C "$T" \
  pytriton/tritonserver/bin/tritonserver pytriton/tritonserver/backends/python \
  pytriton/tritonserver/python_backend_stubs/3.12 \
  $(cd "$T" && ls nvidia_pytriton.libs/* | grep -v libpython3)
du -sh .whl; ls -la .whl
