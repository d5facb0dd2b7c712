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
CONTAINERD_VERSION=v2.4.2 # also pinned in e2e/tools/containerd/go.mod
COREDNS_VERSION=v1.15.0   # also pinned in e2e/tools/coredns/go.mod
# The peer controller of `make bench BENCH=peers` only (never built by default, nor by make test).
# Also pinned in e2e/tools/argo-rollouts/go.mod. Its go.mod asks for Go >= 1.26.10: its build
# alone uses this toolchain, which the go command fetches from the module proxy.
ARGO_ROLLOUTS_VERSION=v1.10.2
ARGO_ROLLOUTS_GOTOOLCHAIN=go1.27.3
# The real node's Gateway (start-node.sh). v3.7.10 is the newest v3.7 whose whole build graph the
# module proxy serves: v3.7.11 and v3.7.12 replace github.com/abbot/go-http-auth with a
# containous/go-http-auth pseudo-version it does not serve, v3.7.13 also needs seven lego DNS SDK
# versions it does not serve. Built inside a copy of its module (build-e2e-bins.sh node).
TRAEFIK_VERSION=v3.7.10
# The Gateway API CRDs (standard channel), read from this module's config/crd/standard/ and
# installed by start-cluster.sh; Traefik v3.7.10 is built against v1.6.1 of the same API.
GATEWAY_API_VERSION=v1.6.3

export GOTOOLCHAIN=local # fail fast instead of silently switching toolchains
export CGO_ENABLED=0     # upstream builds the control-plane binaries static
# -mod=mod: the wrapper go.mod files are the pins; -buildvcs=false: the wrappers live inside the
# project's git tree, and stamping its commit would relink the binaries on every commit.
export GOFLAGS="-mod=mod -buildvcs=false"

# Built binaries live outside the repository, one directory per component keyed by its pins, so a
# change of one pin rebuilds only that component and nothing is ever committed.
E2E_CACHE=${E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phaseloop-e2e}
# Several local clusters side by side (a pipeline across clusters needs two): E2E_CLUSTER=b (or c)
# gives a cluster its own state directory and every default port below plus 100 (or 200). The
# first cluster, E2E_CLUSTER=a, is the default. Ports set explicitly win over both.
E2E_CLUSTER=${E2E_CLUSTER:-a}
case "$E2E_CLUSTER" in
a) E2E_PORT_OFFSET=0 ;;
b) E2E_PORT_OFFSET=100 ;;
c) E2E_PORT_OFFSET=200 ;;
*) echo "E2E_CLUSTER=$E2E_CLUSTER: a (the default), b or c" >&2 && exit 1 ;;
esac
# What env.sh exported for one cluster (E2E_ENV_CLUSTER names it) is not another's: a command
# asked for another cluster (E2E_CLUSTER=b in a shell set up for a) drops it.
if [ -n "${E2E_ENV_CLUSTER:-}" ] && [ "$E2E_ENV_CLUSTER" != "$E2E_CLUSTER" ]; then
  unset E2E_STATE PHASELOOP_METRICS_PORT E2E_KCM_PORT
fi
# Runtime state of a started cluster (certs, data, logs, pids, kubeconfig).
if [ "$E2E_CLUSTER" = a ]; then
  E2E_STATE=${E2E_STATE:-$REPO_ROOT/target/e2e-cluster}
else
  E2E_STATE=${E2E_STATE:-$REPO_ROOT/target/e2e-cluster-$E2E_CLUSTER}
fi

pin_hash() { cat "$@" | sha256sum | cut -c1-16; }
k8s_bin_dir() { echo "$E2E_CACHE/k8s-$KUBE_VERSION-$(pin_hash "$E2E_ROOT/tools/k8s/go.mod" "$E2E_ROOT/tools/k8s/go.sum")"; }
etcd_bin_dir() { echo "$E2E_CACHE/etcd-$ETCD_VERSION-$(pin_hash "$E2E_ROOT/tools/etcd/go.mod" "$E2E_ROOT/tools/etcd/go.sum" "$E2E_ROOT/tools/etcd/main.go")"; }
kwok_bin_dir() { echo "$E2E_CACHE/kwok-$KWOK_VERSION"; }
helm_bin_dir() { echo "$E2E_CACHE/helm-$HELM_VERSION"; }
# The real node's binaries (only built when the real node is wanted): kubelet and kube-proxy from
# the same k8s wrapper module as the control plane, containerd and CoreDNS from their own wrappers.
kubelet_bin_dir() { echo "$E2E_CACHE/k8s-node-$KUBE_VERSION-$(pin_hash "$E2E_ROOT/tools/k8s/go.mod" "$E2E_ROOT/tools/k8s/go.sum")"; }
coredns_bin_dir() { echo "$E2E_CACHE/coredns-$COREDNS_VERSION-$(pin_hash "$E2E_ROOT/tools/coredns/go.mod" "$E2E_ROOT/tools/coredns/go.sum" "$E2E_ROOT/tools/coredns/main.go")"; }
containerd_bin_dir() { echo "$E2E_CACHE/containerd-$CONTAINERD_VERSION-$(pin_hash "$E2E_ROOT/tools/containerd/go.mod" "$E2E_ROOT/tools/containerd/go.sum")"; }
# Traefik: its own module's go.mod and go.sum are the pins (the version), plus the stand-in for the
# nested module its zip lacks (e2e/tools/traefik).
traefik_bin_dir() { echo "$E2E_CACHE/traefik-$TRAEFIK_VERSION-$(pin_hash "$E2E_ROOT"/tools/traefik/ext/*)"; }
# Not a binary: the CRD YAML copied out of the module cache, keyed by the version alone.
gateway_api_crd_dir() { echo "$E2E_CACHE/gateway-api-$GATEWAY_API_VERSION-standard"; }
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
E2E_ETCD_PORT=${E2E_ETCD_PORT:-$((12379 + E2E_PORT_OFFSET))}
E2E_ETCD_PEER_PORT=${E2E_ETCD_PEER_PORT:-$((12380 + E2E_PORT_OFFSET))}
E2E_APISERVER_PORT=${E2E_APISERVER_PORT:-$((16443 + E2E_PORT_OFFSET))}
E2E_KCM_PORT=${E2E_KCM_PORT:-$((11257 + E2E_PORT_OFFSET))}
E2E_SCHEDULER_PORT=${E2E_SCHEDULER_PORT:-$((11259 + E2E_PORT_OFFSET))}
E2E_PROMETHEUS_PORT=${E2E_PROMETHEUS_PORT:-$((19090 + E2E_PORT_OFFSET))}
E2E_PUSHGATEWAY_PORT=${E2E_PUSHGATEWAY_PORT:-$((19091 + E2E_PORT_OFFSET))}
PHASELOOP_METRICS_PORT=${PHASELOOP_METRICS_PORT:-$((18080 + E2E_PORT_OFFSET))} # the operator's /metrics, scraped by Prometheus
# Argo Rollouts' /metrics (scraped like the operator's) and healthz, for `make bench BENCH=peers`.
ARGO_ROLLOUTS_METRICS_PORT=${ARGO_ROLLOUTS_METRICS_PORT:-$((18090 + E2E_PORT_OFFSET))}
ARGO_ROLLOUTS_HEALTHZ_PORT=${ARGO_ROLLOUTS_HEALTHZ_PORT:-$((18091 + E2E_PORT_OFFSET))}

# The real node (start-node.sh; the SC2034 disables: used by the scripts sourcing this file): kubelet, kube-proxy and containerd in a network namespace of
# their own, which holds the whole pod network (bridge, pod CIDR, Service rules, conntrack). The
# namespace's name and the cgroup root are derived from $E2E_STATE, so two checkouts on one machine
# never share them. Addresses inside the namespace exist nowhere else; from the host only
# 127.0.0.1 bridges (socat over unix sockets) lead in and out.
E2E_NODE_ID=$(printf '%s' "$E2E_STATE" | sha256sum | cut -c1-8)
E2E_NODE_NAME=${E2E_NODE_NAME:-real-node-0}
E2E_NODE_NETNS=${E2E_NODE_NETNS:-phaseloop-node-$E2E_NODE_ID}
E2E_NODE_IP=${E2E_NODE_IP:-10.201.0.1}          # inside the node's namespace only
E2E_NODE_POD_CIDR=${E2E_NODE_POD_CIDR:-10.88.0.0/16} # inside the node's namespace only
# shellcheck disable=SC2034
E2E_SERVICE_CIDR=10.96.0.0/16 # the API server's --service-cluster-ip-range (start-cluster.sh)
E2E_NODE_PROMETHEUS_PORT=${E2E_NODE_PROMETHEUS_PORT:-$((19092 + E2E_PORT_OFFSET))} # 127.0.0.1: the node's Prometheus
# shellcheck disable=SC2034
NODE_STATE=$E2E_STATE/node
# The Gateway (Traefik, kubernetesGateway provider) inside the node's namespace: its HTTP
# listener on the node's address, its ping and API on the namespace's 127.0.0.1 only.
# shellcheck disable=SC2034
E2E_GATEWAY_PORT=8000
# shellcheck disable=SC2034
E2E_GATEWAY_ADMIN_PORT=9000
# shellcheck disable=SC2034
E2E_GATEWAY_NAMESPACE=phaseloop-gateway
# shellcheck disable=SC2034
E2E_GATEWAY_NAME=e2e
# shellcheck disable=SC2034
NODE_CGROUP_ROOT=/phaseloop-node-$E2E_NODE_ID # under every cgroup hierarchy
# shellcheck disable=SC2034
NODE_RUN_DIR=/run/phaseloop-node-$E2E_NODE_ID # containerd's shim sockets (short paths)
# node_cgroup_mounts: the hierarchies holding the node's cgroup root: every cgroup v1 hierarchy
# (this machine kind) and the cgroup2 mount (empty here, but runc creates the pods' cgroups in it
# too; the only one on a cgroup v2 host).
node_cgroup_mounts() { awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/self/mounts; }
# Local images (no registry is reachable): built by build-images.sh, imported into containerd.
# shellcheck disable=SC2034
E2E_IMAGE_PREFIX=phaseloop.local

# Start order; stop-cluster.sh stops in reverse.
# shellcheck disable=SC2034 # used by the scripts sourcing this file
E2E_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok pushgateway prometheus)

pid_file() { echo "$E2E_STATE/pids/$1.pid"; }
# fail NAME MSG -> print the component's log tail and exit non-zero
fail() {
  log "error: $1: $2"
  echo "----- last 40 lines of $(log_file "$1") -----" >&2
  tail -n 40 "$(log_file "$1")" >&2 || true
  exit 1
}

log_file() { echo "$E2E_STATE/logs/$1.log"; }

# running NAME -> prints the recorded PID when that process is alive and is still the one we
# started, so a recycled PID is never signalled. With pids/NAME.exe (written by start-cluster.sh)
# the binary must match; without it (e.g. pids/operator.pid from run-operator.sh) the process must
# be older than its pid file.
# await_exec NAME -> wait (milliseconds, at most 2s) until the process just started as NAME has
# exec'd its binary: until then `running` sees setsid (or a forked shell) and would take the
# starting process for a dead one, a race that a loaded machine loses.
await_exec() {
  local i
  for ((i = 0; i < 100; i++)); do
    running "$1" >/dev/null && return 0
    sleep 0.02
  done
}

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

# quiet COMMAND... -> run it, printing its output only when it fails
quiet() {
  local out
  out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}

# sign_cert CA_DIR DIR NAME SUBJECT server|client -> DIR/NAME.key and DIR/NAME.crt, signed by the
# CA in CA_DIR (ca.crt, ca.key): a server certificate for the API server's loopback and in-cluster
# names (Go and rustls/webpki need SANs; IP:127.0.0.1 is what every client dials), or a client one
# (the user is the subject's CN, its groups the O's). Every certificate of the cluster and the node.
sign_cert() {
  local ca=$1 dir=$2 name=$3 subject=$4 usage=$5
  {
    echo "basicConstraints       = CA:FALSE"
    echo "keyUsage               = critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage       = ${usage}Auth"
    echo "subjectKeyIdentifier   = hash"
    echo "authorityKeyIdentifier = keyid,issuer"
    if [ "$usage" = server ]; then
      echo "subjectAltName         = DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:::1,IP:10.96.0.1"
    fi
  } >"$dir/$name.ext"
  quiet openssl req -new -nodes -newkey rsa:2048 -keyout "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr"
  quiet openssl x509 -req -in "$dir/$name.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt"
  rm -f "$dir/$name.csr" "$dir/$name.ext"
  chmod 600 "$dir/$name.key"
}

# launch NAME BINARY ARGS... -> unless NAME already runs: start BINARY detached, in a session of
# its own (it survives this shell, and its process group is stopped with it), with $PREFIX (a word
# list: nsenter, unshare) in front and its output appended to its log; record its PID and its
# binary (so a recycled PID is never mistaken for ours) and wait until it has exec'd. The one
# start of every process of the cluster and the node; stop_component stops them.
launch() {
  local name=$1 bin=$2 pid
  shift 2
  if pid=$(running "$name"); then
    log "$name: already running (pid $pid)"
    return 0
  fi
  rm -f "$(pid_file "$name")" "$E2E_STATE/pids/$name.exe" # stale or absent
  echo "=== $(date -Is) starting $name" >>"$(log_file "$name")"
  # shellcheck disable=SC2086 # PREFIX is a word list
  setsid ${PREFIX:-} "$bin" "$@" </dev/null >>"$(log_file "$name")" 2>&1 &
  pid=$!
  readlink -f "$bin" >"$E2E_STATE/pids/$name.exe"
  echo "$pid" >"$(pid_file "$name")"
  await_exec "$name"
  log "$name: started (pid $pid)"
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
