#!/usr/bin/env bash
# The model-server bench on a machine with an NVIDIA GPU, offline, as ONE script (run from the repo root):
#
#   bash bench/modelserver/gpu.sh [--quick]
#
# Installs the wheels carried in .whl/ into /tmp/site (nothing is fetched), puts tritonserver in
# place (from the nvidia-pytriton wheel, or from .whl/tritonserver.tar.xz that
# bench/modelserver/gpu_wheels.sh packs), then runs `python -m bench.modelserver.loadgen_bench --device cuda`:
# Flywheel and Triton on CUDA (onnxruntime's CUDA provider where onnxruntime-gpu is in .whl/,
# else TorchScript on CUDA for both), TorchServe where Java exists, and the in-process ceiling.
# Prints the table; writes bench/results/modelserver-gpu.json (and a copy under $OUT if set).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
SITE=/tmp/site
TOOLS=/tmp/flywheel-tools
export PYTHONUNBUFFERED=1

shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
    || { echo "gpu.sh: installing .whl/*.whl failed"; exit 1; }
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$TOOLS/triton"
if [ -f .whl/tritonserver.tar.xz ]; then
  tar -xJf .whl/tritonserver.tar.xz -C "$TOOLS/triton"
elif [ -d "$SITE/pytriton/tritonserver" ]; then
  ln -sfn "$SITE/pytriton" "$TOOLS/triton/pytriton"
  ln -sfn "$SITE/nvidia_pytriton.libs" "$TOOLS/triton/nvidia_pytriton.libs"
else
  echo "gpu.sh: no tritonserver in .whl/ (nvidia-pytriton wheel or tritonserver.tar.xz): Triton is skipped"
fi
chmod +x "$TOOLS"/triton/pytriton/tritonserver/bin/tritonserver "$TOOLS"/triton/pytriton/tritonserver/python_backend_stubs/*/triton_python_backend_stub 2>/dev/null
export FLYWHEEL_TOOLS="$TOOLS"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY'
import sys, sysconfig
import onnxruntime, torch
print("python", sys.version.split()[0], "libdir", sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY"))
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
PY

out=bench/results/modelserver-gpu.json
"$PY" -m bench.modelserver.loadgen_bench --device cuda --out "$out" --workdir /tmp/bench-modelserver "$@"
rc=$?
if [ -n "${OUT:-}" ]; then
  cp "$out" "$OUT/" 2>/dev/null
  tar -czf "$OUT/logs.tgz" -C /tmp/bench-modelserver logs 2>/dev/null
fi
exit $rc
