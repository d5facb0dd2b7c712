#!/usr/bin/env bash
# `make bench`: the benchmarks on the local control plane, with a release build of the operator
# as a host process. Starts the cluster when it is not running (and stops it afterwards), like
# run-e2e.sh. Results: stdout and target/bench/*.json.
#   run-bench.sh [phaseloop-bench arguments]     default: every benchmark (fleet, scaling) with its defaults
# e.g. run-bench.sh fleet --size 100/1000 --size 300/3000
# `peers` (side by side with Argo Rollouts) also builds Argo Rollouts' controller (cached), installs
# its CRDs and RBAC and phaseloop's chart, and runs each controller under its own ServiceAccount,
# so the API server's audit log tells their requests apart. It is never part of the default set.
source "$(dirname "$0")/lib.sh"
S=$E2E_ROOT/scripts
PEERS=
if [ "${1:-}" = peers ]; then PEERS=1; fi

bash "$S/install-deps.sh"
bash "$S/build-e2e-bins.sh"
if [ -n "$PEERS" ]; then bash "$S/build-e2e-bins.sh" argo-rollouts; fi
cargo build --release --bin phaseloop-operator --bin phaseloop-bench

STARTED_CLUSTER=
APISERVER_PID=$E2E_STATE/pids/kube-apiserver.pid
if ! { [ -f "$APISERVER_PID" ] && kill -0 "$(cat "$APISERVER_PID")" 2>/dev/null; }; then STARTED_CLUSTER=1; fi
cleanup() {
  bash "$S/run-operator.sh" stop || true
  if [ -n "$PEERS" ]; then bash "$S/run-argo-rollouts.sh" stop || true; fi
  if [ -n "$STARTED_CLUSTER" ] && [ -z "${E2E_KEEP_CLUSTER:-}" ]; then bash "$S/stop-cluster.sh" || true; fi
}
trap cleanup EXIT
bash "$S/start-cluster.sh"
eval "$("$S/env.sh")"
kubectl apply -f "$REPO_ROOT/crds/" >/dev/null
for _ in $(seq 60); do
  kubectl wait --for=condition=Established --timeout=5s crd/environments.phaseloop.dev crd/releases.phaseloop.dev \
    >/dev/null 2>&1 && break
  sleep 1
done
if [ -n "$PEERS" ]; then
  bash "$S/install-chart.sh"            # phaseloop as its chart's ServiceAccount
  bash "$S/run-argo-rollouts.sh" install # Argo Rollouts' CRDs, RBAC and ServiceAccount
fi
# The release binary, also for the restarts the fleet benchmark makes.
export PHASELOOP_OPERATOR_BIN=$REPO_ROOT/target/release/phaseloop-operator
bash "$S/run-operator.sh" start

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
log "command: make bench${*:+ BENCH=\"$*\"}"
if [ $# -gt 0 ]; then
  "$REPO_ROOT/target/release/phaseloop-bench" "$@" --out "$REPO_ROOT/target/bench/$1.json"
else
  for b in fleet scaling; do
    "$REPO_ROOT/target/release/phaseloop-bench" "$b" --out "$REPO_ROOT/target/bench/$b.json"
  done
fi
