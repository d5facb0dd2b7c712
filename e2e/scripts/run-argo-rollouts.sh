#!/usr/bin/env bash
# The Argo Rollouts controller as a host process against the e2e cluster, for the side-by-side
# benchmark (`make bench BENCH=peers`); never used by `make test`. Binary: build-e2e-bins.sh
# argo-rollouts (cached outside the repository).
#   run-argo-rollouts.sh install   CRDs (from the module cache), namespace argo-rollouts, its
#                                  ServiceAccount, ClusterRole and binding, config ConfigMap and
#                                  notification Secret (upstream's install.yaml without the
#                                  Deployment and metrics Service), and
#                                  $E2E_STATE/argo-rollouts.kubeconfig: that ServiceAccount's token
#   run-argo-rollouts.sh start     stop a running one, start, wait until it leads with synced caches
#   run-argo-rollouts.sh stop      SIGTERM (SIGKILL after 10s), then drop its leader Lease
# PID: $E2E_STATE/pids/argo-rollouts.pid (stop-cluster.sh stops it too); log:
# $E2E_STATE/logs/argo-rollouts.log. Cluster-wide (not --namespaced), like phaseloop; leader
# election on (its default), as phaseloop's with the chart's ServiceAccount.
# Ports: ARGO_ROLLOUTS_METRICS_PORT (default 18090; Prometheus scrapes it as job argo-rollouts, as it
# scrapes the operator) and ARGO_ROLLOUTS_HEALTHZ_PORT (default 18091). Upstream binds both on
# 0.0.0.0 (hard-coded); only 127.0.0.1 is ever contacted.
source "$(dirname "$0")/lib.sh"
eval "$("$E2E_ROOT/scripts/env.sh")"
NS=argo-rollouts
LOGFILE=$(log_file argo-rollouts)
KUBECONFIG_SA=$E2E_STATE/argo-rollouts.kubeconfig
BIN=$(argo_rollouts_bin_dir)/rollouts-controller
METRICS_PORT=$ARGO_ROLLOUTS_METRICS_PORT # lib.sh: 18090 unless set
HEALTHZ_PORT=$ARGO_ROLLOUTS_HEALTHZ_PORT # lib.sh: 18091 unless set
LEASE=argo-rollouts-controller-lock

# Upstream's module, as the go command resolved it for the wrapper (download only, no build).
module_dir() {
  (cd "$E2E_ROOT/tools/argo-rollouts" && GOTOOLCHAIN=$ARGO_ROLLOUTS_GOTOOLCHAIN \
    go mod download -json "github.com/argoproj/argo-rollouts@$ARGO_ROLLOUTS_VERSION") |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

install() {
  local dir token server ca
  dir=$(module_dir)
  # Server-side: the Rollout CRD is too large for client-side apply's last-applied annotation.
  # The CRD files only (the directory also holds a kustomization.yaml).
  local crds=()
  for f in "$dir"/manifests/crds/*-crd.yaml; do crds+=(-f "$f"); done
  kubectl apply --server-side --force-conflicts "${crds[@]}" >/dev/null
  # A CRD without status yet makes `kubectl wait` fail at once rather than wait: retried.
  for _ in $(seq 60); do
    kubectl wait --for=condition=Established --timeout=5s crd/rollouts.argoproj.io crd/analysisruns.argoproj.io \
      crd/analysistemplates.argoproj.io crd/clusteranalysistemplates.argoproj.io crd/experiments.argoproj.io \
      >/dev/null 2>&1 && break
    sleep 1
  done
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  # Upstream's install.yaml minus the CRDs (applied above), the Deployment and the metrics Service.
  python3 - "$dir/manifests/install.yaml" <<'PY' | kubectl apply -n "$NS" --server-side --force-conflicts -f - >/dev/null
import sys
keep = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Secret"}
docs = open(sys.argv[1]).read().split("\n---\n")
print("\n---\n".join(d for d in docs if any(f"\nkind: {k}\n" in "\n" + d + "\n" for k in keep)))
PY
  token=$(kubectl create token argo-rollouts -n "$NS" --duration=12h)
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  (
    umask 077
    cat >"$KUBECONFIG_SA" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: argo-rollouts, user: {token: "$token"}}]
contexts: [{name: argo-rollouts, context: {cluster: e2e, user: argo-rollouts, namespace: $NS}}]
current-context: argo-rollouts
YAML
  )
  log "argo-rollouts $ARGO_ROLLOUTS_VERSION installed: CRDs, RBAC; credentials: ServiceAccount $NS/argo-rollouts ($KUBECONFIG_SA)"
}

stop() {
  stop_component argo-rollouts
  # Upstream does not release its Lease on SIGTERM (ReleaseOnCancel is off), so a new process would
  # wait out the old one's 15s. Nothing holds it now: drop it, as start-cluster.sh does for kwok.
  kubectl delete lease "$LEASE" -n "$NS" --ignore-not-found >/dev/null
}

start() {
  stop
  [ -x "$BIN" ] || die "$BIN missing: e2e/scripts/build-e2e-bins.sh argo-rollouts"
  [ -f "$KUBECONFIG_SA" ] || die "$KUBECONFIG_SA missing: $0 install"
  mkdir -p "$E2E_STATE/pids" "$E2E_STATE/logs"
  local from
  from=1
  if [ -f "$LOGFILE" ]; then from=$(($(wc -l <"$LOGFILE") + 1)); fi
  # POD_NAMESPACE: where it finds its ConfigMap, notification Secret and leader Lease.
  POD_NAMESPACE=$NS launch argo-rollouts "$BIN" --kubeconfig="$KUBECONFIG_SA" \
    --metricsPort="$METRICS_PORT" --healthzPort="$HEALTHZ_PORT"
  for _ in $(seq 240); do
    # awk reads the whole file: `tail | grep -q` fails under pipefail once grep stops early.
    if awk -v f="$from" 'NR >= f && /msg="Started controller"/ {found = 1} END {exit !found}' "$LOGFILE"; then
      log "argo-rollouts ready and leading (pid $(running argo-rollouts), log $LOGFILE)"
      return 0
    fi
    running argo-rollouts >/dev/null || { tail -n 30 "$LOGFILE" >&2; die "argo-rollouts exited"; }
    sleep 0.25
  done
  tail -n 30 "$LOGFILE" >&2
  die "argo-rollouts not leading with synced caches after 60s"
}

case "${1:-start}" in
install) install ;;
start) start ;;
stop) stop ;;
*) die "usage: $0 [install|start|stop]" ;;
esac
