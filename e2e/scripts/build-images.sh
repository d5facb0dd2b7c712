#!/usr/bin/env bash
# Builds the real node's images offline (no registry is reachable) and, with `import`, loads them
# into the node's containerd:
#   $E2E_IMAGE_PREFIX/pause:1                 the pod sandbox (e2e-pause)
#   $E2E_IMAGE_PREFIX/demo-app:<v>            the demo app, DEMO_VERSION=<v> in the image config
#   $E2E_IMAGE_PREFIX/phaseloop:<content>     the operator, what the Dockerfile ships
#   $E2E_IMAGE_PREFIX/curl:<Debian version>   Debian's curl and the libraries it links (helm test)
#
# The Rust binaries come from one static release build (`-C target-feature=+crt-static` on the gnu
# target: no musl target can be installed offline, and glibc's static build needs nothing from
# the image). Each image is one uncompressed layer written as an OCI archive by this script alone:
# files sorted, owned by 0:0, mtime 0, no creation date, so the same binaries give the same
# digests. Archives are cached by the hash of their content under $E2E_CACHE/images (skipped
# when nothing changed) and imported only when containerd does not have that digest yet.
#
# Usage: build-images.sh [build|import]      (default: build)
# Prints `export` lines for the image references (E2E_OPERATOR_IMAGE, ...) on stdout.
source "$(dirname "$0")/lib.sh"

MODE=${1:-build}
case $MODE in build | import) ;; *) die "usage: $0 [build|import]" ;; esac
DEMO_VERSIONS=${E2E_DEMO_VERSIONS:-1.0.0 2.0.0 3.0.0}
TARGET=x86_64-unknown-linux-gnu
OUT=$REPO_ROOT/target/$TARGET/release
IMAGES=$E2E_CACHE/images
mkdir -p "$IMAGES"
# Archives unused for three days go (every build of a changed binary leaves one; rebuilding is cheap).
find "$IMAGES" -maxdepth 1 -name '*.tar' -mtime +3 -delete
find "$IMAGES" -maxdepth 1 -name '.tmp-image.*' -mmin +60 -exec rm -rf {} +
T0=$(date +%s)

# One static release build of everything that goes into an image (and of e2e-pod-sd, the node
# Prometheus' pod discovery, which start-node.sh runs). With an explicit --target,
# RUSTFLAGS reach only the target's crates, not build scripts and proc-macros.
if [ "${E2E_IMAGES_SKIP_CARGO:-0}" != 1 ]; then
  (cd "$REPO_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$TARGET" \
    -p phaseloop --bin phaseloop-operator -p phaseloop-e2e --bin e2e-demo-app --bin e2e-pause --bin e2e-pod-sd >&2)
fi
for b in phaseloop-operator e2e-demo-app e2e-pause; do
  [ -x "$OUT/$b" ] || die "$OUT/$b missing"
  dyn=$(readelf -d "$OUT/$b" 2>&1) || die "readelf $OUT/$b: $dyn"
  if [[ $dyn == *"(NEEDED)"* ]]; then die "$OUT/$b is not static: $(grep NEEDED <<<"$dyn")"; fi
done

sha() { sha256sum "$1" | cut -d' ' -f1; }

# image REF USER ENTRYPOINT_JSON ENV_JSON SRC:DST... -> prints the archive path. The archive's
# name carries the hash of every input, so an unchanged image is not written again.
image() {
  local ref=$1 user=$2 entry=$3 env=$4 key archive dir f src dst layer diff cfg cfgd man mand
  shift 4
  key=$( {
    printf '%s\n' "$ref" "$user" "$entry" "$env"
    for f in "$@"; do printf '%s %s\n' "${f#*:}" "$(sha "${f%%:*}")"; done
  } | sha256sum | cut -c1-16)
  archive=$IMAGES/$(tr '/:' '__' <<<"$ref")-$key.tar
  if [ -s "$archive" ]; then
    touch "$archive" # in use: not pruned
    echo "$archive"
    return
  fi
  dir=$(mktemp -d "$IMAGES/.tmp-image.XXXXXX")
  mkdir -p "$dir/rootfs" "$dir/oci/blobs/sha256"
  for f in "$@"; do
    src=${f%%:*} dst=${f#*:}
    install -D -m 0755 "$src" "$dir/rootfs$dst"
  done
  mkdir -p "$dir/rootfs/tmp" && chmod 1777 "$dir/rootfs/tmp"
  layer=$dir/layer.tar
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -C "$dir/rootfs" -cf "$layer" .
  diff=$(sha "$layer")
  mv "$layer" "$dir/oci/blobs/sha256/$diff"
  cfg=$dir/config.json
  printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Entrypoint":%s,"Env":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"e2e/scripts/build-images.sh"}]}' \
    "$user" "$entry" "$env" "$diff" >"$cfg"
  cfgd=$(sha "$cfg")
  man=$dir/manifest.json
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cfgd" "$(stat -c %s "$cfg")" "$diff" "$(stat -c %s "$dir/oci/blobs/sha256/$diff")" >"$man"
  mand=$(sha "$man")
  mv "$cfg" "$dir/oci/blobs/sha256/$cfgd"
  mv "$man" "$dir/oci/blobs/sha256/$mand"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci/oci-layout"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$mand" "$(stat -c %s "$dir/oci/blobs/sha256/$mand")" "$ref" "${ref##*:}" >"$dir/oci/index.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir/oci" -cf "$dir/image.tar" .
  mv "$dir/image.tar" "$archive"
  rm -rf "$dir"
  echo "$archive"
}

# curl for the chart's `helm test` Pod: the binary and its shared libraries from this machine's
# Debian packages (the chart runs `curl` from PATH).
curl_files() {
  local c lib
  c=$(readlink -f "$(command -v curl)")
  echo "$c:/usr/bin/curl"
  ldd "$c" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | while read -r lib; do
    echo "$(readlink -f "$lib"):$lib"
  done
}

OP_KEY=$(sha "$OUT/phaseloop-operator" | cut -c1-12)
declare -A REFS=(
  [pause]=$E2E_IMAGE_PREFIX/pause:1
  [operator]=$E2E_IMAGE_PREFIX/phaseloop:0.1.0-$OP_KEY
  [curl]=$E2E_IMAGE_PREFIX/curl:$(dpkg-query -W -f '${Version}' curl | tr '+~' '__')
)
ARCHIVES=()
ARCHIVES+=("$(image "${REFS[pause]}" 65535:65535 '["/pause"]' '[]' "$OUT/e2e-pause:/pause")")
for v in $DEMO_VERSIONS; do
  ARCHIVES+=("$(image "$E2E_IMAGE_PREFIX/demo-app:$v" 65532:65532 '["/demo-app"]' "[\"DEMO_VERSION=$v\"]" \
    "$OUT/e2e-demo-app:/demo-app")")
done
ARCHIVES+=("$(image "${REFS[operator]}" 65532:65532 '["/phaseloop-operator"]' '[]' \
  "$OUT/phaseloop-operator:/phaseloop-operator")")
mapfile -t CURL_FILES < <(curl_files)
ARCHIVES+=("$(image "${REFS[curl]}" 65532:65532 '["/usr/bin/curl"]' '["PATH=/usr/bin:/bin"]' "${CURL_FILES[@]}")")
log "images: ${#ARCHIVES[@]} archives in $IMAGES ($(($(date +%s) - T0))s)"

if [ "$MODE" = import ]; then
  CTR=("$(containerd_bin_dir)/ctr" --address "$NODE_STATE/containerd.sock" -n k8s.io)
  have=$("${CTR[@]}" images ls 2>/dev/null | awk 'NR>1 {print $1, $3}')
  n=0
  for a in "${ARCHIVES[@]}"; do
    idx=$(tar -xOf "$a" ./index.json)
    ref=$(sed -E 's/.*"io.containerd.image.name":"([^"]+)".*/\1/' <<<"$idx")
    digest=$(sed -E 's/.*"digest":"(sha256:[0-9a-f]+)".*/\1/' <<<"$idx")
    if grep -qxF "$ref $digest" <<<"$have"; then continue; fi
    # Quiet unless it fails (ctr warns about cgroup v1 on every call).
    out=$("${CTR[@]}" images import --local --snapshotter overlayfs "$a" 2>&1) ||
      die "ctr images import $a failed: $out"
    n=$((n + 1))
  done
  log "images: $n imported into the node's containerd ($(($(date +%s) - T0))s)"
fi
printf 'export %s=%q\n' E2E_OPERATOR_IMAGE "${REFS[operator]}" E2E_CURL_IMAGE "${REFS[curl]}" \
  E2E_PAUSE_IMAGE "${REFS[pause]}" E2E_DEMO_IMAGE "$E2E_IMAGE_PREFIX/demo-app"
