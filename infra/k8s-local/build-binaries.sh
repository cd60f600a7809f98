#!/usr/bin/env bash
# Builds the Kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy), CoreDNS and the pause binary from the Go module proxy into .tools/k8s (cold ~9 min on
# 2 cores, most of it compiling; nothing to do when the binaries of these versions are there).
source "$(dirname "$0")/lib.sh"
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

have_kube() {
  for c in "${COMPONENTS[@]}" pause; do [ -x "$BIN/$c" ] || return 1; done
}
have_kube && [ -x "$COREDNS_BIN" ] && exit 0

# A Go toolchain: the one on PATH when it is new enough, else golang.org/toolchain from the module proxy.
go_ok() { command -v go >/dev/null && [ "$(printf '%s\n' "go$GO_MIN" "$(go env GOVERSION)" | sort -V | head -1)" = "go$GO_MIN" ]; }
if ! go_ok; then
  step "Go toolchain $GO_TOOLCHAIN from the Go module proxy"
  tc="$CACHE/go-$GO_TOOLCHAIN"
  if [ ! -x "$tc/bin/go" ]; then
    zip="$CACHE/tmp/toolchain.zip"
    mkdir -p "$CACHE/tmp"
    curl -fsSL -o "$zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-$GO_TOOLCHAIN.linux-amd64.zip"
    rm -rf "$tc.tmp" && mkdir -p "$tc.tmp"
    (cd "$tc.tmp" && python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall('.')" "$zip")
    mv "$tc.tmp/golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.linux-amd64" "$tc"
    chmod +x "$tc"/bin/* "$tc"/pkg/tool/*/*
    rm -rf "$tc.tmp" "$zip"
  fi
  export PATH="$tc/bin:$PATH"
  step_done
fi
# Module and build caches live only for this build (3.5 GB at the peak); the binaries are what is kept.
WORK="$CACHE/build-tmp"
export GOPATH="$WORK/gopath" GOMODCACHE="$WORK/gopath/pkg/mod" GOCACHE="$WORK/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
mkdir -p "$WORK"

if ! have_kube; then
  step "go mod download k8s.io/kubernetes v$K8S_VERSION"
  mod="$WORK/kubernetes"
  rm -rf "$mod" && mkdir -p "$mod"
  gomod=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c "import json,sys; print(json.load(sys.stdin)['GoMod'])")
  src=$(cd "$WORK" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c "import json,sys; print(json.load(sys.stdin)['Dir'])")
  # k8s.io/kubernetes points its staging modules at ./staging/src/...: a dependent module points them
  # at the published k8s.io/<name> v0.<minor>.<patch> of the same release instead.
  staging_version="v0.${K8S_VERSION#*.}"
  {
    echo "module flywheel.local/k8s-build"
    echo "go $GO_MIN"
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/[a-z0-9-]*$#replace \1 => \1 '"$staging_version"'#p' "$gomod"
  } >"$mod/go.mod"
  grep -c '^replace' "$mod/go.mod" | grep -qv '^0$' || die "no staging replaces found in $gomod"
  {
    echo "//go:build tools"
    echo "package tools"
    echo "import ("
    for c in "${COMPONENTS[@]}"; do echo "  _ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$mod/tools.go"
  (cd "$mod" && go mod tidy >/dev/null 2>&1 || go mod tidy)
  step_done

  step "go build ${COMPONENTS[*]} v$K8S_VERSION (the long part: ~7 min on 2 cores)"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
    ldflags+=" -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$BIN.tmp"
  (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp/" $(printf 'k8s.io/kubernetes/cmd/%s ' "${COMPONENTS[@]}"))
  step_done

  step "pause (build/pause/linux/pause.c of the same module, static)"
  gcc -Os -static -o "$BIN.tmp/pause" -DVERSION="v$K8S_VERSION-flywheel" "$src/build/pause/linux/pause.c"
  strip "$BIN.tmp/pause"
  rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
  step_done
fi

if [ ! -x "$COREDNS_BIN" ]; then
  step "CoreDNS v$COREDNS_VERSION with the plugins a kubeadm Corefile uses (~2 min)"
  mod="$WORK/coredns"
  rm -rf "$mod" && mkdir -p "$mod"
  # The plugins, in the order CoreDNS's plugin.cfg runs them.
  plugins=(reload ready health metrics errors log loadbalance cache kubernetes loop forward)
  directives=(reload ready health prometheus errors log loadbalance cache kubernetes loop forward)
  {
    echo "package main"
    echo
    echo "import ("
    echo "  \"github.com/coredns/coredns/core/dnsserver\""
    echo "  \"github.com/coredns/coredns/coremain\""
    for p in "${plugins[@]}"; do echo "  _ \"github.com/coredns/coredns/plugin/$p\""; done
    echo ")"
    echo
    echo "func init() {"
    echo "  dnsserver.Directives = []string{$(printf '"%s", ' "${directives[@]}")}"
    echo "}"
    echo
    echo "func main() { coremain.Run() }"
  } >"$mod/main.go"
  printf 'module flywheel.local/coredns\n\ngo %s\n\nrequire github.com/coredns/coredns v%s\n' "$GO_MIN" "$COREDNS_VERSION" >"$mod/go.mod"
  (cd "$mod" && go mod tidy >/dev/null 2>&1 || go mod tidy)
  mkdir -p "$(dirname "$COREDNS_BIN")"
  (cd "$mod" && go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN.tmp" .)
  mv "$COREDNS_BIN.tmp" "$COREDNS_BIN"
  step_done
fi
rm -rf "$WORK"
