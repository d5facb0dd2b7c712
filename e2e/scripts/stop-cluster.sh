#!/usr/bin/env bash
# Stops the e2e cluster: exactly the processes recorded in $E2E_STATE/pids, never by name. Extra
# ones such as the operator go first, then the cluster in reverse start order; SIGTERM first,
# SIGKILL after a grace period. Data stays for a warm restart unless --purge removes $E2E_STATE.
#
# Usage: stop-cluster.sh [--purge]
source "$(dirname "$0")/lib.sh"

PURGE=false
case "${1:-}" in
  "") ;;
  --purge) PURGE=true ;;
  *) die "usage: $0 [--purge]" ;;
esac

# The real node first (its pods, namespaces and bridges), while the API server is still up.
if [ -e "$E2E_STATE/pids/node-mntns.pid" ] || [ -e "/run/netns/$E2E_NODE_NETNS" ] || [ -d "$NODE_STATE/containerd" ]; then
  bash "$E2E_ROOT/scripts/stop-node.sh"
fi

if [ -d "$E2E_STATE/pids" ]; then
  # First whatever else recorded a pid file there (the operator of run-operator.sh), as it talks
  # to the cluster, then the cluster in reverse start order.
  names=()
  for f in "$E2E_STATE"/pids/*.pid; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .pid)
    [[ " ${E2E_COMPONENTS[*]} " == *" $n "* ]] || names+=("$n")
  done
  for ((i = ${#E2E_COMPONENTS[@]} - 1; i >= 0; i--)); do names+=("${E2E_COMPONENTS[i]}"); done
  for name in "${names[@]}"; do stop_component "$name"; done
fi

if $PURGE; then
  rm -rf "$E2E_STATE"
  log "removed $E2E_STATE"
fi
