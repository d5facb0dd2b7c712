#!/usr/bin/env bash
# Stops or starts one component of the running e2e cluster, for fault tests (Prometheus down
# during scaling, the API server restarted mid-rollout).
#   component.sh stop NAME     NAME is one of: etcd kube-apiserver kube-controller-manager
#                              kube-scheduler kwok pushgateway prometheus
#   component.sh start         starts whatever is not running (start-cluster.sh is idempotent)
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
stop)
  [[ " ${E2E_COMPONENTS[*]} " == *" ${2:-} "* ]] || die "usage: $0 stop <${E2E_COMPONENTS[*]}>"
  stop_component "$2"
  ;;
start) bash "$E2E_ROOT/scripts/start-cluster.sh" >/dev/null ;;
*) die "usage: $0 stop NAME | start" ;;
esac
