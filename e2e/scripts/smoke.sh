#!/usr/bin/env bash
# Proves the started e2e cluster works end to end: versions, a Deployment becomes Available (kwok
# pods), a Job completes, RBAC and ServiceAccount tokens work, namespace deletion finishes, and
# Prometheus scrapes the pushgateway (target up, pushed sample queryable). Exits non-zero on the
# first failure. Only 127.0.0.1 is contacted.
source "$(dirname "$0")/lib.sh"
eval "$("$E2E_ROOT/scripts/env.sh")"
T0=$(date +%s)
NS=e2e-smoke
PKI=$E2E_STATE/pki
API=https://127.0.0.1:$E2E_APISERVER_PORT

[ -s "$KUBECONFIG" ] || die "no $KUBECONFIG: run e2e/scripts/start-cluster.sh first"
on_error() {
  log "smoke FAILED; events in $NS:"
  kubectl get events -n "$NS" --sort-by=.lastTimestamp 2>&1 | tail -n 20 >&2 || true
  log "component logs: $E2E_STATE/logs/"
}
trap 'on_exit $?' EXIT
on_exit() { [ "$1" = 0 ] || on_error; }
ok() { log "ok: $*"; }

# Versions: the ldflags made it into the binaries (kubectl warns on skew otherwise).
[ "$(kubectl version -o yaml | grep -c "gitVersion: $KUBE_VERSION")" = 2 ] ||
  die "kubectl or server is not $KUBE_VERSION: $(kubectl version 2>&1)"
ok "kubectl and server are $KUBE_VERSION"

kubectl delete namespace "$NS" --ignore-not-found --timeout=90s >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl wait --for=create serviceaccount/default -n "$NS" --timeout=60s >/dev/null

# Images are never pulled (kwok runs nothing), so any name will do.
kubectl create deployment web -n "$NS" --image=registry.invalid/web:1 --replicas=2 >/dev/null
kubectl rollout status deployment/web -n "$NS" --timeout=60s >/dev/null
kubectl wait --for=condition=Available deployment/web -n "$NS" --timeout=60s >/dev/null
ok "Deployment web Available ($(kubectl get deploy web -n "$NS" -o jsonpath='{.status.readyReplicas}') ready)"

kubectl create job once -n "$NS" --image=registry.invalid/job:1 -- true >/dev/null
kubectl wait --for=condition=Complete job/once -n "$NS" --timeout=60s >/dev/null
ok "Job once Complete"

# RBAC: admin may, a bare ServiceAccount may not.
[ "$(kubectl auth can-i create deployments -n "$NS")" = yes ] || die "admin cannot create deployments"
if kubectl auth can-i list secrets -n "$NS" --as="system:serviceaccount:$NS:default" >/dev/null; then
  die "RBAC not enforced: default ServiceAccount may list secrets"
fi
ok "kubectl auth can-i (admin yes, default SA no)"

# A TokenRequest token (signed with the SA key) authenticates as the ServiceAccount.
TOKEN=$(kubectl create token default -n "$NS" --duration=10m)
who=$(curl -fsS --max-time 10 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -X POST "$API/apis/authentication.k8s.io/v1/selfsubjectreviews" \
  -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}')
grep -Eq "\"username\": *\"system:serviceaccount:$NS:default\"" <<<"$who" || die "SA token not accepted: $who"
ok "ServiceAccount token authenticates"

# Namespace deletion needs KCM's namespace controller and garbage collector.
kubectl delete namespace "$NS" --timeout=90s >/dev/null
ok "namespace deleted"

# Prometheus: the pushgateway target is up and a pushed sample arrives.
printf 'phaseloop_smoke_value{deployment="web"} 42\n' |
  curl -fsS --max-time 10 --data-binary @- "$PUSHGATEWAY_URL/metrics/job/smoke/instance/web"
deadline=$(($(date +%s) + 60))
until curl -fsS --max-time 5 "$PROMETHEUS_URL/api/v1/targets?state=active" |
  grep -q "\"scrapeUrl\":\"$PUSHGATEWAY_URL/metrics\"[^}]*\"health\":\"up\""; do
  [ "$(date +%s)" -lt "$deadline" ] || die "pushgateway target not up in Prometheus"
  sleep 1
done
ok "Prometheus target pushgateway up"
until curl -fsS --max-time 5 "$PROMETHEUS_URL/api/v1/query" \
  --data-urlencode 'query=phaseloop_smoke_value{job="smoke",instance="web"}' | grep -q '"42"'; do
  [ "$(date +%s)" -lt "$deadline" ] || die "pushed sample not queryable in Prometheus"
  sleep 1
done
ok "pushed sample queryable with its own job/instance labels (honor_labels)"
curl -fsS --max-time 10 -X DELETE "$PUSHGATEWAY_URL/metrics/job/smoke/instance/web"

log "smoke passed in $(($(date +%s) - T0))s"
