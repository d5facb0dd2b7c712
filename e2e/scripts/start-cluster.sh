#!/usr/bin/env bash
# Starts the e2e cluster on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok (one fake node), the pushgateway and Prometheus. Everything lives in
# $E2E_STATE (pki/, etcd data, logs/<name>.log, pids/<name>.pid, kubeconfig).
#
# Idempotent: components whose recorded process is alive are only health-checked; dead ones (stale
# pid files) are started again. Data in $E2E_STATE survives a stop, so a second start is warm;
# `stop-cluster.sh --purge` for a fresh cluster. Binaries come from build-e2e-bins.sh.
#
# Pod and Service IPs in this cluster are fake (kwok): nothing may ever connect to them. Every
# endpoint here is on 127.0.0.1.
source "$(dirname "$0")/lib.sh"

TIMEOUT=${E2E_START_TIMEOUT:-90} # per component; kops saw slow apiserver starts on small VMs
T0=$(date +%s)
K8S_BIN=$(k8s_bin_dir)
ETCD_BIN=$(etcd_bin_dir)
KWOK_BIN=$(kwok_bin_dir)
PKI=$E2E_STATE/pki
KUBECONFIG_FILE=$E2E_STATE/kubeconfig
export PATH
PATH=$(e2e_path)

for b in "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager" "$K8S_BIN/kube-scheduler" \
  "$K8S_BIN/kubectl" "$ETCD_BIN/etcd" "$KWOK_BIN/kwok"; do
  [ -x "$b" ] || die "$b missing: run e2e/scripts/build-e2e-bins.sh first"
done
for b in prometheus prometheus-pushgateway openssl curl; do
  command -v "$b" >/dev/null || die "$b missing: run e2e/scripts/install-deps.sh first"
done
mkdir -p "$E2E_STATE"/{pids,logs}

# ---------------------------------------------------------------------------------------------
# PKI (openssl). One CA signs: a loopback serving cert (apiserver, KCM, scheduler), the admin
# client cert (O=system:masters, used by every component and the tests through one kubeconfig),
# and nothing else; the SA key pair signs and verifies ServiceAccount tokens.
make_pki() {
  [ -s "$PKI/sa.pub" ] && return
  log "pki: generating in $PKI"
  rm -rf "$PKI.tmp" && mkdir -p "$PKI.tmp"
  (
    cd "$PKI.tmp"
    cat >ca.cnf <<'EOF'
[req]
distinguished_name = dn
x509_extensions    = v3_ca
prompt             = no
[dn]
CN = phaseloop-e2e-ca
[v3_ca]
basicConstraints       = critical,CA:TRUE
keyUsage               = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier   = hash
EOF
    quiet openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 3650 -config ca.cnf
    sign_cert . . serving "/CN=phaseloop-e2e-loopback" server
    sign_cert . . admin "/O=system:masters/CN=phaseloop-e2e-admin" client
    quiet openssl genrsa -out sa.key 2048
    quiet openssl rsa -in sa.key -pubout -out sa.pub
    chmod 600 ./*.key
  )
  rm -rf "$PKI" && mv "$PKI.tmp" "$PKI" # all or nothing
}

# One admin kubeconfig for the components, kubectl and the Rust tests. Certificates are embedded
# so the file can be copied around; the server is 127.0.0.1 (the cert's IP SAN), not localhost.
make_kubeconfig() {
  local b64='base64 -w0'
  cat >"$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: phaseloop-e2e
  cluster:
    server: https://127.0.0.1:$E2E_APISERVER_PORT
    certificate-authority-data: $($b64 <"$PKI/ca.crt")
users:
- name: phaseloop-e2e-admin
  user:
    client-certificate-data: $($b64 <"$PKI/admin.crt")
    client-key-data: $($b64 <"$PKI/admin.key")
contexts:
- name: phaseloop-e2e
  context: {cluster: phaseloop-e2e, user: phaseloop-e2e-admin}
current-context: phaseloop-e2e
EOF
  chmod 600 "$KUBECONFIG_FILE.tmp"
  mv "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
}

# Prometheus config from the template: the pushgateway (honor_labels keeps the job/instance labels
# the tests push) and the operator running as a host process.
# PROM_CONFIG_CHANGED tells a Prometheus that is already running to reload.
PROM_CONFIG_CHANGED=false
make_prometheus_config() {
  local f=$E2E_STATE/prometheus.yml
  sed -e "s/@PUSHGATEWAY_PORT@/$E2E_PUSHGATEWAY_PORT/g" \
    -e "s/@PHASELOOP_METRICS_PORT@/$PHASELOOP_METRICS_PORT/g" -e "s|@REPO_ROOT@|$REPO_ROOT|g" \
    -e "s/@ARGO_ROLLOUTS_METRICS_PORT@/$ARGO_ROLLOUTS_METRICS_PORT/g" \
    "$E2E_ROOT/manifests/prometheus.yml.tmpl" >"$f.tmp"
  cmp -s "$f.tmp" "$f" || PROM_CONFIG_CHANGED=true
  mv "$f.tmp" "$f"
}

# ---------------------------------------------------------------------------------------------
# Process handling.

# port_busy PORT -> true when something listens on 127.0.0.1:PORT
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }


# wait_healthy NAME CHECK... -> poll CHECK until it succeeds; fail fast if the process dies
wait_healthy() {
  local name=$1 t0 deadline
  shift
  t0=$(date +%s)
  deadline=$((t0 + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    running "$name" >/dev/null || fail "$name" "process exited"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "not healthy after ${TIMEOUT}s"
    sleep 0.5
  done
  log "$name: healthy after $(($(date +%s) - t0))s"
}

# ensure NAME PORT CHECK_FN BINARY ARGS... -> start unless already running (lib.sh's launch), then
# wait for health. A port in use by something else is an error, not a process to talk to.
ensure() {
  local name=$1 port=$2 check=$3
  shift 3
  if ! running "$name" >/dev/null && port_busy "$port"; then
    die "$name: 127.0.0.1:$port is already in use by a process this cluster did not start"
  fi
  launch "$name" "$@"
  wait_healthy "$name" "$check"
}

CURL=(curl -fsS --max-time 5 --cacert "$PKI/ca.crt")
check_etcd() { curl -fsS --max-time 5 "http://127.0.0.1:$E2E_ETCD_PORT/health" | grep -q '"health":"true"'; }
check_apiserver() {
  "${CURL[@]}" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$E2E_APISERVER_PORT/readyz" | grep -qx ok
}
check_kcm() { "${CURL[@]}" "https://127.0.0.1:$E2E_KCM_PORT/healthz" | grep -qx ok; }
check_scheduler() { "${CURL[@]}" "https://127.0.0.1:$E2E_SCHEDULER_PORT/healthz" | grep -qx ok; }
check_pushgateway() { curl -fsS --max-time 5 "http://127.0.0.1:$E2E_PUSHGATEWAY_PORT/-/ready"; }
check_prometheus() { curl -fsS --max-time 5 "http://127.0.0.1:$E2E_PROMETHEUS_PORT/-/ready"; }

# ---------------------------------------------------------------------------------------------
make_pki
make_kubeconfig
make_prometheus_config
export KUBECONFIG=$KUBECONFIG_FILE

# --unsafe-no-fsync: test data, and fsync dominates etcd latency on a VM disk.
ensure etcd "$E2E_ETCD_PORT" check_etcd "$ETCD_BIN/etcd" \
  --name=e2e --data-dir="$E2E_STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$E2E_ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$E2E_ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$E2E_ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$E2E_ETCD_PEER_PORT" \
  --initial-cluster="e2e=http://127.0.0.1:$E2E_ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --quota-backend-bytes=8589934592 \
  --log-level=warn

# --endpoint-reconciler-type=none: with the default lease reconciler 1.37 exits at once ("cannot
# use public IP 127.0.0.1 with endpoint reconciler": Endpoints may not hold 127.0.0.0/8), and the
# `kubernetes` Service's ClusterIP is fake here anyway.
# Node,RBAC as in real clusters, so the operator's RBAC and `kubectl auth can-i` mean something.
# The audit log (manifests/audit-policy.yaml) records the requests of ServiceAccounts outside
# kube-system: the operator's, counted per process by the tests and benchmarks.
ensure kube-apiserver "$E2E_APISERVER_PORT" check_apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$E2E_ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$E2E_APISERVER_PORT" \
  --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=Node,RBAC \
  --audit-policy-file="$E2E_ROOT/manifests/audit-policy.yaml" --audit-log-path="$(log_file audit)" \
  --audit-log-format=json --audit-log-maxsize=200 --audit-log-maxbackup=2 \
  --allow-privileged=true --profiling=false --v=1

# The Gateway API's CRDs, standard channel, as upstream's config/crd kustomization installs them
# (every file of config/crd/standard, its safe-upgrades ValidatingAdmissionPolicy included): routes
# can be written on the kwok node's cluster too, and the real node's Gateway reads them. The YAML
# is copied out of the Go module once into the cache, keyed by the version; applied server-side
# (the HTTPRoute CRD is too large for client-side apply's annotation), skipped when that version
# is installed already. The API server takes seconds to take them in (it compiles their CEL
# rules), so this runs in the background while the other components start, waited for at the end.
gateway_api_crds() {
  local dir mod tmp installed t0 t1
  t0=$(date +%s)
  dir=$(gateway_api_crd_dir)
  if [ ! -d "$dir" ]; then
    mod=$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') ||
      die "cannot find the gateway-api $GATEWAY_API_VERSION module (go mod download)"
    [ -s "$mod/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" ] ||
      die "gateway-api module has no config/crd/standard/"
    mkdir -p "$E2E_CACHE"
    tmp=$(mktemp -d "$E2E_CACHE/.tmp-gateway-api.XXXXXX")
    cp "$mod"/config/crd/standard/*.yaml "$tmp/"
    chmod -R u+w,a+rX "$tmp"
    mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp" # a concurrent start may have published it first
  fi
  installed=$(kubectl get crd httproutes.gateway.networking.k8s.io \
    -o jsonpath='{.metadata.annotations.gateway\.networking\.k8s\.io/bundle-version}' 2>/dev/null || true)
  if [ "$installed" != "$GATEWAY_API_VERSION" ]; then
    kubectl apply --server-side --field-manager=phaseloop-e2e -f "$dir" >/dev/null
  fi
  # Right after creation a CRD has no conditions yet and `kubectl wait` errors out: retry.
  t1=$(date +%s)
  until kubectl wait --for=condition=Established --timeout=5s crd/gatewayclasses.gateway.networking.k8s.io \
    crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io \
    crd/referencegrants.gateway.networking.k8s.io >/dev/null 2>&1; do
    [ $(($(date +%s) - t1)) -lt "$TIMEOUT" ] || die "Gateway API CRDs not Established after ${TIMEOUT}s"
    sleep 0.5
  done
  log "Gateway API $GATEWAY_API_VERSION CRDs (standard channel): installed in $(($(date +%s) - t0))s"
}
gateway_api_crds &
GATEWAY_API_PID=$!

# Controllers the tests rely on: Deployment/ReplicaSet, Job, garbage collector, namespace
# deletion, ServiceAccount + token publishing (root CA ConfigMap). Each controller uses its own
# ServiceAccount (--use-service-account-credentials) as in kubeadm clusters. No leader election:
# one instance, and a stale lease in reused etcd data would delay a restart by ~15s.
# --authentication-skip-lookup (KCM, scheduler): the apiserver has no front-proxy (requestheader)
# CA, and looking it up logs "missing content for CA bundle" every few seconds; their own secure
# port only serves always-allowed health/metrics paths here.
ensure kube-controller-manager "$E2E_KCM_PORT" check_kcm "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$KUBECONFIG_FILE" \
  --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
  --bind-address=127.0.0.1 --secure-port="$E2E_KCM_PORT" \
  --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
  --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics --authentication-skip-lookup \
  --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --profiling=false --v=1

ensure kube-scheduler "$E2E_SCHEDULER_PORT" check_scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$KUBECONFIG_FILE" \
  --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
  --bind-address=127.0.0.1 --secure-port="$E2E_SCHEDULER_PORT" \
  --tls-cert-file="$PKI/serving.crt" --tls-private-key-file="$PKI/serving.key" \
  --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics --authentication-skip-lookup \
  --leader-elect=false --profiling=false --v=1

# kwok fakes the kubelet of nodes annotated kwok.x-k8s.io/node=fake. Its stages: kwok's own node
# stages and pod-delete, read from the pinned kwok module (the Go module cache has it since kwok
# was built from it), and this project's pod stages (e2e/manifests/kwok-stages.yaml: delayed
# readiness, never-ready pods, failing Jobs). HOME is pointed into the state dir because kwok also
# loads ~/.kwok/kwok.yaml when present, which would make the cluster depend on the user's files.
# Without --server-address / --node-port it opens no port. Pod IPs come from a fake range.
kwok_stages() {
  local dir out=$E2E_STATE/kwok-stages.yaml
  dir=$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') ||
    die "cannot find the kwok $KWOK_VERSION module (go mod download)"
  {
    echo "# Assembled by start-cluster.sh: kwok $KWOK_VERSION's stages, then e2e/manifests/kwok-stages.yaml."
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-delete.yaml; do
      [ -s "$dir/kustomize/stage/$f" ] || die "kwok module has no kustomize/stage/$f"
      echo "---"
      grep -v '^---$' "$dir/kustomize/stage/$f"
    done
    cat "$E2E_ROOT/manifests/kwok-stages.yaml"
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}
mkdir -p "$E2E_STATE/kwok-home"
if ! running kwok >/dev/null; then
  # A restarted kwok has a new holder identity and leaves pods alone until the previous process's
  # node Lease expires (~40s on a warm start). No kwok runs now, so that Lease is stale: drop it.
  kubectl delete lease kwok-node-0 -n kube-node-lease --ignore-not-found >/dev/null
  kwok_stages
fi
HOME=$E2E_STATE/kwok-home launch kwok "$KWOK_BIN/kwok" \
  --kubeconfig="$KUBECONFIG_FILE" --config="$E2E_STATE/kwok-stages.yaml" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip=127.0.0.1 --cidr=10.244.0.0/16 --node-lease-duration-seconds=40
kubectl apply -f "$E2E_ROOT/manifests/kwok-node.yaml" >/dev/null
# `apply` leaves the status of an existing node alone (a subresource): its capacity is set here.
CAPACITY=$(kubectl create --dry-run=client -o jsonpath='{.status}' -f "$E2E_ROOT/manifests/kwok-node.yaml")
kubectl patch node kwok-node-0 --subresource=status --type=merge -p "{\"status\": $CAPACITY}" >/dev/null
wait_healthy kwok kubectl wait --for=condition=Ready node/kwok-node-0 --timeout=5s

# The pushgateway keeps pushed series in memory only: a restart starts clean.
ensure pushgateway "$E2E_PUSHGATEWAY_PORT" check_pushgateway "$(command -v prometheus-pushgateway)" \
  --web.listen-address="127.0.0.1:$E2E_PUSHGATEWAY_PORT"

# Our own Prometheus (Debian's packaged service, if any, stays on :9090 untouched).
# --web.enable-lifecycle: tests may POST /-/reload after changing the config.
ensure prometheus "$E2E_PROMETHEUS_PORT" check_prometheus "$(command -v prometheus)" \
  --config.file="$E2E_STATE/prometheus.yml" --storage.tsdb.path="$E2E_STATE/prometheus" \
  --storage.tsdb.retention.time=1d \
  --web.listen-address="127.0.0.1:$E2E_PROMETHEUS_PORT" --web.enable-lifecycle
if $PROM_CONFIG_CHANGED; then # no-op for a Prometheus that just started with this file
  curl -fsS --max-time 10 -X POST "http://127.0.0.1:$E2E_PROMETHEUS_PORT/-/reload"
fi

# KCM's serviceaccount controller creates `default` in every namespace; pods cannot be created
# before it exists (ServiceAccount admission), so the cluster is usable only from here on.
t1=$(date +%s)
until kubectl get serviceaccount default -n default >/dev/null 2>&1; do
  running kube-controller-manager >/dev/null || fail kube-controller-manager "process exited"
  [ $(($(date +%s) - t1)) -lt "$TIMEOUT" ] ||
    fail kube-controller-manager "no default ServiceAccount after ${TIMEOUT}s"
  sleep 0.5
done

wait "$GATEWAY_API_PID" || die "the Gateway API CRDs were not installed (see above)"

log "cluster ready in $(($(date +%s) - T0))s: KUBECONFIG=$KUBECONFIG_FILE" \
  "apiserver https://127.0.0.1:$E2E_APISERVER_PORT" \
  "prometheus http://127.0.0.1:$E2E_PROMETHEUS_PORT pushgateway http://127.0.0.1:$E2E_PUSHGATEWAY_PORT"
