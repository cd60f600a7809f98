#!/usr/bin/env bash
# Container images without a registry. A Debian root file system from debootstrap, packed with
# buildah, is the base of every image; buildah's storage (.tools/k8s/buildah) keeps each image with a
# label holding the hash of its inputs, and its layer cache. An image is streamed into the cluster's
# containerd (`ctr -n k8s.io images import`) under the exact name the manifests use, so
# `IfNotPresent` never pulls. An image whose inputs did not change is neither rebuilt nor re-imported.
#
#   images.sh system     the cluster's own: pause (sandbox) and CoreDNS; up.sh runs it
#   images.sh flywheel   every service target of docker/Dockerfile, plus Kafka, PostgreSQL and the S3 server
#   images.sh versitygw  only the S3 server the chart bundles (s3.bundled)
#   images.sh base       only the Debian and Python base images
#   images.sh metrics    prometheus-adapter and Prometheus for the model server's HPA (flywheel runs it too)
#   images.sh sizes      name and size of each image in the cluster
source "$(dirname "$0")/lib.sh"
need_root

TAG="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO/charts/flywheel/Chart.yaml")"
REGISTRY=ghcr.io/flywheel   # the chart's image.registry
SERVICES=(modelserver gateway ingest lake trainer monitor)
DEBIAN_IMAGE=flywheel.local/debian:$DEBIAN_SUITE
PYTHON_IMAGE=flywheel.local/python:3.11-$DEBIAN_SUITE
# The trainer's torch: PyTorch's CPU index is not reachable from CI machines, PyPI is (its torch is
# the CUDA build; see docker/Dockerfile and README.md).
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://pypi.org/simple}"
STORAGE="$CACHE/buildah/storage"
BUILDAH=(buildah --root "$STORAGE" --runroot /run/flywheel-buildah)
# When buildah's storage grows past this (old dependency layers after requirement changes), unused
# layers go, cache included.
STORAGE_MAX_GB=${FLYWHEEL_BUILDAH_MAX_GB:-30}
# buildah keeps RUN --mount=type=cache folders under TMPDIR, and its network configuration where
# containers.conf says (not /etc/cni: builds use the host's network anyway).
export TMPDIR="$CACHE/buildah/tmp" CONTAINERS_CONF="$CACHE/buildah/containers.conf"
mkdir -p "$CACHE/buildah/cni" "$TMPDIR" "$CACHE/tmp"
printf '[network]\nnetwork_config_dir = "%s"\n' "$CACHE/buildah/cni" >"$CONTAINERS_CONF"
IMPORTED="$STATE/images-imported"   # <image> → the input hash imported into containerd
# FLYWHEEL_IMAGES_SLIM=1 (.ci/run sets it): disk matters more than rebuild time. pip keeps no cache
# inside builds, and once containerd holds an image, buildah's copy of it and its layer cache go; a
# later run finds the image in containerd by the input hash recorded at import and builds nothing.
SLIM=${FLYWHEEL_IMAGES_SLIM:-0}

# One build at a time on this machine; leftovers of an interrupted build are removed first.
exec 8>/run/flywheel-buildah.lock
flock -w 3600 8 || die "another image build holds /run/flywheel-buildah.lock"
"${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true

inputs_hash() {  # inputs_hash EXTRA PATH...: hash of EXTRA and of the files under PATHs (tracked or not ignored)
  local extra=$1
  shift
  {
    echo "$extra"
    if [ $# -gt 0 ]; then
      (cd "$REPO" && git ls-files -co --exclude-standard -- "$@" | LC_ALL=C sort | xargs -d '\n' sha256sum)
    fi
  } | sha256sum | cut -c1-16
}

input_label() {  # the input hash an image in buildah's storage was built from (empty: no such image)
  "${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "flywheel.input"}}' "$1" 2>/dev/null || true
}

imported_mark() { echo "$IMPORTED/$(echo "$1" | tr '/:' '__')"; }

in_containerd() { containerd_up && "${CTR[@]}" images ls -q | grep -x "$1" >/dev/null; }

# built REF KEY: buildah holds REF built from KEY, or (slim) containerd holds REF imported from KEY
built() {
  [ "$(input_label "$1")" = "$2" ] && return 0
  [ "$SLIM" = 1 ] && [ "$(cat "$(imported_mark "$1")" 2>/dev/null)" = "$2" ] && in_containerd "$1"
}

image_id() { "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$1"; }

containerd_up() { [ -S "$CONTAINERD_SOCK" ] && "${CTR[@]}" version >/dev/null 2>&1; }

drop_layer_blobs() {  # drop_layer_blobs REF: delete the layer tarballs of an imported, unpacked image
  # containerd keeps each imported layer twice: the tarball in its content store and the unpacked
  # snapshot that containers run from. Only the snapshot is ever used again (nothing pushes these
  # images anywhere; containerd 1.7 calls this --discard-unpacked-layers), and the tarballs are GBs.
  local digest layers
  digest=$("${CTR[@]}" images ls | awk -v ref="$1" '$1 == ref {print $3}')
  [ -n "$digest" ] || return 0
  layers=$("${CTR[@]}" content get "$digest" | python3 -c '
import json, sys
manifest = json.load(sys.stdin)
print(" ".join(layer["digest"] for layer in manifest.get("layers", [])))')
  [ -n "$layers" ] || return 0
  # shellcheck disable=SC2086  # digests: no spaces
  "${CTR[@]}" content rm $layers >/dev/null 2>&1 || true
}

slim_drop() {  # slim_drop REF: (slim) buildah's copy of an image containerd now holds goes
  [ "$SLIM" = 1 ] || return 0
  "${BUILDAH[@]}" rmi --force "$1" >/dev/null 2>&1 || true
}

slim_prune() {  # (slim) every image no tag uses (the layer cache) and the build caches go
  [ "$SLIM" = 1 ] || return 0
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  rm -rf "$TMPDIR"/buildah-cache* "$TMPDIR"/storage* 2>/dev/null || true
}

load() {  # load REF KEY: stream the image into containerd, unless this build is there already
  local ref=$1 key=$2 mark t0=$SECONDS
  mark=$(imported_mark "$ref")
  if ! containerd_up; then
    echo "    built $ref; the cluster is not up, so nothing was imported (make k8s-up, then make images)"
    return 0
  fi
  if [ "$(cat "$mark" 2>/dev/null)" = "$key" ] && in_containerd "$ref"; then
    slim_drop "$ref"
    return 0
  fi
  mkdir -p "$IMPORTED"
  # A docker-archive on a pipe: no copy of the image on disk besides buildah's and containerd's.
  "${BUILDAH[@]}" push -q "$ref" "docker-archive:/dev/stdout:$ref" | "${CTR[@]}" images import - >/dev/null
  in_containerd "$ref" || die "$ref: not in containerd after the import"
  drop_layer_blobs "$ref"
  echo "$key" >"$mark"
  slim_drop "$ref"
  echo "    imported $ref into containerd in $((SECONDS - t0)) s"
}

from_scratch() {  # from_scratch REF KEY FILE ENTRYPOINT-JSON: one static binary in an empty image
  local ref=$1 key=$2 file=$3 entry=$4 c
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" copy -q "$c" "$file" "/$(basename "$file")" >/dev/null
  "${BUILDAH[@]}" config --entrypoint "$entry" --user 65535:65535 --label "flywheel.input=$key" "$c"
  "${BUILDAH[@]}" commit -q "$c" "$ref" >/dev/null
  "${BUILDAH[@]}" rm "$c" >/dev/null
}

debian_base() {  # debootstrap minbase → flywheel.local/debian (docs and apt lists removed)
  # Bump the recipe number when the steps below change (the script's other edits need no new debootstrap).
  local key root c
  key=$(inputs_hash "$DEBIAN_SUITE $DEBIAN_MIRROR recipe-2")
  built "$DEBIAN_IMAGE" "$key" && return 0
  step "debootstrap --variant=minbase $DEBIAN_SUITE → $DEBIAN_IMAGE (~2 min)"
  # Everything in buildah's storage was built on the old base: it goes.
  "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1 || true
  root="$CACHE/tmp/rootfs-$DEBIAN_SUITE"
  rm -rf "$root" && mkdir -p "$root"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >"$CACHE/tmp/debootstrap.log" 2>&1 ||
    die "debootstrap failed: $(tail -5 "$CACHE/tmp/debootstrap.log")"
  # What Debian's slim images leave out, here and in packages installed later. The man page folders
  # stay, empty: packages such as the JRE link their man pages there when installed.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/info/* "$root"/usr/share/locale/*
  find "$root/usr/share/man" -type f -delete
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/flywheel-slim"
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nDPkg::Post-Invoke {"rm -f /var/cache/apt/archives/*.deb || true";};\n' \
    >"$root/etc/apt/apt.conf.d/flywheel-slim"
  tar -C "$root" -cf "$CACHE/tmp/rootfs.tar" .
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add -q "$c" "$CACHE/tmp/rootfs.tar" / >/dev/null
  "${BUILDAH[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label "flywheel.input=$key" "$c"
  "${BUILDAH[@]}" commit -q "$c" "$DEBIAN_IMAGE" >/dev/null
  "${BUILDAH[@]}" rm "$c" >/dev/null
  rm -rf "$root" "$CACHE/tmp/rootfs.tar"
  step_done
}

# pip inside a build trusts what the host trusts (a host behind a TLS-inspecting proxy has its CA in
# the host's bundle) and uses the host's index, through a pip.conf mounted only while RUN steps run.
BUILD_PIP="$CACHE/buildah/pip"
build_pip_conf() {
  mkdir -p "$BUILD_PIP"
  local ca="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
  cp "$ca" "$BUILD_PIP/ca.crt"
  {
    echo "[global]"
    echo "cert = /etc/flywheel-build/ca.crt"
    if [ -n "${PIP_INDEX_URL:-}" ]; then echo "index-url = $PIP_INDEX_URL"; fi
    echo "timeout = ${PIP_DEFAULT_TIMEOUT:-60}"
    # Without a cache the trainer's build does not keep a second copy of torch's ~3.5 GB of wheels.
    if [ "$SLIM" = 1 ]; then echo "no-cache-dir = true"; fi
  } >"$BUILD_PIP/pip.conf"
}

bud() {  # bud REF KEY CONTEXT ARGS...: buildah bud with layer caching, host network, docker format
  local ref=$1 key=$2 context=$3 log
  shift 3
  build_pip_conf
  log="$CACHE/tmp/build-$(echo "$ref" | tr '/:' '__').log"
  if ! "${BUILDAH[@]}" bud --layers --network host --isolation chroot --format docker \
    --volume "$BUILD_PIP:/etc/flywheel-build:ro" --volume "$BUILD_PIP/pip.conf:/etc/pip.conf:ro" \
    --label "flywheel.input=$key" -t "$ref" "$@" "$context" >"$log" 2>&1; then
    tail -40 "$log" >&2
    die "building $ref failed (log: $log)"
  fi
}

python_base() {
  local key debian
  debian=$(image_id "$DEBIAN_IMAGE")
  key=$(inputs_hash "$debian" infra/k8s-local/images/python.Containerfile)
  built "$PYTHON_IMAGE" "$key" && return 0
  step "$PYTHON_IMAGE (Debian's python3 on the debootstrap base)"
  # Images on the old Python base are of no further use.
  for id in $("${BUILDAH[@]}" images -q --no-trunc 2>/dev/null); do
    [ "$id" = "$debian" ] || [ "${id#sha256:}" = "$debian" ] || "${BUILDAH[@]}" rmi --force "$id" >/dev/null 2>&1 || true
  done
  bud "$PYTHON_IMAGE" "$key" "$K8S_LOCAL/images" -f "$K8S_LOCAL/images/python.Containerfile" \
    --build-arg "BASE=$DEBIAN_IMAGE"
  step_done
}

gc_storage() {  # unused layers go once buildah's storage passes STORAGE_MAX_GB
  local gb
  gb=$(du -s --block-size=1G "$STORAGE" 2>/dev/null | cut -f1)
  if [ "${gb:-0}" -gt "$STORAGE_MAX_GB" ]; then
    echo "    buildah's storage holds ${gb} GB (> $STORAGE_MAX_GB): removing images no tag uses"
    "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  fi
}

cmd_system() {
  local ref key
  ref=flywheel.local/pause:v$K8S_VERSION
  key=$(inputs_hash "$(sha256sum <"$BIN/pause") v1")
  if ! built "$ref" "$key"; then
    step "$ref"
    from_scratch "$ref" "$key" "$BIN/pause" '["/pause"]'
    step_done
  fi
  load "$ref" "$key"
  ref=flywheel.local/coredns:v$COREDNS_VERSION
  key=$(inputs_hash "$(sha256sum <"$COREDNS_BIN") v1")
  if ! built "$ref" "$key"; then
    step "$ref"
    from_scratch "$ref" "$key" "$COREDNS_BIN" '["/coredns"]'
    step_done
  fi
  load "$ref" "$key"
}

service_ref() { echo "$REGISTRY/flywheel-$1:$TAG"; }

service_key() {
  inputs_hash "$1 $(image_id "$PYTHON_IMAGE") $TORCH_INDEX_URL" docker constraints.txt services protos .dockerignore
}

build_service() {  # build_service SVC: docker/Dockerfile --target SVC, unless built from these inputs
  local ref key
  ref=$(service_ref "$1")
  key=$(service_key "$1")
  built "$ref" "$key" && return 0
  step "$ref (docker/Dockerfile --target $1)"
  bud "$ref" "$key" "$REPO" -f "$REPO/docker/Dockerfile" --target "$1" \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
  echo "    $ref built in $((SECONDS - step_t0)) s"
}

cmd_flywheel() {
  debian_base
  python_base
  local svc t0=$SECONDS
  # The trainer first and alone: committing its torch layer needs three times its ~4.5 GB for a
  # while (the build's upper folder, the diff, the new layer), best paid before the other images
  # fill the disk. Slim, its copy in buildah and its layer cache go before the next build.
  build_service trainer
  load "$(service_ref trainer)" "$(service_key trainer)"
  slim_prune
  for svc in "${SERVICES[@]}"; do
    [ "$svc" = trainer ] && continue
    build_service "$svc"
    load "$(service_ref "$svc")" "$(service_key "$svc")"
  done
  kafka_image
  postgres_image
  versitygw_image
  metrics_images
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  slim_prune
  gc_storage
  echo "    images ready in $((SECONDS - t0)) s"
}

deps_image() {  # the image a manifest of deps/ runs: what the build must be named
  sed -n "s#^ *image: *\\(flywheel.local/$1:[^ ]*\\)\$#\\1#p" "$K8S_LOCAL/deps/$1.yaml"
}

kafka_image() {  # Apache Kafka (KRaft) from the Maven jars of `make kafka-jars`, on Debian's JRE
  local libs="$REPO/.tools/kafka/libs" version ref key ctx
  ls "$libs"/kafka_2.13-*.jar >/dev/null 2>&1 || die "no Apache Kafka jars in $libs: run make kafka-jars"
  version=$(basename "$(ls "$libs"/kafka_2.13-*.jar | head -1)" .jar)
  version=${version#kafka_2.13-}
  ref=$(deps_image kafka)
  [ "${ref##*:}" = "$version" ] || die "the Kafka jars are $version but deps/kafka.yaml runs $ref: make them agree"
  key=$(inputs_hash "$(image_id "$DEBIAN_IMAGE") $(ls -l "$libs" | sha256sum)" infra/k8s-local/images/kafka)
  if ! built "$ref" "$key"; then
    step "$ref (KRaft, jars from Maven Central)"
    ctx="$CACHE/tmp/kafka-context"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp -r "$K8S_LOCAL/images/kafka/." "$ctx/"
    cp -r "$libs" "$ctx/libs"
    rm -f "$ctx/libs/.done"
    bud "$ref" "$key" "$ctx" -f "$ctx/Containerfile" --build-arg "BASE=$DEBIAN_IMAGE"
    rm -rf "$ctx"
    step_done
  fi
  load "$ref" "$key"
}

postgres_image() {  # Debian's PostgreSQL
  local ref key
  # The chart bundles PostgreSQL; on this cluster it runs the image the local values name.
  ref=$(local_value_image postgresql)
  [ -n "$ref" ] || die "charts/flywheel/ci/local-cluster-values.yaml names no flywheel.local/postgresql image"
  key=$(inputs_hash "$(image_id "$DEBIAN_IMAGE")" infra/k8s-local/images/postgresql)
  if ! built "$ref" "$key"; then
    step "$ref (Debian's postgresql-15)"
    bud "$ref" "$key" "$K8S_LOCAL/images/postgresql" -f "$K8S_LOCAL/images/postgresql/Containerfile" \
      --build-arg "BASE=$DEBIAN_IMAGE"
    step_done
  fi
  load "$ref" "$key"
}

versitygw_image() {  # the chart's bundled S3 server: the static versitygw of `make s3-server`, alone
  local bin="$REPO/.tools/s3/versitygw" version ref key tmp
  [ -x "$bin" ] || die "no versitygw in $REPO/.tools/s3: run make s3-server (it needs Go)"
  version=$(cat "$REPO/.tools/s3/versitygw.version")
  ref=$(sed -n 's#^ *image: *\(flywheel.local/versitygw:[^ ]*\)$#\1#p' "$REPO/charts/flywheel/values.yaml")
  [ -n "$ref" ] || die "charts/flywheel/values.yaml names no flywheel.local/versitygw image"
  [ "${ref##*:}" = "$version" ] || die "versitygw $version is built but the chart runs $ref: make them agree"
  key=$(inputs_hash "$(sha256sum <"$bin") v1")
  if ! built "$ref" "$key"; then
    step "$ref (the versitygw binary, stripped, FROM scratch)"
    # Its debug symbols are a third of the binary and nothing in a pod reads them.
    tmp="$CACHE/tmp/versitygw"
    rm -rf "$tmp" && mkdir -p "$tmp"
    strip -o "$tmp/versitygw" "$bin"
    from_scratch "$ref" "$key" "$tmp/versitygw" '["/versitygw"]'
    rm -rf "$tmp"
    step_done
  fi
  load "$ref" "$key"
}

local_value_image() {  # the flywheel.local image charts/flywheel/ci/local-cluster-values.yaml names for NAME
  sed -n "s#^ *image: *\\(flywheel.local/$1:[^ ]*\\)\$#\\1#p" "$REPO/charts/flywheel/ci/local-cluster-values.yaml"
}
metrics_images() {  # the HPA's custom metrics: prometheus-adapter (built from source) and Prometheus
  local ref key prom
  "$REPO/infra/prometheus-adapter/build.sh"
  ref=$(local_value_image prometheus-adapter)
  [ -n "$ref" ] || die "charts/flywheel/ci/local-cluster-values.yaml names no flywheel.local/prometheus-adapter image"
  key=$(inputs_hash "$(sha256sum <"$REPO/.tools/prometheus-adapter/adapter") v1")
  if ! built "$ref" "$key"; then
    step "$ref (infra/prometheus-adapter)"
    from_scratch "$ref" "$key" "$REPO/.tools/prometheus-adapter/adapter" '["/adapter"]'
    step_done
  fi
  load "$ref" "$key"
  # Debian's Prometheus, the one the local runner uses: the host's binary (it links only libc) on
  # the Debian base, so no package download at build time.
  prom=$(command -v prometheus) || die "no prometheus on PATH: apt-get install prometheus (Debian's)"
  ref=$(local_value_image prometheus)
  [ -n "$ref" ] || die "charts/flywheel/ci/local-cluster-values.yaml names no flywheel.local/prometheus image"
  debian_base
  key=$(inputs_hash "$(image_id "$DEBIAN_IMAGE") $(sha256sum <"$prom") v1")
  if ! built "$ref" "$key"; then
    step "$ref (Debian's $($prom --version 2>&1 | awk 'NR == 1 {print $3}'))"
    local c
    c=$("${BUILDAH[@]}" from "$DEBIAN_IMAGE")
    "${BUILDAH[@]}" copy -q "$c" "$prom" /usr/bin/prometheus >/dev/null
    "${BUILDAH[@]}" config --entrypoint '["/usr/bin/prometheus"]' --cmd '[]' --user 65534:65534 \
      --label "flywheel.input=$key" "$c"
    "${BUILDAH[@]}" commit -q "$c" "$ref" >/dev/null
    "${BUILDAH[@]}" rm "$c" >/dev/null
    step_done
  fi
  load "$ref" "$key"
}

cmd_sizes() {  # each image's size: its layers, uncompressed, as containerd holds them
  containerd_up || die "the cluster's containerd is not running (make k8s-up)"
  "${CTR[@]}" images ls | awk 'NR > 1 && $1 !~ /^sha256:/ {printf "    %-45s %s %s\n", $1, $4, $5}' | sort
}

case "${1:-}" in
system) cmd_system ;;
base) debian_base && python_base ;;
flywheel) cmd_flywheel ;;
versitygw) versitygw_image ;;
metrics) metrics_images ;;
sizes) cmd_sizes ;;
*) die "usage: images.sh system|base|flywheel|versitygw|metrics|sizes" ;;
esac; exit # (on the esac line: a build takes minutes, and an edit to this file meanwhile must not be run)
