#!/usr/bin/env bash
# Takes the local cluster down and puts the host back as up.sh found it (make k8s-down): every
# process it started, the pods' containers and mounts, the bridge, the iptables chains of the
# kubelet, kube-proxy and CNI, the sysctls and cgroups. Cluster state goes too; containerd's image
# store (STATE/containerd) stays so images need no new import, unless K8S_PURGE=1. Idempotent.
source "$(dirname "$0")/lib.sh"
need_root
T0=$SECONDS

stop() {  # stop NAME...: SIGTERM to the processes up.sh recorded, SIGKILL to those alive after 15 s
  local name pid pids=()
  for name in "$@"; do
    pid=$(cat "$RUN/$name.pid" 2>/dev/null || true)
    rm -f "$RUN/$name.pid"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for _ in $(seq 1 30); do
    kill -0 "${pids[@]}" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

ours() {  # containerd shims of this cluster (they name its socket) and any process left in a pod's cgroup
  local p
  for p in /proc/[0-9]*; do
    if grep -qaF -- "$CONTAINERD_SOCK" "$p/cmdline" 2>/dev/null || grep -q ':/kubepods' "$p/cgroup" 2>/dev/null; then
      echo "${p#/proc/}"
    fi
  done
  return 0
}

step "kubelet, pods' containers, containerd"
stop kubelet
if [ -S "$CONTAINERD_SOCK" ] && "${CTR[@]}" version >/dev/null 2>&1; then
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
    for _ in $(seq 1 20); do "${CTR[@]}" tasks delete "$id" >/dev/null 2>&1 && break || sleep 0.25; done
  done
  for id in $("${CTR[@]}" containers ls -q 2>/dev/null); do
    "${CTR[@]}" containers delete "$id" >/dev/null 2>&1 || true
  done
fi
stop containerd
step_done

step "control plane, etcd, kube-proxy"
stop kube-scheduler kube-controller-manager kube-proxy
stop kube-apiserver
stop etcd
leftover=$(ours)
if [ -n "$leftover" ]; then
  # shellcheck disable=SC2086
  kill -KILL $leftover 2>/dev/null || true
  sleep 1
fi
step_done

step "mounts, network namespaces, bridge"
# Deepest first: volumes of pods, container root file systems, shm, netns bind mounts.
for m in $(findmnt -rn -o TARGET | grep -E "^($STATE|$RUN)/" | sort -r || true); do umount -l "$m" 2>/dev/null || true; done
for ns in /run/netns/cni-*; do
  [ -e "$ns" ] || continue
  if [ -z "$(ip netns pids "$(basename "$ns")" 2>/dev/null)" ]; then
    umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  fi
done
ip link show flywheel0 >/dev/null 2>&1 && ip link delete flywheel0
step_done

step "iptables chains of the kubelet, kube-proxy and CNI"
if [ -x "$BIN/kube-proxy" ] && [ -f "$STATE/kube-proxy.yaml" ]; then
  "$BIN/kube-proxy" --cleanup --config "$STATE/kube-proxy.yaml" >>"$LOGS/kube-proxy.log" 2>&1 || true
fi
# What is left (KUBE-* of the kubelet and kube-proxy, CNI-* of the bridge's masquerading and portmap):
# each table is rewritten without those chains and the rules that jump to them; other rules stay.
for cmd in iptables ip6tables; do
  command -v "$cmd-save" >/dev/null || continue
  for table in filter nat mangle raw; do
    rules=$("$cmd-save" -t "$table" 2>/dev/null) || continue
    grep -qE 'KUBE-|CNI-' <<<"$rules" || continue
    grep -vE 'KUBE-|CNI-' <<<"$rules" | "$cmd-restore" -T "$table"
  done
done
step_done

step "sysctls and cgroups"
if [ -f "$STATE/sysctl.saved" ]; then
  while IFS='=' read -r key value; do sysctl -qw "$key=$value" 2>/dev/null || true; done <"$STATE/sysctl.saved"
fi
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "${hierarchy}kubepods" ] || [ -d "${hierarchy}kubepods.slice" ] || continue
  for d in $(find "${hierarchy}kubepods" "${hierarchy}kubepods.slice" -depth -type d 2>/dev/null || true); do
    rmdir "$d" 2>/dev/null || true
  done
done
step_done

step "cluster state"
if [ -f "$STATE/host-dirs-created" ]; then
  while read -r dir; do
    case "$dir" in /var/lib/kubelet | /var/log/containers | /var/lib/cni | /run/containerd | /run/netns) rm -rf "$dir" ;; esac
  done <"$STATE/host-dirs-created"
fi
# Where those folders were there before, only this cluster's entries go.
rm -f /var/lib/cni/results/flywheel-local-* /var/log/containers/*_kube-system_coredns-* 2>/dev/null || true
if [ "${K8S_PURGE:-0}" = 1 ]; then
  rm -rf "$STATE"
else
  find "$STATE" -mindepth 1 -maxdepth 1 ! -name containerd ! -name images-imported -exec rm -rf {} + 2>/dev/null || true
fi
rm -rf "$RUN"
step_done
echo "the local cluster is down ($((SECONDS - T0)) s)"
