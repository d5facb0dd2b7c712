#!/usr/bin/env bash
# Installs the Helm chart into the e2e cluster the way users do, in a namespace that enforces the
# `restricted` Pod Security Standard (the operator pods are kwok's fakes: the API server still
# admits them, or not, by their spec), and writes $E2E_STATE/operator.kubeconfig: the chart's
# ServiceAccount token, which run-operator.sh then uses. The whole e2e suite thereby runs with the
# chart's RBAC: a missing rule fails the tests that need it.
#   install-chart.sh [extra helm arguments]
source "$(dirname "$0")/lib.sh"
eval "$("$E2E_ROOT/scripts/env.sh")"
NS=${PHASELOOP_NAMESPACE:-phaseloop-system}
HELM=$(helm_bin_dir)/helm

kubectl create namespace "$NS" --dry-run=client -o yaml |
  kubectl label --local -f - pod-security.kubernetes.io/enforce=restricted -o yaml |
  kubectl apply -f - >/dev/null
# CRDs are already applied from crds/ (Helm installs but never upgrades them: same files). The
# cluster admin is also named a status writer (admission.statusWriters, the chart's break-glass
# binding of the verb write-status), though as system:masters it holds every verb anyway: one test
# runs the operator with admin credentials, as `make run` does.
"$HELM" upgrade --install phaseloop "$REPO_ROOT/charts/phaseloop" -n "$NS" --skip-crds --wait --timeout 120s \
  --set prometheus.url="$PROMETHEUS_URL" --set leaderElection.enabled=true --set trafficRouting.gatewayAPI=true \
  --set 'admission.statusWriters={phaseloop-e2e-admin}' "$@" >/dev/null
log "chart installed in $NS (restricted)"

token=$(kubectl create token phaseloop -n "$NS" --duration=12h)
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -z "$ca" ]; then
  ca=$(base64 -w0 <"$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')")
fi
umask 077
cat >"$E2E_STATE/operator.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: phaseloop, user: {token: "$token"}}]
contexts: [{name: phaseloop, context: {cluster: e2e, user: phaseloop}}]
current-context: phaseloop
YAML
log "operator credentials: ServiceAccount $NS/phaseloop ($E2E_STATE/operator.kubeconfig)"
