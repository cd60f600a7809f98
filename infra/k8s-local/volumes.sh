#!/usr/bin/env bash
# Storage for the local cluster: no provisioner runs here, so a default StorageClass `local-hostpath`
# is served by a pool of static hostPath volumes (STATE/volumes/pv-NN; ReadWriteMany works, there is
# one node). Run again, it returns released volumes to the pool: a volume whose claim was deleted is
# emptied and offered again (what the deprecated reclaimPolicy Recycle did). Idempotent.
source "$(dirname "$0")/lib.sh"
POOL=${FLYWHEEL_K8S_VOLUMES:-8}
{
  cat <<EOF2
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF2
  for i in $(seq -w 1 "$POOL"); do
    dir="$STATE/volumes/pv-$i"
    # World-writable like /tmp: pods of any uid (Flywheel runs as 10001) write there without a chown.
    mkdir -p "$dir" && chmod 1777 "$dir"
    cat <<EOF2
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: local-pv-$i
  labels: {flywheel.dev/local-volume: "true"}
spec:
  storageClassName: local-hostpath
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $dir, type: Directory}
EOF2
  done
} | "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" apply -f - >/dev/null

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
for pv in $(k get pv -l flywheel.dev/local-volume=true -o jsonpath='{range .items[?(@.status.phase=="Released")]}{.metadata.name}{"\n"}{end}'); do
  dir=$(k get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
  case "$dir" in "$STATE"/volumes/pv-*) ;; *) die "$pv: unexpected path $dir" ;; esac
  find "$dir" -mindepth 1 -delete
  k patch pv "$pv" --type json -p '[{"op": "remove", "path": "/spec/claimRef"}]' >/dev/null
  echo "    $pv emptied and available again"
done
