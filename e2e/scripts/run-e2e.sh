#!/usr/bin/env bash
# The end-to-end suite: builds what is missing, starts the local control plane (unless one is
# already running), installs the CRDs, runs the operator as a host process and the e2e tests
# against it, then stops what it started. E2E_TEST=<binary> runs one test binary (e.g. operate);
# arguments after the script name are passed to the test harness (a name filter, --nocapture).
source "$(dirname "$0")/lib.sh"
S=$E2E_ROOT/scripts
T0=$(date +%s)

bash "$S/install-deps.sh"
bash "$S/build-e2e-bins.sh"
# One build for the operator binary and the tests: the same feature set as `cargo test --workspace`
# (dev-dependencies enable kube's `cel`), so nothing is compiled twice.
cargo test --workspace --no-run
# The release binary the Dockerfile ships: its build and size are checked (e2e/tests/packaging.rs).
# E2E_RELEASE_BUILD=0 skips it while iterating on other tests.
if [ "${E2E_RELEASE_BUILD:-1}" != 0 ]; then cargo build --release --bin phaseloop-operator; fi

# Start the cluster only when it is not up, and then stop it at the end.
STARTED_CLUSTER=
APISERVER_PID=$E2E_STATE/pids/kube-apiserver.pid
if ! { [ -f "$APISERVER_PID" ] && kill -0 "$(cat "$APISERVER_PID")" 2>/dev/null; }; then STARTED_CLUSTER=1; fi
cleanup() {
  bash "$S/run-operator.sh" stop || true
  if [ -n "$STARTED_CLUSTER" ] && [ -z "${E2E_KEEP_CLUSTER:-}" ]; then bash "$S/stop-cluster.sh" || true; fi
  # The closing line: every e2e test binary summed up.
  if [ -f "$E2E_STATE/logs/e2e-tests.log" ]; then
    awk '/^test result:/ { p += $4; f += $6 } END { printf "e2e: %d passed, %d failed\n", p, f }' \
      "$E2E_STATE/logs/e2e-tests.log"
  fi
}
trap cleanup EXIT
# A cluster started here starts empty: objects left by an earlier run would be reconciled too.
if [ -n "$STARTED_CLUSTER" ]; then bash "$S/stop-cluster.sh" --purge >/dev/null; fi
rm -f "$E2E_STATE/logs/e2e-tests.log"
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
bash "$S/install-chart.sh"
bash "$S/run-operator.sh" start

set +e
cargo test -p phaseloop-e2e --features phaseloop/binaries --no-fail-fast --test "${E2E_TEST:-*}" -- --ignored --test-threads="${E2E_THREADS:-4}" "$@" 2>&1 |
  tee "$E2E_STATE/logs/e2e-tests.log"
rc=${PIPESTATUS[0]}
set -e
if [ $rc -ne 0 ]; then
  log "e2e failed; operator log tail:"
  tail -n 40 "$E2E_STATE/logs/operator.log" >&2 || true
fi
log "e2e finished in $(($(date +%s) - T0))s (rc=$rc)"
exit $rc
