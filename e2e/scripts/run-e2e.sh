#!/usr/bin/env bash
# The end-to-end suite: builds what is missing, starts the local control plane (unless one is
# already running), installs the CRDs, runs the operator as a host process and the e2e tests
# against it (pods on the kwok node), then the real node's scenarios (module real_node):
# the host operator stops and hands its Lease over, the real node starts, and the chart is upgraded
# to run the operator as a pod from the image built here. Everything it started is stopped at the
# end. First of all the README's quick tour is played as printed (module tour: it starts and
# stops a cluster itself, so it refuses to run beside one: stop it, or E2E_TOUR=0).
# The tests are one binary, e2e/tests/e2e/main.rs, with a module per area; each phase runs its
# modules by name filter. E2E_TEST=<module> runs one module (e.g. operate, real_node for the
# real-node phase alone, uninstall for its last test alone, tour for the tour alone, bench for the
# benchmarks' smoke runs alone: bench/tests/smoke, run after the kwok modules);
# E2E_REAL_NODE=0 leaves the real node out, E2E_TOUR=0 the tour. Arguments after the script name
# are passed to the test harness (a name filter, --nocapture).
source "$(dirname "$0")/lib.sh"
S=$E2E_ROOT/scripts
T0=$(date +%s)
REAL_NODE=${E2E_REAL_NODE:-1}
TOUR=${E2E_TOUR:-1}
KWOK_SUITE=1
# The e2e binary's modules, and the harness arguments that leave out every module but those
# named: skips rather than a filter, so that a name filter given to this script still narrows them.
mapfile -t MODULES < <(sed -n 's/^mod \([a-z_]*\);$/\1/p' "$E2E_ROOT/tests/e2e/main.rs")
only() { for m in "${MODULES[@]}"; do case " $* " in *" $m "*) ;; *) printf '%s\n' --skip "$m::" ;; esac; done; }
if [ -n "${E2E_TEST:-}" ] && [ "$E2E_TEST" != bench ] && ! printf '%s\n' "${MODULES[@]}" | grep -qx "$E2E_TEST"; then
  die "E2E_TEST=$E2E_TEST: no such module in e2e/tests/e2e/main.rs (${MODULES[*]})"
fi
case "${E2E_TEST:-}" in
  "") ;;
  real_node | uninstall) KWOK_SUITE=0 TOUR=0 ;;
  tour) KWOK_SUITE=0 REAL_NODE=0 ;;
  *) REAL_NODE=0 TOUR=0 ;;
esac
case "$REAL_NODE:${E2E_TEST:-}" in 0:real_node | 0:uninstall) die "E2E_TEST=${E2E_TEST} needs E2E_REAL_NODE=1" ;; esac
export E2E_REAL_NODE=$REAL_NODE # install-deps.sh installs the node's packages only when wanted

bash "$S/install-deps.sh"
bash "$S/build-e2e-bins.sh"
if [ "$REAL_NODE" = 1 ]; then bash "$S/build-e2e-bins.sh" node; fi
# One build for the operator binary and the tests: the same feature set as `cargo test --workspace`
# (dev-dependencies enable kube's `cel`), so nothing is compiled twice.
cargo test --workspace --no-run
# The static release build (the operator's image and the real node's images): its size and
# linkage are checked (module packaging). E2E_RELEASE_BUILD=0 skips it while iterating on
# kwok-suite tests.
if [ "${E2E_RELEASE_BUILD:-1}" != 0 ] || [ "$REAL_NODE" = 1 ]; then
  t=$(date +%s)
  bash "$S/build-images.sh" build >/dev/null
  log "static release build and images: $(($(date +%s) - t))s"
fi

APISERVER_PID=$E2E_STATE/pids/kube-apiserver.pid
cluster_up() { [ -f "$APISERVER_PID" ] && kill -0 "$(cat "$APISERVER_PID")" 2>/dev/null; }
rm -f "$E2E_STATE/logs/e2e-tests.log"
mkdir -p "$E2E_STATE/logs"
rc=0
# Runs the e2e test binary's ignored tests with the harness's arguments (the modules' selection first).
e2e_tests() { cargo test -p phaseloop-e2e --features phaseloop/default --no-fail-fast --test e2e -- --ignored "$@"; }
# The benchmarks' smoke runs (their own crate's test binary), one at a time: two of them restart
# the operator.
bench_smoke() { cargo test -p phaseloop-bench --features phaseloop/default --no-fail-fast --test smoke -- --ignored --test-threads=1 "$@"; }
# The README's tour, run outside `cargo test` (which holds the build directory's lock while tests
# run, and the tour's `make run` builds): the test binary is run directly.
if [ "$TOUR" = 1 ]; then
  if cluster_up; then
    # The tour starts and stops a cluster of its own, on the same ports: it cannot run beside one.
    # Never skipped silently: stop the cluster (make cluster-down), or say E2E_TOUR=0.
    die "a cluster is running ($E2E_STATE): the README tour needs its own; make cluster-down first, or E2E_TOUR=0 to leave the tour out"
  else
    t=$(date +%s)
    # The tour starts from nothing, as on a fresh machine: a stopped cluster's state (etcd data
    # from an earlier run) would hold its Releases already, in later phases than it waits for.
    bash "$S/stop-cluster.sh" --purge >/dev/null
    e2e=$(cargo test -p phaseloop-e2e --features phaseloop/default --test e2e --no-run --message-format=json 2>/dev/null |
      grep '"kind":\["test"\],"crate_types":\["bin"\],"name":"e2e"' | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
    [ -x "$e2e" ] || die "the e2e test binary was not built"
    set +e
    mapfile -t SELECT < <(only tour)
    "$e2e" --ignored --test-threads=1 "${SELECT[@]}" "$@" 2>&1 | tee -a "$E2E_STATE/logs/e2e-tests.log"
    rc=${PIPESTATUS[0]}
    set -e
    log "README tour finished in $(($(date +%s) - t))s (rc=$rc; log $E2E_STATE/logs/tour.log)"
  fi
fi

# Start the cluster only when it is not up, and then stop it at the end.
STARTED_CLUSTER=
if ! cluster_up; then STARTED_CLUSTER=1; fi
STARTED_NODE=
cleanup() {
  bash "$S/run-operator.sh" stop || true
  if [ -n "$STARTED_NODE" ] && [ -z "${E2E_KEEP_CLUSTER:-}" ]; then bash "$S/stop-node.sh" || true; fi
  if [ -n "$STARTED_CLUSTER" ] && [ -z "${E2E_KEEP_CLUSTER:-}" ]; then bash "$S/stop-cluster.sh" || true; fi
  # The closing line: every phase's run of the e2e tests summed up.
  if [ -f "$E2E_STATE/logs/e2e-tests.log" ]; then
    awk '/^test result:/ { p += $4; f += $6 } END { printf "e2e: %d passed, %d failed\n", p, f }' \
      "$E2E_STATE/logs/e2e-tests.log"
  fi
}
trap cleanup EXIT
if [ "$KWOK_SUITE" = 0 ] && [ "$REAL_NODE" = 0 ]; then exit "$rc"; fi
# A cluster started here starts empty: objects left by an earlier run would be reconciled too.
if [ -n "$STARTED_CLUSTER" ]; then bash "$S/stop-cluster.sh" --purge >/dev/null; fi
bash "$S/start-cluster.sh"
eval "$("$S/env.sh")"
export PATH="$REPO_ROOT/target/debug:$PATH" # kubectl finds the kubectl-phaseloop plugin here

kubectl apply -f "$REPO_ROOT/crds/"
# Right after creation a CRD has no conditions yet and `kubectl wait` errors out: retry.
for _ in $(seq 60); do
  kubectl wait --for=condition=Established --timeout=5s crd/environments.phaseloop.dev crd/releases.phaseloop.dev \
    >/dev/null 2>&1 && break
  sleep 1
done
if [ "$KWOK_SUITE" = 1 ]; then
  bash "$S/install-chart.sh"
  bash "$S/run-operator.sh" start
  # Every module but the real node's (its scenarios need the node and the in-cluster operator),
  # uninstall's and the tour's. Tests that take over the suite's operator, API server or
  # Prometheus run alone (phaseloop_e2e::alone), the others side by side.
  if [ -n "${E2E_TEST:-}" ]; then
    mapfile -t SELECT < <(only "$E2E_TEST")
  else
    SELECT=(--skip real_node:: --skip uninstall:: --skip tour::)
  fi
  set +e
  suite_rc=0
  if [ "${E2E_TEST:-}" != bench ]; then
    e2e_tests --test-threads="${E2E_THREADS:-4}" "${SELECT[@]}" "$@" 2>&1 | tee -a "$E2E_STATE/logs/e2e-tests.log"
    suite_rc=${PIPESTATUS[0]}
  fi
  if [ -z "${E2E_TEST:-}" ] || [ "$E2E_TEST" = bench ]; then
    bench_smoke "$@" 2>&1 | tee -a "$E2E_STATE/logs/e2e-tests.log"
    smoke_rc=${PIPESTATUS[0]}
    if [ "$smoke_rc" -ne 0 ] && [ "$suite_rc" -eq 0 ]; then suite_rc=$smoke_rc; fi
  fi
  if [ "$suite_rc" -ne 0 ]; then rc=$suite_rc; fi
  set -e
  if [ "$suite_rc" -ne 0 ]; then
    log "e2e failed; operator log tail:"
    tail -n 40 "$E2E_STATE/logs/operator.log" >&2 || true
  fi
  log "kwok suite finished in $(($(date +%s) - T0))s (rc=$suite_rc)"
fi

if [ "$REAL_NODE" = 1 ]; then
  T1=$(date +%s)
  # The host operator stops (SIGTERM releases its Lease); the chart's pod takes the Lease over.
  bash "$S/run-operator.sh" stop
  if [ ! -e "$E2E_STATE/pids/node-kubelet.pid" ]; then STARTED_NODE=1; fi
  bash "$S/start-node.sh"
  eval "$(bash "$S/build-images.sh" import)"
  export E2E_OPERATOR_IMAGE E2E_CURL_IMAGE E2E_DEMO_IMAGE
  t=$(date +%s)
  # The operator as a pod on the real node, from its image, with the node's Prometheus (the pods
  # reach it on the node's address): helm upgrade of the release the kwok suite used.
  bash "$S/install-chart.sh" --set image.repository="${E2E_OPERATOR_IMAGE%:*}" \
    --set image.tag="${E2E_OPERATOR_IMAGE##*:}" --set image.pullPolicy=Never \
    --set test.image="$E2E_CURL_IMAGE" --set prometheus.url="http://$E2E_NODE_IP:9090" \
    --set-json 'nodeSelector={"phaseloop.dev/real-node":"true"}' \
    --set-json 'tolerations=[{"key":"phaseloop.dev/real-node","operator":"Exists","effect":"NoSchedule"}]'
  log "operator pod ready on $E2E_NODE_NAME in $(($(date +%s) - t))s"
  # --show-output: the scenarios' figures (failed requests, seconds, latency) are their report.
  set +e
  node_rc=0
  if [ "${E2E_TEST:-}" != uninstall ]; then
    mapfile -t SELECT < <(only real_node)
    e2e_tests --test-threads="${E2E_NODE_THREADS:-4}" --show-output "${SELECT[@]}" "$@" 2>&1 |
      tee -a "$E2E_STATE/logs/e2e-tests.log"
    node_rc=${PIPESTATUS[0]}
  fi
  # Last, alone: `helm uninstall` of the operator (its pre-delete hook runs on the real node), then
  # namespaces and the CRDs deleted. Nothing after it needs either.
  mapfile -t SELECT < <(only uninstall)
  e2e_tests --show-output "${SELECT[@]}" "$@" 2>&1 | tee -a "$E2E_STATE/logs/e2e-tests.log"
  uninstall_rc=${PIPESTATUS[0]}
  if [ "$uninstall_rc" -ne 0 ] && [ "$node_rc" -eq 0 ]; then node_rc=$uninstall_rc; fi
  set -e
  if [ "$node_rc" -ne 0 ]; then
    # kubectl logs cannot reach a kubelet inside the namespace: the kubelet's log files instead.
    log "real-node scenarios failed; operator pod log tail:"
    tail -q -n 40 "$NODE_STATE"/pod-logs/"${PHASELOOP_NAMESPACE:-phaseloop-system}"_phaseloop-*/operator/*.log >&2 || true
    rc=$node_rc
  fi
  log "real-node phase finished in $(($(date +%s) - T1))s (rc=$node_rc)"
fi
log "e2e finished in $(($(date +%s) - T0))s (rc=$rc)"
exit "$rc"
