#!/usr/bin/env bash
# Starts the real node beside the kwok one: containerd, kubelet and kube-proxy in a network
# namespace of their own (the whole pod network lives in there), plus CoreDNS, a Gateway (Traefik)
# and a Prometheus that scrapes the pods, in the same namespace. Needs the control plane
# (start-cluster.sh, which installs the Gateway API CRDs), the node binaries (build-e2e-bins.sh
# node) and the Debian packages of install-deps.sh.
#
# The network rule: nothing here contacts an address other than 127.0.0.1 and the addresses of the
# namespace created here. The namespace has no interface to the host at all; unix sockets cross:
#   netns 0.0.0.0:<apiserver port> -socat-> $NODE_STATE/api.sock -socat-> host 127.0.0.1:<apiserver port>
#   host 127.0.0.1:$E2E_NODE_PROMETHEUS_PORT -socat-> $NODE_STATE/prom.sock -socat-> netns 127.0.0.1:9090
# Pods reach the API server through the `kubernetes` Service (10.96.0.1), whose EndpointSlice
# points at the node's address in the namespace, where the first socat listens.
#
# containerd and kubelet share a private mount namespace (held by a `sleep` started here), so the
# mounts of pods (rootfs, volumes, pod network namespaces) never appear on the host and vanish with
# the last process of that namespace. Pods' cgroups live under $NODE_CGROUP_ROOT.
#
# Idempotent: with the node already up it only checks it. stop-node.sh removes everything.
source "$(dirname "$0")/lib.sh"

TIMEOUT=${E2E_START_TIMEOUT:-90}
T0=$(date +%s)
NODE_BIN=$(kubelet_bin_dir)
CTRD_BIN=$(containerd_bin_dir)
PKI=$E2E_STATE/pki
NS=$E2E_NODE_NETNS
export PATH KUBECONFIG=$E2E_STATE/kubeconfig
PATH=$(e2e_path)

for b in "$NODE_BIN/kubelet" "$NODE_BIN/kube-proxy" "$CTRD_BIN/containerd" "$CTRD_BIN/containerd-shim-runc-v2" \
  "$CTRD_BIN/ctr" "$(coredns_bin_dir)/coredns" "$(traefik_bin_dir)/traefik"; do
  [ -x "$b" ] || die "$b missing: run e2e/scripts/build-e2e-bins.sh node"
done
for b in runc socat nft conntrack ip nsenter unshare prometheus openssl; do
  command -v "$b" >/dev/null || die "$b missing: run e2e/scripts/install-deps.sh"
done
[ -x /usr/lib/cni/bridge ] || die "CNI plugins missing: run e2e/scripts/install-deps.sh"
[ -s "$PKI/ca.key" ] || die "no cluster PKI in $PKI: run e2e/scripts/start-cluster.sh first"
kubectl get --raw /readyz >/dev/null 2>&1 || die "the API server is not up: run e2e/scripts/start-cluster.sh first"
mkdir -p "$E2E_STATE"/{pids,logs} "$NODE_STATE"

# ---------------------------------------------------------------------------------------------
# Credentials: the kubelet as system:node:<name> (Node authorizer), kube-proxy as
# system:kube-proxy (the default system:node-proxier binding); CoreDNS and e2e-pod-sd read the API
# with the admin kubeconfig of the test cluster.
node_cert() { # node_cert NAME SUBJECT: a client certificate of the cluster's CA (lib.sh's sign_cert)
  [ -s "$NODE_STATE/pki/$1.crt" ] && return
  mkdir -p "$NODE_STATE/pki"
  sign_cert "$PKI" "$NODE_STATE/pki" "$1" "$2" client
}
node_kubeconfig() { # node_kubeconfig NAME -> $NODE_STATE/NAME.kubeconfig (server on the netns side of the bridge)
  cat >"$NODE_STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "https://127.0.0.1:$E2E_APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}}]
users: [{name: $1, user: {client-certificate: "$NODE_STATE/pki/$1.crt", client-key: "$NODE_STATE/pki/$1.key"}}]
contexts: [{name: $1, context: {cluster: e2e, user: $1}}]
current-context: $1
EOF
  chmod 600 "$NODE_STATE/$1.kubeconfig"
}
node_cert kubelet "/O=system:nodes/CN=system:node:$E2E_NODE_NAME"
node_cert kube-proxy "/CN=system:kube-proxy"
node_cert gateway "/CN=phaseloop-e2e-gateway" # the RBAC of manifests/gateway.yaml.tmpl
node_kubeconfig kubelet
node_kubeconfig kube-proxy
node_kubeconfig gateway

# ---------------------------------------------------------------------------------------------
# Every process starts with lib.sh's launch, in a session of its own (setsid), so its process
# group is stopped with it (socat's per-connection children).
nsx() { echo nsenter "--net=/run/netns/$NS"; } # run in the node's network namespace
wait_until() { # wait_until NAME CHECK...
  local name=$1 t0
  shift
  t0=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    running "$name" >/dev/null || fail "$name" "process exited"
    [ $(($(date +%s) - t0)) -lt "$TIMEOUT" ] || fail "$name" "not healthy after ${TIMEOUT}s"
    sleep 0.3
  done
  log "$name: healthy after $(($(date +%s) - t0))s"
}

# ---------------------------------------------------------------------------------------------
# The network namespace: loopback and the node's address, forwarding on; no link to the host.
if [ ! -e "/run/netns/$NS" ]; then
  ip netns add "$NS"
  log "netns $NS: created"
fi
ip -n "$NS" link set lo up
ip -n "$NS" addr replace "$E2E_NODE_IP/32" dev lo
# Service addresses need a route for connections from the namespace itself (kubelet probes, the
# traffic generator): kube-proxy's output DNAT happens after the first route lookup. lo keeps
# them inside; after DNAT the packets are routed to the pod bridge.
ip -n "$NS" route replace "$E2E_SERVICE_CIDR" dev lo
# Network sysctls are per namespace: written from inside it (no procps needed).
nsysctl() { nsenter "--net=/run/netns/$NS" sh -c "echo $2 >/proc/sys/$1" 2>/dev/null; }
nsysctl net/ipv4/ip_forward 1 || die "cannot enable forwarding in $NS"
# Pod-to-Service-to-pod on the same bridge: bridged packets go through conntrack, so replies are
# translated back (br_netfilter; the setting is per network namespace).
nsysctl net/bridge/bridge-nf-call-iptables 1 ||
  log "warning: net.bridge.bridge-nf-call-iptables not available (br_netfilter): pod -> Service -> pod on the node may fail"

# The pods' cgroup root under every hierarchy (a v1 cpuset needs its cpus/mems filled in).
for h in $(node_cgroup_mounts); do
  mkdir -p "$h$NODE_CGROUP_ROOT"
  if [ -f "$h/cpuset.cpus" ] && [ -f "$h$NODE_CGROUP_ROOT/cpuset.cpus" ]; then
    cat "$h/cpuset.cpus" >"$h$NODE_CGROUP_ROOT/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$NODE_CGROUP_ROOT/cpuset.mems"
  fi
done

# ---------------------------------------------------------------------------------------------
# Bridges to the API server: one unix socket, a socat on each side.
PREFIX="" launch node-api-host "$(command -v socat)" \
  "UNIX-LISTEN:$NODE_STATE/api.sock,fork,unlink-early,mode=600" "TCP:127.0.0.1:$E2E_APISERVER_PORT"
wait_until node-api-host test -S "$NODE_STATE/api.sock"
PREFIX=$(nsx) launch node-api "$(command -v socat)" \
  "TCP-LISTEN:$E2E_APISERVER_PORT,fork,reuseaddr" "UNIX-CONNECT:$NODE_STATE/api.sock"
check_api_in_netns() {
  $(nsx) curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$E2E_APISERVER_PORT/readyz"
}
wait_until node-api check_api_in_netns

# ---------------------------------------------------------------------------------------------
# The Gateway: Traefik's kubernetesGateway provider reads GatewayClasses, Gateways, routes,
# Services and EndpointSlices through the bridge (its own identity and RBAC), and sends each
# request straight to a ready pod's address on the bridge, not through kube-proxy. It implements
# the GatewayClass phaseloop-e2e and serves the Gateway $E2E_GATEWAY_NAMESPACE/$E2E_GATEWAY_NAME: one
# HTTP listener on port $E2E_GATEWAY_PORT (the node's address, inside the namespace), routes from
# every namespace. Ping and its API (the routers and weighted services it built, which the tests
# read) on the namespace's 127.0.0.1:$E2E_GATEWAY_ADMIN_PORT; no dashboard, no version check and no
# usage report, so it contacts nothing but the API server. It needs none of the node's other
# components: started here, waited for at the end.
sed -e "s|@USER@|phaseloop-e2e-gateway|g" -e "s|@NAMESPACE@|$E2E_GATEWAY_NAMESPACE|g" \
  -e "s|@NAME@|$E2E_GATEWAY_NAME|g" -e "s|@PORT@|$E2E_GATEWAY_PORT|g" \
  "$E2E_ROOT/manifests/gateway.yaml.tmpl" | kubectl apply -f - >/dev/null
KUBECONFIG=$NODE_STATE/gateway.kubeconfig PREFIX=$(nsx) launch node-gateway "$(traefik_bin_dir)/traefik" \
  --global.checkNewVersion=false --global.sendAnonymousUsage=false \
  --entryPoints.web.address=":$E2E_GATEWAY_PORT" \
  --entryPoints.traefik.address="127.0.0.1:$E2E_GATEWAY_ADMIN_PORT" \
  --ping=true --api.insecure=true --api.dashboard=false \
  --providers.kubernetesGateway=true --providers.kubernetesGateway.statusAddress.ip="$E2E_NODE_IP" \
  --log.level=INFO --log.noColor=true

# ---------------------------------------------------------------------------------------------
# The mount namespace of containerd, kubelet and the pods.
PREFIX="unshare --mount --propagation slave" launch node-mntns "$(command -v sleep)" infinity
MNT_PID=$(running node-mntns) || fail node-mntns "process exited"
own_mntns() { [ "$(readlink "/proc/$MNT_PID/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]; }
wait_until node-mntns own_mntns
NODE_NSENTER="nsenter --mount=/proc/$MNT_PID/ns/mnt --net=/run/netns/$NS"

# containerd: its own root, state, socket and CNI dirs; cgroupfs; the local pause image.
# restrict_oom_score_adj: this machine's root lacks CAP_SYS_RESOURCE, so runc cannot set the
# negative oom_score_adj of sandboxes (-998) and Guaranteed pods ("nsexec: failed to update
# /proc/self/oom_score_adj: Permission denied"); containerd clamps them to its own (0). CNI: a
# bridge with host-local addresses (loopback is added by containerd itself). No portmap: Debian's
# 1.1 plugin needs iptables, and no pod here uses a hostPort.
mkdir -p "$NODE_STATE/cni/net.d" "$NODE_RUN_DIR"
cat >"$NODE_STATE/cni/net.d/10-phaseloop.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "phaseloop-node",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$E2E_NODE_POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$NODE_STATE/cni/ipam"}}
  ]
}
EOF
cat >"$NODE_STATE/containerd.toml" <<EOF
version = 3
root = "$NODE_STATE/containerd/root"
state = "$NODE_STATE/containerd/state"
[grpc]
  address = "$NODE_STATE/containerd.sock"
[ttrpc]
  address = "$NODE_STATE/containerd.sock.ttrpc"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "$NODE_RUN_DIR/s"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$E2E_IMAGE_PREFIX/pause:1"
[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$NODE_STATE/cni/net.d"
EOF
# The shim is found on PATH.
PATH="$CTRD_BIN:$PATH" PREFIX=$NODE_NSENTER launch node-containerd "$CTRD_BIN/containerd" \
  --config "$NODE_STATE/containerd.toml" --log-level warn
CTR=("$CTRD_BIN/ctr" --address "$NODE_STATE/containerd.sock" -n k8s.io)
wait_until node-containerd "${CTR[@]}" version

# The images of the node (pause first: no pod starts without it).
bash "$E2E_ROOT/scripts/build-images.sh" import >/dev/null

# ---------------------------------------------------------------------------------------------
# kubelet: cgroup v1 allowed explicitly (failCgroupV1), cgroupfs, everything under $NODE_STATE;
# tainted and labelled so that only pods asking for it land here (kwok stays the default node).
cat >"$NODE_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $NODE_CGROUP_ROOT
containerRuntimeEndpoint: unix://$NODE_STATE/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$E2E_NODE_IP]
resolvConf: ""
podLogsDir: $NODE_STATE/pod-logs
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
failSwapOn: false
registerWithTaints:
- {key: phaseloop.dev/real-node, value: "true", effect: NoSchedule}
# A test machine's disk and memory run high: evict only near the end, and never collect the
# images imported here (no registry to pull them from again).
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
EOF
PREFIX=$NODE_NSENTER launch node-kubelet "$NODE_BIN/kubelet" \
  --config="$NODE_STATE/kubelet.yaml" --kubeconfig="$NODE_STATE/kubelet.kubeconfig" \
  --root-dir="$NODE_STATE/kubelet" --cert-dir="$NODE_STATE/kubelet/pki" \
  --hostname-override="$E2E_NODE_NAME" --node-ip="$E2E_NODE_IP" \
  --node-labels="phaseloop.dev/real-node=true" --v=1
check_kubelet() { $(nsx) curl -fsS --max-time 3 http://127.0.0.1:10248/healthz; }
wait_until node-kubelet check_kubelet

# kube-proxy (nftables) for every Service; its rules and conntrack entries stay in the namespace.
# Zero conntrack settings: leave the kernel's (host-wide) values alone.
PREFIX=$(nsx) launch node-kube-proxy "$NODE_BIN/kube-proxy" \
  --kubeconfig="$NODE_STATE/kube-proxy.kubeconfig" --hostname-override="$E2E_NODE_NAME" \
  --proxy-mode=nftables --cluster-cidr="$E2E_NODE_POD_CIDR" --nodeport-addresses="$E2E_NODE_IP/32" \
  --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
  --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --v=1
check_kube_proxy() { $(nsx) curl -fsS --max-time 3 http://127.0.0.1:10256/healthz; }
wait_until node-kube-proxy check_kube_proxy

# The `kubernetes` Service for pods: the API server runs with --endpoint-reconciler-type=none, so
# this slice is the only one, and it points at the bridge on the node's address.
kubectl apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-real-node
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: phaseloop-e2e}
addressType: IPv4
endpoints: [{addresses: ["$E2E_NODE_IP"], conditions: {ready: true}}]
ports: [{name: https, port: $E2E_APISERVER_PORT, protocol: TCP}]
EOF

# CoreDNS for cluster names (<svc>.<ns>.svc.cluster.local) on the node's address, reading Services
# through the bridge; names outside the cluster get NXDOMAIN (there is nothing to forward to).
cat >"$NODE_STATE/Corefile" <<EOF
.:53 {
    bind $E2E_NODE_IP 127.0.0.1
    errors
    health 127.0.0.1:8081
    ready 127.0.0.1:8182
    kubernetes cluster.local in-addr.arpa {
        kubeconfig $E2E_STATE/kubeconfig phaseloop-e2e
        pods insecure
        ttl 5
    }
    cache 5
}
EOF
PREFIX=$(nsx) launch node-coredns "$(coredns_bin_dir)/coredns" -conf "$NODE_STATE/Corefile"
check_coredns() { $(nsx) curl -fsS --max-time 3 http://127.0.0.1:8182/ready; }
wait_until node-coredns check_coredns

# Prometheus inside the namespace scrapes the node's pods annotated prometheus.io/scrape=true,
# labelling series with namespace, pod, app and version. Debian's Prometheus has no Kubernetes
# service discovery: e2e-pod-sd (on the host; it only talks to the API server) watches the node's
# pods and keeps Prometheus' file_sd targets up to date.
POD_SD=${E2E_POD_SD_BIN:-$REPO_ROOT/target/x86_64-unknown-linux-gnu/release/e2e-pod-sd}
[ -x "$POD_SD" ] || die "$POD_SD missing: run e2e/scripts/build-images.sh"
PREFIX="" launch node-pod-sd "$POD_SD" --node "$E2E_NODE_NAME" --out "$NODE_STATE/pod-targets.json"
wait_until node-pod-sd test -s "$NODE_STATE/pod-targets.json"
sed -e "s|@SD_FILE@|$NODE_STATE/pod-targets.json|g" "$E2E_ROOT/manifests/node-prometheus.yml.tmpl" >"$NODE_STATE/prometheus.yml"
PREFIX=$(nsx) launch node-prometheus "$(command -v prometheus)" \
  --config.file="$NODE_STATE/prometheus.yml" --storage.tsdb.path="$NODE_STATE/prometheus" \
  --storage.tsdb.retention.time=1d --web.listen-address=0.0.0.0:9090 --web.enable-lifecycle
check_node_prometheus() { $(nsx) curl -fsS --max-time 3 http://127.0.0.1:9090/-/ready; }
wait_until node-prometheus check_node_prometheus
PREFIX=$(nsx) launch node-prom "$(command -v socat)" \
  "UNIX-LISTEN:$NODE_STATE/prom.sock,fork,unlink-early,mode=600" "TCP:127.0.0.1:9090"
wait_until node-prom test -S "$NODE_STATE/prom.sock"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! running node-prom-host >/dev/null && port_busy "$E2E_NODE_PROMETHEUS_PORT"; then
  die "127.0.0.1:$E2E_NODE_PROMETHEUS_PORT is in use (E2E_NODE_PROMETHEUS_PORT)"
fi
PREFIX="" launch node-prom-host "$(command -v socat)" \
  "TCP-LISTEN:$E2E_NODE_PROMETHEUS_PORT,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$NODE_STATE/prom.sock"
wait_until node-prom-host curl -fsS --max-time 3 "http://127.0.0.1:$E2E_NODE_PROMETHEUS_PORT/-/ready"

# The Gateway, started above: serving, and its Gateway Programmed.
check_gateway() { $(nsx) curl -fsS --max-time 3 "http://127.0.0.1:$E2E_GATEWAY_ADMIN_PORT/ping"; }
wait_until node-gateway check_gateway
# Programmed: Traefik accepted the class and the Gateway and serves its listener.
check_gateway_programmed() {
  kubectl wait --for=condition=Programmed --timeout=2s -n "$E2E_GATEWAY_NAMESPACE" "gateway/$E2E_GATEWAY_NAME"
}
wait_until node-gateway check_gateway_programmed

# The node registers itself; Ready once the runtime and CNI are up.
t1=$(date +%s)
until kubectl wait --for=condition=Ready "node/$E2E_NODE_NAME" --timeout=5s >/dev/null 2>&1; do
  running node-kubelet >/dev/null || fail node-kubelet "process exited"
  [ $(($(date +%s) - t1)) -lt "$TIMEOUT" ] || fail node-kubelet "node $E2E_NODE_NAME not Ready after ${TIMEOUT}s"
  sleep 1
done
log "real node $E2E_NODE_NAME ready in $(($(date +%s) - T0))s (netns $NS, node IP $E2E_NODE_IP," \
  "pods $E2E_NODE_POD_CIDR, Gateway http://$E2E_NODE_IP:$E2E_GATEWAY_PORT," \
  "Prometheus http://127.0.0.1:$E2E_NODE_PROMETHEUS_PORT)"
