#!/usr/bin/env bash
# prometheus-adapter (Apache-2.0, kubernetes-sigs/prometheus-adapter; its source is committed under
# src/, see SOURCE.md, because the Go module proxy refuses sigs.k8s.io/prometheus-adapter): the
# custom-metrics API server that answers the model server's HPA from Prometheus. Built with its
# dependencies from the Go module proxy into .tools/prometheus-adapter/adapter. Idempotent: does
# nothing when the binary of this source (hashed) is there.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEST="$ROOT/.tools/prometheus-adapter"
BIN="$DEST/adapter"
STAMP="$DEST/adapter.source"
# Go: the one on PATH, else /usr/local/go, else the toolchain infra/k8s-local/build-binaries.sh fetched.
export PATH="$PATH:/usr/local/go/bin:$(ls -d "$ROOT"/.tools/k8s/go-*/bin 2>/dev/null | tail -1)"
source_hash=$(cd "$HERE/src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$source_hash" ]; then
  echo "prometheus-adapter: already built at $BIN (source $source_hash)"
  exit 0
fi
command -v go >/dev/null || { echo "error: Go is not on PATH; it is needed to build prometheus-adapter (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$DEST"
# Private module and build caches, removed afterwards: nothing left in ~/go or ~/.cache.
TMP="$DEST/build-tmp"
rm -rf "$TMP"
mkdir -p "$TMP"
cleanup() { chmod -R u+w "$TMP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
cp -r "$HERE/src" "$TMP/src"
echo "building prometheus-adapter (source $source_hash) with $(go version | cut -d' ' -f3) into $BIN"
start=$(date +%s)
(cd "$TMP/src" && GOPATH="$TMP/gopath" GOCACHE="$TMP/gocache" GOFLAGS="-mod=mod -modcacherw" CGO_ENABLED=0 \
  go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" ./cmd/adapter)
mv "$BIN.tmp" "$BIN"
echo "$source_hash" >"$STAMP"
echo "built $BIN in $(( $(date +%s) - start )) s"
