#!/usr/bin/env bash
# Stops the real node of start-node.sh and leaves nothing behind: its processes, the pods'
# processes and cgroups, containerd's shims, the mount namespace holding every pod mount, the
# network namespace with the pod network, the shim socket dir, and the node's runtime state (its
# certificates stay for a warm start). Processes are found only through what start-node.sh created
# and recorded (pid files, the network namespace, the mount namespace, the cgroup root), never by
# name. With the API server up, the Node object, the `kubernetes` EndpointSlice, the Gateway and its
# GatewayClass are deleted too.
#
# Usage: stop-node.sh          (stop-cluster.sh runs it first)
source "$(dirname "$0")/lib.sh"
NS=$E2E_NODE_NETNS
export KUBECONFIG=$E2E_STATE/kubeconfig PATH
PATH=$(e2e_path)

# kill_group NAME: stop_component, then the rest of its process group (socat's connection children)
kill_group() {
  local pid
  pid=$(running "$1") || { stop_component "$1"; return 0; }
  stop_component "$1"
  kill -KILL -- "-$pid" 2>/dev/null || true
}

# pids_in_ns TYPE INODE_LINK: every process whose TYPE namespace is that one
pids_in_ns() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/$1" 2>/dev/null)" = "$2" ] && echo "${p#/proc/}"
  done
  return 0
}
# pids_in_cgroups: every process in a cgroup under the node's cgroup root (any hierarchy)
pids_in_cgroups() {
  local h
  for h in $(node_cgroup_mounts); do
    [ -d "$h$NODE_CGROUP_ROOT" ] || continue
    find "$h$NODE_CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

NETNS_LINK=
if [ -e "/run/netns/$NS" ]; then NETNS_LINK=$(nsenter --net="/run/netns/$NS" readlink /proc/self/ns/net); fi
MNTNS_LINK=
if pid=$(running node-mntns); then MNTNS_LINK=$(readlink "/proc/$pid/ns/mnt"); fi

# 1. What talks to the API server or serves: Prometheus, the Gateway, CoreDNS, kube-proxy, then the
#    kubelet (so it restarts nothing while the pods go).
for c in node-prom-host node-prom node-prometheus node-pod-sd node-gateway node-coredns node-kube-proxy node-kubelet; do
  kill_group "$c"
done
# 2. The pods: every process in the node's cgroups, at once.
pods=$(pids_in_cgroups)
if [ -n "$pods" ]; then
  # shellcheck disable=SC2086 # a list of pids
  kill -KILL $pods 2>/dev/null || true
  log "node: killed $(wc -w <<<"$pods") pod processes"
fi
# 3. containerd and the API bridge, then whatever is left in the node's namespaces (the shims, a
#    traffic generator).
for c in node-containerd node-api node-api-host; do kill_group "$c"; done
for _ in 1 2 3; do
  left=$( {
    [ -z "$NETNS_LINK" ] || pids_in_ns net "$NETNS_LINK"
    [ -z "$MNTNS_LINK" ] || pids_in_ns mnt "$MNTNS_LINK"
    pids_in_cgroups
  } | sort -u | grep -vx "$(running node-mntns || echo none)" || true)
  [ -n "$left" ] || break
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null || true
  log "node: killed leftover processes $(tr '\n' ' ' <<<"$left")"
  sleep 0.5
done
# 4. The mount namespace (its last process): every pod mount goes with it.
kill_group node-mntns

# 5. cgroups (deepest first), the network namespace, the shim socket dir, runtime state.
for h in $(node_cgroup_mounts); do
  [ -d "$h$NODE_CGROUP_ROOT" ] || continue
  for _ in 1 2 3 4 5; do
    find "$h$NODE_CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$h$NODE_CGROUP_ROOT" ] || break
    sleep 0.2
  done
  [ -d "$h$NODE_CGROUP_ROOT" ] && log "warning: cgroup $h$NODE_CGROUP_ROOT still there"
done
if [ -e "/run/netns/$NS" ]; then
  ip netns del "$NS"
  log "netns $NS: deleted"
fi
rm -rf "$NODE_RUN_DIR"
if [ -d "$NODE_STATE" ]; then
  if grep -qF " $NODE_STATE" /proc/self/mountinfo; then
    die "mounts under $NODE_STATE remain on the host: $(grep -F " $NODE_STATE" /proc/self/mountinfo | head -3)"
  fi
  find "$NODE_STATE" -mindepth 1 -maxdepth 1 ! -name pki -exec rm -rf {} +
fi

# 6. The API objects of the node, when the API server is still up.
if kubectl get --raw /readyz >/dev/null 2>&1; then
  kubectl delete endpointslice kubernetes-real-node -n default --ignore-not-found >/dev/null
  # The Gateway is gone with Traefik: its object (and status) too. Its namespace and RBAC stay.
  kubectl delete gateway "$E2E_GATEWAY_NAME" -n "$E2E_GATEWAY_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete gatewayclass phaseloop-e2e --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete node "$E2E_NODE_NAME" --ignore-not-found --wait=false >/dev/null
fi
log "real node stopped"
