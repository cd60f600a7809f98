# Shared by the infra/k8s-local scripts: paths, versions, timed steps. Sourced, not run.
set -euo pipefail
K8S_LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$K8S_LOCAL/../.." && pwd)"
# shellcheck source=versions.env
source "$K8S_LOCAL/versions.env"
# Caches (kept between runs, keyed by version): built binaries, buildah's storage (images, layer cache).
CACHE="${FLYWHEEL_K8S_CACHE:-$REPO/.tools/k8s}"
BIN="$CACHE/bin-v$K8S_VERSION"
COREDNS_BIN="$CACHE/coredns-v$COREDNS_VERSION/coredns"
# Cluster state: one cluster per machine. k8s-down removes all of it except the image store of
# containerd (STATE/containerd), which K8S_PURGE=1 removes too.
STATE=/var/lib/flywheel-k8s
RUN=/run/flywheel-k8s
LOGS="$STATE/logs"
PKI="$STATE/pki"
CONTAINERD_SOCK="$RUN/containerd/containerd.sock"
KUBECONFIG_ADMIN="$STATE/admin.kubeconfig"
NODE_NAME=flywheel-local
KUBECTL="$REPO/.tools/bin/kubectl"
HELM="$REPO/.tools/bin/helm"
# containerd's namespace for Kubernetes: images imported there are what the kubelet runs.
CTR=(ctr --address "$CONTAINERD_SOCK" --namespace k8s.io)

step_t0=0
step() {  # step "what": prints what is about to happen and, with step_done, how long it took
  step_t0=$SECONDS
  echo "--- $*"
}
step_done() {
  echo "    done in $((SECONDS - step_t0)) s"
}
die() {
  echo "error: $*" >&2
  exit 1
}
need_root() {
  [ "$(id -u)" = 0 ] || die "this needs root (it runs containerd, the kubelet and changes iptables)"
}
node_ip() {  # the address of the default route's interface: the node's InternalIP
  ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i + 1); exit}}'
}
