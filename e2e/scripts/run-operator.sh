#!/usr/bin/env bash
# Starts the operator as a host process against the e2e cluster, in the background, and waits for
# /readyz. It is started and stopped like the cluster's components (lib.sh's launch and
# stop_component): its PID goes to $E2E_STATE/pids/operator.pid (so stop-cluster.sh stops it too)
# and its log to $E2E_STATE/logs/operator.log. With $E2E_STATE/operator.kubeconfig (install-chart.sh) it
# authenticates as the chart's ServiceAccount, else with the admin kubeconfig.
#   run-operator.sh [start|stop|crash]     (default: start; crash = SIGKILL, then start again)
source "$(dirname "$0")/lib.sh"
eval "$("$E2E_ROOT/scripts/env.sh")"
LOGFILE=$(log_file operator)
BIN=${PHASELOOP_OPERATOR_BIN:-$REPO_ROOT/target/debug/phaseloop-operator}

stop() { stop_component operator; }

case "${1:-start}" in
stop) stop; exit 0 ;;
start) ;;
crash)
  # No graceful shutdown: what a node failure or an OOM kill does.
  if pid=$(running operator); then
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done # its port is free again
  fi
  rm -f "$(pid_file operator)" "$E2E_STATE/pids/operator.exe"
  ;;
*) die "usage: $0 [start|stop|crash]" ;;
esac

stop
[ -x "$BIN" ] || die "$BIN missing: cargo build --bin phaseloop-operator"
mkdir -p "$E2E_STATE/pids" "$E2E_STATE/logs"
# As the Helm chart's ServiceAccount, with leader election on the chart's Lease namespace, when
# install-chart.sh has installed it; else with the admin kubeconfig and no election.
OPERATOR_KUBECONFIG=$E2E_STATE/operator.kubeconfig
LEADER_ELECTION=true
# Credentials of a chart install that is gone (uninstalled, its ServiceAccount deleted) or of an
# earlier cluster no longer authenticate: the chart is not there to speak for, so admin it is.
if [ -f "$OPERATOR_KUBECONFIG" ] && ! kubectl --kubeconfig "$OPERATOR_KUBECONFIG" auth whoami >/dev/null 2>&1; then
  log "operator credentials in $OPERATOR_KUBECONFIG no longer authenticate: removed"
  rm -f "$OPERATOR_KUBECONFIG"
fi
if [ ! -f "$OPERATOR_KUBECONFIG" ]; then OPERATOR_KUBECONFIG=$KUBECONFIG LEADER_ELECTION=false; fi
# Gateway API routing when the cluster has the HTTPRoute CRD (every local cluster does).
GATEWAY_API=false
if kubectl get crd httproutes.gateway.networking.k8s.io >/dev/null 2>&1; then GATEWAY_API=true; fi
(
  export KUBECONFIG=$OPERATOR_KUBECONFIG PHASELOOP_METRICS_ADDR=127.0.0.1:$PHASELOOP_METRICS_PORT \
    PHASELOOP_GATEWAY_API=${PHASELOOP_GATEWAY_API:-$GATEWAY_API} \
    PHASELOOP_LEADER_ELECTION=$LEADER_ELECTION PHASELOOP_LEASE_NAMESPACE=phaseloop-system \
    PHASELOOP_PROMETHEUS_URL=$PROMETHEUS_URL RUST_LOG=${RUST_LOG:-info,kube=warn}
  launch operator "$BIN"
)
# Ready, and leading: a restart after a crash first waits out the killed process's Lease, and the
# tests that follow expect an operator that reconciles.
for _ in $(seq 120); do
  # The metrics are read whole before grep: `curl | grep -q` fails under pipefail once /metrics is
  # larger than a pipe buffer (grep stops reading, curl gets SIGPIPE), as with a thousand apps.
  if curl -fsS "http://127.0.0.1:$PHASELOOP_METRICS_PORT/readyz" >/dev/null 2>&1 &&
    METRICS=$(curl -fsS "http://127.0.0.1:$PHASELOOP_METRICS_PORT/metrics" 2>/dev/null) &&
    grep -q '^phaseloop_leader 1' <<<"$METRICS"; then
    log "operator ready and leading (pid $(running operator), log $LOGFILE)"
    exit 0
  fi
  running operator >/dev/null || { tail -n 30 "$LOGFILE" >&2; die "operator exited"; }
  sleep 0.5
done
tail -n 30 "$LOGFILE" >&2
die "operator not ready after 60s"
