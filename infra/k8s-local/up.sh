#!/usr/bin/env bash
# A single-node Kubernetes on this machine (make k8s-up): containerd, etcd, the control plane,
# kubelet and kube-proxy as processes; CoreDNS and hostPath volumes inside. Idempotent: a cluster
# that is up is left as it is, a half-started one is taken down and started again. Every step
# prints its time. What it changes on the host, and how down.sh puts it back: README.md here.
source "$(dirname "$0")/lib.sh"
need_root
T0=$SECONDS

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

all_running() {
  for c in "${COMPONENTS[@]}"; do running "$c" || return 1; done
  "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz >/dev/null 2>&1
}
start() {  # start NAME COMMAND...: a daemon in its own session, its log and pid under STATE and RUN
  local name=$1
  shift
  (
    # The daemon keeps none of this script's other descriptors: run as `flock LOCK up.sh`, the lock
    # would otherwise live as long as the API server (it did: every waiter on the lock hung).
    for fd in $(ls "/proc/$BASHPID/fd"); do
      if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    exec setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$RUN/$name.pid"
}
wait_for() {  # wait_for NAME SECONDS COMMAND...: until COMMAND succeeds; fails with the log's tail
  local name=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! running "$name" || [ $SECONDS -ge $deadline ]; then
      tail -20 "$LOGS/$name.log" >&2
      die "$name did not come up (log: $LOGS/$name.log)"
    fi
    sleep 0.5
  done
}
start_apiserver() {  # the API server; its aggregation layer (front-proxy flags) serves metrics adapters
  start kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
    --etcd-servers=http://127.0.0.1:2379 \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
    --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --profiling=false
}
if all_running; then
  # A cluster brought up before the aggregation layer: its API server alone restarts with the
  # front-proxy flags (pods, etcd and the node stay; the API is away for a few seconds).
  if ! tr '\0' ' ' <"/proc/$(cat "$RUN/kube-apiserver.pid")/cmdline" | grep -q -- --requestheader-client-ca-file; then
    step "kube-apiserver: restarting with the aggregation layer's flags"
    NODE_IP=$(node_ip)
    "$K8S_LOCAL/pki.sh" "$NODE_IP" front-proxy
    kill "$(cat "$RUN/kube-apiserver.pid")"
    while running kube-apiserver; do sleep 0.5; done
    start_apiserver
    wait_for kube-apiserver 90 "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz
    step_done
  fi
  echo "the local cluster is already up (KUBECONFIG=$KUBECONFIG_ADMIN)"
  exit 0
fi
if [ -d "$RUN" ] || [ -d "$STATE/etcd" ]; then
  echo "--- a cluster was left half up: taking it down first"
  "$K8S_LOCAL/down.sh"
fi

"$K8S_LOCAL/packages.sh"
"$K8S_LOCAL/build-binaries.sh"
"$REPO/infra/tools/fetch_k8s_tools.sh" >/dev/null

NODE_IP=$(node_ip)
[ -n "$NODE_IP" ] || die "no default route: cannot tell the node's address"
for port in 2379 2380 6443 10248 10250 10256 10257 10259; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use: another cluster or etcd runs here (make k8s-down, or stop it)"
  fi
done
mkdir -p "$STATE" "$RUN" "$LOGS" "$PKI"
# Host folders the kubelet, containerd and CNI create at fixed paths whatever their configuration:
# those that do not exist yet are listed, and down.sh removes them.
for dir in /var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd /run/netns; do
  [ -e "$dir" ] || echo "$dir"
done >"$STATE/host-dirs-created"

step "host settings (saved first, put back by down.sh)"
# sysctls the kubelet, kube-proxy and the bridge change; the values found are what down.sh restores.
if [ ! -f "$STATE/sysctl.saved" ]; then
  for key in net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables \
    net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes; do
    value=$(sysctl -n "$key" 2>/dev/null) && echo "$key=$value"
  done >"$STATE/sysctl.saved.tmp"
  mv "$STATE/sysctl.saved.tmp" "$STATE/sysctl.saved"
fi
sysctl -qw net.ipv4.ip_forward=1
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || die "no br_netfilter: Services cannot reach pods on the bridge"
sysctl -qw net.bridge.bridge-nf-call-iptables=1
step_done

step "PKI (a CA and the certificates of each component)"
"$K8S_LOCAL/pki.sh" "$NODE_IP"
step_done

step "containerd $(containerd --version | awk '{print $3}') (own config, socket and state under $RUN)"
mkdir -p "$STATE/cni/net.d" "$RUN/cni"
sed -e "s#@STATE@#$STATE#g" -e "s#@RUN@#$RUN#g" -e "s#@SOCK@#$CONTAINERD_SOCK#g" \
  -e "s#@PAUSE@#flywheel.local/pause:v$K8S_VERSION#g" "$K8S_LOCAL/config/containerd.toml" >"$STATE/containerd.toml"
sed -e "s#@POD_CIDR@#$POD_CIDR#g" -e "s#@RUN@#$RUN#g" "$K8S_LOCAL/config/cni.conflist" >"$STATE/cni/net.d/10-flywheel.conflist"
start containerd containerd --config "$STATE/containerd.toml"
wait_for containerd 30 "${CTR[@]}" version
step_done

step "the cluster's own images (pause, CoreDNS)"
"$K8S_LOCAL/images.sh" system
step_done

step "etcd $(etcd --version | awk 'NR == 1 {print $3}')"
start etcd etcd --name "$NODE_NAME" --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" --log-level warn
wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health
step_done

step "kube-apiserver, kube-controller-manager, kube-scheduler v$K8S_VERSION"
start_apiserver
wait_for kube-apiserver 90 "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" get --raw /readyz
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$PKI/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --profiling=false
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$PKI/scheduler.kubeconfig" \
  --authentication-kubeconfig="$PKI/scheduler.kubeconfig" --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false
wait_for kube-controller-manager 60 curl -fsSk https://127.0.0.1:10257/healthz
wait_for kube-scheduler 60 curl -fsSk https://127.0.0.1:10259/healthz
step_done

step "kubelet and kube-proxy (node $NODE_NAME, $NODE_IP)"
sed -e "s#@PKI@#$PKI#g" -e "s#@SOCK@#$CONTAINERD_SOCK#g" -e "s#@DNS@#$CLUSTER_DNS#g" -e "s#@STATE@#$STATE#g" \
  "$K8S_LOCAL/config/kubelet.yaml" >"$STATE/kubelet.yaml"
start kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
  --root-dir="$STATE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
sed -e "s#@PKI@#$PKI#g" -e "s#@POD_CIDR@#$POD_CIDR#g" -e "s#@NODE@#$NODE_NAME#g" \
  "$K8S_LOCAL/config/kube-proxy.yaml" >"$STATE/kube-proxy.yaml"
start kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml"
wait_for kubelet 60 curl -fsS http://127.0.0.1:10248/healthz
wait_for kube-proxy 60 curl -fsS http://127.0.0.1:10256/healthz
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
wait_for kubelet 60 k get node "$NODE_NAME"
k wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null
step_done

step "CoreDNS v$COREDNS_VERSION and hostPath volumes"
sed -e "s#@DNS@#$CLUSTER_DNS#g" -e "s#@IMAGE@#flywheel.local/coredns:v$COREDNS_VERSION#g" \
  "$K8S_LOCAL/config/coredns.yaml" | k apply -f - >/dev/null
"$K8S_LOCAL/volumes.sh"
k -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null
step_done

echo "the local cluster is up in $((SECONDS - T0)) s: export KUBECONFIG=$KUBECONFIG_ADMIN"
