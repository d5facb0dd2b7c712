# shellcheck shell=bash
# Shared settings for the local control plane scripts. Source it; do not run it.
# Pins live here and in the committed wrapper modules under e2e/tools/.
set -euo pipefail

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$E2E_ROOT/.." && pwd)

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=v3.6.16 # also pinned in e2e/tools/etcd/go.mod
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
# The peer controller of `make bench BENCH=peers` only (never built by default, nor by make test).
# Also pinned in e2e/tools/argo-rollouts/go.mod. Its go.mod asks for Go >= 1.26.10: its build
# alone uses this toolchain, which the go command fetches from the module proxy.
ARGO_ROLLOUTS_VERSION=v1.10.2
ARGO_ROLLOUTS_GOTOOLCHAIN=go1.27.3

export GOTOOLCHAIN=local # fail fast instead of silently switching toolchains
export CGO_ENABLED=0     # upstream builds the control-plane binaries static
# -mod=mod: the wrapper go.mod files are the pins; -buildvcs=false: the wrappers live inside the
# project's git tree, and stamping its commit would relink the binaries on every commit.
export GOFLAGS="-mod=mod -buildvcs=false"

# Built binaries live outside the repository, one directory per component keyed by its pins, so a
# change of one pin rebuilds only that component and nothing is ever committed.
E2E_CACHE=${E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phaseloop-e2e}
# Runtime state of a started cluster (certs, data, logs, pids, kubeconfig).
E2E_STATE=${E2E_STATE:-$REPO_ROOT/target/e2e-cluster}

pin_hash() { cat "$@" | sha256sum | cut -c1-16; }
k8s_bin_dir() { echo "$E2E_CACHE/k8s-$KUBE_VERSION-$(pin_hash "$E2E_ROOT/tools/k8s/go.mod" "$E2E_ROOT/tools/k8s/go.sum")"; }
etcd_bin_dir() { echo "$E2E_CACHE/etcd-$ETCD_VERSION-$(pin_hash "$E2E_ROOT/tools/etcd/go.mod" "$E2E_ROOT/tools/etcd/go.sum" "$E2E_ROOT/tools/etcd/main.go")"; }
kwok_bin_dir() { echo "$E2E_CACHE/kwok-$KWOK_VERSION"; }
helm_bin_dir() { echo "$E2E_CACHE/helm-$HELM_VERSION"; }
argo_rollouts_bin_dir() {
  local w=$E2E_ROOT/tools/argo-rollouts
  echo "$E2E_CACHE/argo-rollouts-$ARGO_ROLLOUTS_VERSION-$(pin_hash "$w/go.mod" "$w/go.sum" <(echo "$ARGO_ROLLOUTS_GOTOOLCHAIN"))"
}

# PATH with every pinned binary first, so scripts and tests never pick up an older kubectl.
e2e_bin_path() { echo "$(k8s_bin_dir):$(etcd_bin_dir):$(kwok_bin_dir):$(helm_bin_dir)"; }
e2e_path() { echo "$(e2e_bin_path):$PATH"; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Ports of the e2e cluster: all on 127.0.0.1, away from the defaults (2379, 6443, 9090, 9091,
# 10257, 10259) so a developer's own cluster or Debian's prometheus service cannot collide.
E2E_ETCD_PORT=${E2E_ETCD_PORT:-12379}
E2E_ETCD_PEER_PORT=${E2E_ETCD_PEER_PORT:-12380}
E2E_APISERVER_PORT=${E2E_APISERVER_PORT:-16443}
E2E_KCM_PORT=${E2E_KCM_PORT:-11257}
E2E_SCHEDULER_PORT=${E2E_SCHEDULER_PORT:-11259}
E2E_PROMETHEUS_PORT=${E2E_PROMETHEUS_PORT:-19090}
E2E_PUSHGATEWAY_PORT=${E2E_PUSHGATEWAY_PORT:-19091}
PHASELOOP_METRICS_PORT=${PHASELOOP_METRICS_PORT:-18080} # the operator's /metrics, scraped by Prometheus
# Argo Rollouts' /metrics (scraped like the operator's) and healthz, for `make bench BENCH=peers`.
ARGO_ROLLOUTS_METRICS_PORT=${ARGO_ROLLOUTS_METRICS_PORT:-18090}
ARGO_ROLLOUTS_HEALTHZ_PORT=${ARGO_ROLLOUTS_HEALTHZ_PORT:-18091}

# Start order; stop-cluster.sh stops in reverse.
# shellcheck disable=SC2034 # used by the scripts sourcing this file
E2E_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok pushgateway prometheus)

pid_file() { echo "$E2E_STATE/pids/$1.pid"; }
log_file() { echo "$E2E_STATE/logs/$1.log"; }

# running NAME -> prints the recorded PID when that process is alive and is still the one we
# started, so a recycled PID is never signalled. With pids/NAME.exe (written by start-cluster.sh)
# the binary must match; without it (e.g. pids/operator.pid from run-operator.sh) the process must
# be older than its pid file.
running() {
  local f pid exe link age
  f=$(pid_file "$1")
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] || return 1
  link=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1 # also false for zombies
  if exe=$(cat "$E2E_STATE/pids/$1.exe" 2>/dev/null); then
    [ "${link% (deleted)}" = "$exe" ] || return 1 # a rebuilt cache dir leaves "(deleted)"
  else
    age=$(ps -o etimes= -p "$pid" | tr -d ' ') || return 1
    [ $(($(date +%s) - age)) -le $(($(stat -c %Y "$f") + 1)) ] || return 1
  fi
  echo "$pid"
}

# stop_component NAME: SIGTERM to the recorded process, SIGKILL after E2E_STOP_GRACE seconds
# (default 10; only etcd holds data, and it stops last), then forget its pid file.
stop_component() {
  local name=$1 grace=${E2E_STOP_GRACE:-10} pid t
  if pid=$(running "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < grace * 10; t++)); do
      running "$name" >/dev/null || break
      sleep 0.1
    done
    if running "$name" >/dev/null; then
      log "$name: still alive after ${grace}s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    log "$name: stopped (pid $pid)"
  fi
  rm -f "$(pid_file "$name")" "$E2E_STATE/pids/$name.exe"
}
