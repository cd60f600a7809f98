#!/usr/bin/env bash
# Versity S3 Gateway (Apache-2.0), the real S3-compatible server the tests run `s3://` against, built
# from the Go module proxy into .tools/s3/versitygw. Idempotent: does nothing when that version is there.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION="${VERSITYGW_VERSION:-v1.8.0}"
DEST="$ROOT/.tools/s3"
BIN="$DEST/versitygw"
STAMP="$DEST/versitygw.version"
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "versitygw $VERSION: already built at $BIN"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "error: Go is not on PATH; it is needed to build versitygw $VERSION (https://go.dev/dl)" >&2
  exit 1
fi
mkdir -p "$DEST"
# A private module cache and build cache, removed afterwards: nothing left in ~/go or ~/.cache.
TMP="$DEST/build-tmp"
rm -rf "$TMP"
mkdir -p "$TMP"
cleanup() { chmod -R u+w "$TMP" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
echo "building versitygw $VERSION with $(go version | cut -d' ' -f3) into $BIN (from the Go module proxy)"
start=$(date +%s)
GOBIN="$DEST" GOPATH="$TMP/gopath" GOCACHE="$TMP/gocache" GOFLAGS=-modcacherw CGO_ENABLED=0 \
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSION"
echo "$VERSION" >"$STAMP"
echo "built $BIN in $(( $(date +%s) - start )) s"
