#!/usr/bin/env bash
# Builds the pinned e2e binaries that are missing from the cache (see lib.sh for the keyed dirs):
#   k8s:  kube-apiserver kube-controller-manager kube-scheduler kubectl (wrapper e2e/tools/k8s)
#   etcd: etcd (wrapper e2e/tools/etcd)
#   kwok: kwok (go install, no replaces upstream)
#   helm: helm (go install)
#   node: kubelet kube-proxy (wrapper e2e/tools/k8s, own cache dir) and containerd,
#         containerd-shim-runc-v2, ctr (wrapper e2e/tools/containerd), coredns (wrapper
#         e2e/tools/coredns), traefik (the node's Gateway, built inside a copy of its module):
#         only for the real node, so not in the default list; run-e2e.sh asks for it unless
#         E2E_REAL_NODE=0.
#   argo-rollouts: rollouts-controller (wrapper e2e/tools/argo-rollouts), only when named: the peer
#         controller of `make bench BENCH=peers`, never built by default nor by `make test`
# Each component is built into a temp dir next to its cache dir and renamed into place only when
# complete, so an interrupted build never leaves a half-filled cache dir. Binaries never go into
# the repository. Cold: ~30 min on 2 cores (run it in the background); all cached: well under 1s.
#
# Usage: build-e2e-bins.sh [k8s|etcd|kwok|helm|node|argo-rollouts ...]   (default: k8s etcd kwok helm)
source "$(dirname "$0")/lib.sh"

# 2 cores: two compile jobs at a time; more only adds memory pressure.
GO_P=${GO_P:-2}
mkdir -p "$E2E_CACHE"
# Leftovers of builds killed hard (SIGKILL, reboot); a day old, so never a concurrent build's.
find "$E2E_CACHE" -maxdepth 1 -name '.tmp-*' -mmin +1440 -exec rm -rf {} +
TMP_DIRS=()
cleanup() { for d in "${TMP_DIRS[@]}"; do rm -rf "$d"; done; }
trap cleanup EXIT

# have DIR BIN... -> true when DIR holds every BIN as an executable
have() {
  local dir=$1 b
  shift
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

# new_tmp NAME -> sets $tmp to a fresh temp dir on the cache's filesystem (so the final rename is
# atomic); not echoed, because a $(...) subshell could not register it for cleanup.
new_tmp() {
  tmp=$(mktemp -d "$E2E_CACHE/.tmp-$1.XXXXXX")
  TMP_DIRS+=("$tmp")
}

# publish TMP FINAL -> rename TMP to FINAL (mv -T never nests TMP inside an existing FINAL; if a
# concurrent build published FINAL first, keep that one)
publish() {
  chmod 755 "$1"
  mv -T "$1" "$2" 2>/dev/null || [ -d "$2" ] || die "cannot move $1 to $2"
}

# expect_version WANT CMD... -> CMD's output must contain WANT. Output is captured first: with
# pipefail, `CMD | grep -q` fails when grep exits early and CMD gets SIGPIPE.
expect_version() {
  local want=$1 out
  shift
  out=$("$@" 2>&1) || die "'$*' failed: $out"
  [[ $out == *"$want"* ]] || die "'$*' reports '$out', expected '$want'"
}

# timed LABEL CMD... -> runs CMD and logs its wall time
timed() {
  local label=$1 t0 rc=0
  shift
  t0=$(date +%s)
  "$@" || rc=$?
  log "$label: $(($(date +%s) - t0))s (exit $rc)"
  return $rc
}

# k8s_build OUT_DIR CMD... -> builds k8s.io/kubernetes/cmd/CMD from the wrapper module into OUT_DIR
k8s_build() {
  local out=$1 minor ldf p c
  shift
  minor=$(cut -d. -f2 <<<"${KUBE_VERSION#v}")
  # Same version variables as upstream's hack/lib/version.sh, in both packages that carry them;
  # without them the binaries say v0.0.0-master and kubectl/helm version checks misbehave. The
  # module proxy does not record the commit, so gitCommit stays empty rather than invented.
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitCommit="
    ldf+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  # Upstream's release build: static, -trimpath, tags selinux,notest,grpcnotrace (hack/lib/golang.sh).
  for c in "$@"; do
    (cd "$E2E_ROOT/tools/k8s" && timed "build $c" go build -p "$GO_P" -trimpath \
      -tags=selinux,notest,grpcnotrace -ldflags="$ldf" -o "$out/$c" "k8s.io/kubernetes/cmd/$c")
  done
}

build_k8s() {
  local dir tmp
  dir=$(k8s_bin_dir)
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  if have "$dir" "${bins[@]}"; then log "k8s: cached in $dir"; return; fi
  new_tmp k8s
  k8s_build "$tmp" "${bins[@]}"
  expect_version "Kubernetes $KUBE_VERSION" "$tmp/kube-apiserver" --version
  expect_version "Client Version: $KUBE_VERSION" "$tmp/kubectl" version --client
  publish "$tmp" "$dir"
}

# The real node: kubelet and kube-proxy (same wrapper module and flags as the control plane, their
# own cache dir so the kwok-only suite never waits for them), CoreDNS, containerd 2.x and the
# Gateway (Traefik). runc and the CNI plugins come from Debian (install-deps.sh).
build_node() {
  local dir tmp
  dir=$(kubelet_bin_dir)
  if have "$dir" kubelet kube-proxy; then
    log "kubelet, kube-proxy: cached in $dir"
  else
    new_tmp k8s-node
    k8s_build "$tmp" kubelet kube-proxy
    expect_version "Kubernetes $KUBE_VERSION" "$tmp/kubelet" --version
    expect_version "Kubernetes $KUBE_VERSION" "$tmp/kube-proxy" --version
    publish "$tmp" "$dir"
  fi
  dir=$(coredns_bin_dir)
  if have "$dir" coredns; then
    log "coredns: cached in $dir"
  else
    new_tmp coredns
    # Only the plugins of the node's Corefile (main.go); the version is a constant upstream.
    (cd "$E2E_ROOT/tools/coredns" && timed "build coredns" go build -p "$GO_P" -trimpath -ldflags="-s -w" \
      -o "$tmp/coredns" .)
    expect_version "CoreDNS-${COREDNS_VERSION#v}" "$tmp/coredns" -version
    publish "$tmp" "$dir"
  fi
  build_containerd
  build_traefik
}

build_containerd() {
  local dir tmp ldf
  dir=$(containerd_bin_dir)
  if have "$dir" containerd containerd-shim-runc-v2 ctr; then
    log "containerd: cached in $dir"
    return
  fi
  new_tmp containerd
  # Upstream's static release build uses cgo only for the btrfs snapshotter; without cgo (and with
  # the unused snapshotters left out) everything is pure Go. urfave_cli_no_docs as upstream;
  # no_grpc for the shim as upstream's Makefile.
  ldf="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  ldf+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
  local tags=urfave_cli_no_docs,no_btrfs,no_devmapper,no_zfs,osusergo,netgo
  local c
  for c in containerd ctr; do
    (cd "$E2E_ROOT/tools/containerd" && timed "build $c" go build -p "$GO_P" -trimpath -tags="$tags" \
      -ldflags="$ldf" -o "$tmp/$c" "github.com/containerd/containerd/v2/cmd/$c")
  done
  (cd "$E2E_ROOT/tools/containerd" && timed "build containerd-shim-runc-v2" go build -p "$GO_P" -trimpath \
    -tags="$tags,no_grpc" -ldflags="$ldf" -o "$tmp/containerd-shim-runc-v2" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2")
  expect_version "$CONTAINERD_VERSION" "$tmp/containerd" --version
  expect_version "${CONTAINERD_VERSION}" "$tmp/ctr" --version
  publish "$tmp" "$dir"
}

# Traefik, the real node's Gateway. Its go.mod has `replace` directives, one of them to a nested
# module in its own tree (./pkg/config/dynamic/ext), which its module zip lacks: `go install`
# refuses it and a wrapper module could not repeat that replace. So it is built like upstream's
# `make binary`, inside a copy of its module, with a stand-in for the nested module
# (e2e/tools/traefik/ext) and its own go.mod and go.sum as the pins (-mod=readonly: nothing
# resolved anew). The web UI is not built: the zip's webui/static holds only a placeholder file,
# which is all its go:embed needs; the dashboard stays off (start-node.sh).
build_traefik() {
  local dir tmp out src mod p=github.com/traefik/traefik/v3
  dir=$(traefik_bin_dir)
  if have "$dir" traefik; then log "traefik: cached in $dir"; return; fi
  new_tmp traefik
  out=$tmp
  new_tmp traefik-src
  src=$tmp/traefik
  mod=$(cd "$tmp" && go mod download -json "$p@$TRAEFIK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') || die "cannot download $p@$TRAEFIK_VERSION"
  cp -r --no-preserve=mode "$mod" "$src" # the module cache is read-only; the copy is not
  mkdir -p "$src/pkg/config/dynamic/ext"
  cp "$E2E_ROOT"/tools/traefik/ext/* "$src/pkg/config/dynamic/ext/"
  # Upstream's ldflags (its Makefile) with a fixed build date, as for the other binaries.
  (cd "$src" && GOFLAGS="-mod=readonly -buildvcs=false" timed "build traefik" go build -p "$GO_P" -trimpath \
    -ldflags="-s -w -X $p/pkg/version.Version=$TRAEFIK_VERSION -X $p/pkg/version.BuildDate=1970-01-01T00:00:00Z" \
    -o "$out/traefik" ./cmd/traefik)
  expect_version "$TRAEFIK_VERSION" "$out/traefik" version
  publish "$out" "$dir"
}

build_etcd() {
  local dir tmp
  dir=$(etcd_bin_dir)
  if have "$dir" etcd; then log "etcd: cached in $dir"; return; fi
  new_tmp etcd
  # etcd's own version string is a constant in go.etcd.io/etcd/api/v3/version: no ldflags needed.
  (cd "$E2E_ROOT/tools/etcd" && timed "build etcd" go build -p "$GO_P" -trimpath -ldflags="-s -w" \
    -o "$tmp/etcd" .)
  expect_version "etcd Version: ${ETCD_VERSION#v}" "$tmp/etcd" --version
  publish "$tmp" "$dir"
}

build_kwok() {
  local dir tmp
  dir=$(kwok_bin_dir)
  if have "$dir" kwok; then log "kwok: cached in $dir"; return; fi
  new_tmp kwok
  # kwok has no replace directives and declares go 1.26.0, so plain `go install @version` works
  # with the local toolchain; its version string is a constant matching the tag.
  (cd "$tmp" && GOBIN="$tmp" timed "build kwok" go install -p "$GO_P" -trimpath -ldflags="-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
  expect_version "${KWOK_VERSION#v}" "$tmp/kwok" --version
  publish "$tmp" "$dir"
}

build_helm() {
  local dir tmp minor ldf
  dir=$(helm_bin_dir)
  if have "$dir" helm; then log "helm: cached in $dir"; return; fi
  new_tmp helm
  # Like helm's Makefile: the version, and the default Kubernetes version used by `helm template`
  # and `helm lint` (else v1.20, and charts with kubeVersion: ">=1.2x" fail to template).
  minor=$(cut -d. -f2 <<<"${KUBE_VERSION#v}")
  ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldf+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  ldf+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  ldf+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  (cd "$tmp" && GOBIN="$tmp" timed "build helm" go install -p "$GO_P" -trimpath -ldflags="$ldf" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  expect_version "$HELM_VERSION" "$tmp/helm" version --short
  publish "$tmp" "$dir"
}

build_argo_rollouts() {
  local dir tmp ldf p=github.com/argoproj/argo-rollouts
  dir=$(argo_rollouts_bin_dir)
  if have "$dir" rollouts-controller; then log "argo-rollouts: cached in $dir"; return; fi
  new_tmp argo-rollouts
  # Like upstream's Makefile (`make controller`): static, with its version variables. gitCommit
  # stays empty (the module proxy does not record it), so the binary says v1.10.2+unknown.
  ldf="-s -w -X $p/utils/version.version=${ARGO_ROLLOUTS_VERSION#v}"
  ldf+=" -X $p/utils/version.buildDate=1970-01-01T00:00:00Z -X $p/utils/version.gitTreeState=clean"
  # The module needs a newer Go than the local toolchain: this build alone switches.
  (cd "$E2E_ROOT/tools/argo-rollouts" && GOTOOLCHAIN=$ARGO_ROLLOUTS_GOTOOLCHAIN timed "build rollouts-controller" \
    go build -p "$GO_P" -trimpath -ldflags="$ldf" -o "$tmp/rollouts-controller" "$p/cmd/rollouts-controller")
  expect_version "v${ARGO_ROLLOUTS_VERSION#v}" "$tmp/rollouts-controller" --version
  publish "$tmp" "$dir"
}

command -v go >/dev/null || die "go not found (need Go >= 1.26)"
T0=$(date +%s)
for c in "${@:-k8s etcd kwok helm}"; do
  for c1 in $c; do
    case $c1 in
      k8s | etcd | kwok | helm | node) "build_$c1" ;;
      argo-rollouts) build_argo_rollouts ;;
      *) die "unknown component '$c1' (k8s, etcd, kwok, helm, node, argo-rollouts)" ;;
    esac
  done
done
log "build-e2e-bins: done in $(($(date +%s) - T0))s"
for d in "$(k8s_bin_dir)" "$(etcd_bin_dir)" "$(kwok_bin_dir)" "$(helm_bin_dir)" "$(kubelet_bin_dir)" \
  "$(containerd_bin_dir)" "$(coredns_bin_dir)" "$(traefik_bin_dir)" "$(argo_rollouts_bin_dir)"; do
  # shellcheck disable=SC2012 # a listing for people to read, of files named by this script
  # An if, not `[ -d ] &&`: the loop's last status is the script's, and on a fresh machine the
  # node's and Argo Rollouts' directories do not exist yet.
  if [ -d "$d" ]; then ls -s --block-size=M "$d" | sed 1d | sed "s|^|  $(basename "$d"): |" >&2; fi
done
