#!/usr/bin/env bash
# make test-k8s: the local cluster up, the images built and loaded, then COMMAND (the tests of
# tests/k8s) with KUBECONFIG set, then the cluster down again (left up if it was up before). One run
# at a time per machine (a lock). Prints each sub-step's time and a summary.
source "$(dirname "$0")/lib.sh"
need_root
[ $# -gt 0 ] || die "usage: test.sh COMMAND..."
exec 9>/run/flywheel-k8s.lock
flock -w 3600 9 || die "another make test-k8s holds the local cluster"

T0=$SECONDS
SUMMARY=()
timed() {  # timed NAME COMMAND...: run, remember how long it took
  local name=$1 t=$SECONDS rc=0
  shift
  echo "::: k8s ${name}"
  "$@" || rc=$?
  SUMMARY+=("$(printf '%-12s %5d s  exit %d' "$name" $((SECONDS - t)) "$rc")")
  return "$rc"
}
was_up=0
[ -f "$RUN/kube-apiserver.pid" ] && kill -0 "$(cat "$RUN/kube-apiserver.pid")" 2>/dev/null && was_up=1
finish() {
  local rc=$?
  if [ "$was_up" = 1 ]; then
    echo "the local cluster was up before: left up (make k8s-down)"
  else
    timed k8s-down "$K8S_LOCAL/down.sh" || rc=1
  fi
  echo "::: k8s summary"
  printf '    %s\n' "${SUMMARY[@]}"
  echo "    total        $((SECONDS - T0)) s"
  exit "$rc"
}
trap finish EXIT
timed k8s-up "$K8S_LOCAL/up.sh"
timed images "$K8S_LOCAL/images.sh" flywheel
"$K8S_LOCAL/images.sh" sizes
timed tests env KUBECONFIG="$KUBECONFIG_ADMIN" FLYWHEEL_K8S_TESTS=1 "$@"
