//! High availability: operator processes with leader election on one Lease. Only the leader
//! reconciles (a standby's reconcile counter stays absent), a SIGKILLed leader is replaced, a
//! SIGTERMed one hands over at once, and Releases keep going Live throughout. Each test runs alone
//! (`alone()`): it stops the suite's operator while it runs.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::{
    operator::{Operator, RestoreSuiteOperator, run_operator},
    *,
};
use serde_json::json;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(90);
const LEASE_NS: &str = "phaseloop-system";

fn state() -> String {
    std::env::var("E2E_STATE").expect("E2E_STATE (env.sh)")
}

async fn holder_becomes(leases: &Api<Lease>, who: &str) -> Instant {
    eventually(&format!("{who} holds the Lease"), WAIT, || async {
        let lease = leases.get_opt("phaseloop-operator").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some(who)).then(Instant::now)
    })
    .await
    .unwrap()
}

async fn goes_live(client: &kube::Client, ns: &str, version: &str) {
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("ha-{version}"), "namespace": ns},
        "spec": {"app": "ha", "version": version,
                 "template": {"spec": {"containers": [{"name": "app", "image": format!("ha:{version}")}]}}}}));
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    wait_for(&api, &format!("ha-{version}"), WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(ReleasePhase::Live))
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn one_leader_writes_a_killed_leader_is_replaced_and_a_stopped_one_hands_over() {
    let _alone = alone().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-ha").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    run_operator("stop"); // a graceful stop: the suite's operator releases the Lease
    let _restore = RestoreSuiteOperator;

    let a = Operator::start("e2e-a", extra_port(1));
    holder_becomes(&leases, "e2e-a").await;
    let b = Operator::start("e2e-b", extra_port(2));
    b.wait_ready().await; // a standby is ready: it serves and waits
    goes_live(&client, &ns.name, "1").await;
    assert!(a.reconciled().await, "the leader reconciles");
    assert!(!b.reconciled().await, "the standby has not reconciled anything");
    assert!(b.metrics().await.unwrap_or_default().contains("phaseloop_leader 0"));

    // The leader dies without a goodbye: the standby takes over once the Lease is stale.
    a.signal("-KILL");
    let killed = Instant::now();
    let took_over = holder_becomes(&leases, "e2e-b").await;
    println!("SIGKILL failover: {:.1}s", (took_over - killed).as_secs_f64());
    goes_live(&client, &ns.name, "2").await;

    // A graceful stop hands over at once: the leader stops reconciling, then releases the Lease.
    let c = Operator::start("e2e-c", extra_port(3));
    c.wait_ready().await;
    assert!(!c.reconciled().await);
    b.signal("-TERM");
    let stopped = Instant::now();
    let handed_over = holder_becomes(&leases, "e2e-c").await;
    println!("SIGTERM handover: {:.1}s", (handed_over - stopped).as_secs_f64());
    goes_live(&client, &ns.name, "3").await;
    let lease = leases.get("phaseloop-operator").await.unwrap().spec.unwrap();
    assert!(lease.lease_transitions.unwrap_or(0) >= 2, "{lease:?}");
    c.signal("-TERM");
}

/// One request of the API server's audit log.
#[derive(serde::Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Audited {
    verb: String,
    user_agent: Option<String>,
    request_received_timestamp: jiff::Timestamp,
    #[serde(default)]
    object_ref: Option<serde_json::Value>,
    #[serde(default)]
    response_status: Option<serde_json::Value>,
}

impl Audited {
    fn by(&self, identity: &str) -> bool {
        self.user_agent.as_deref().is_some_and(|a| a.contains(&format!("({identity})")))
    }
    fn write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }
    fn resource(&self) -> String {
        self.object_ref.as_ref().and_then(|o| o["resource"].as_str()).unwrap_or_default().to_string()
    }
    fn subresource(&self) -> String {
        self.object_ref.as_ref().and_then(|o| o["subresource"].as_str()).unwrap_or_default().to_string()
    }
    fn code(&self) -> i64 {
        self.response_status.as_ref().and_then(|s| s["code"].as_i64()).unwrap_or(0)
    }
}

/// Every request in the audit log (the current file and rotated ones).
fn audit_log() -> Vec<Audited> {
    let dir = format!("{}/logs", state());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("audit") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.extend(text.lines().filter_map(|l| serde_json::from_str::<Audited>(l).ok()));
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_frozen_leader_that_resumes_after_a_takeover_writes_nothing() {
    let _alone = alone().await;
    let client = client().await;
    // The audit log holds earlier runs too: only this test's requests count.
    let since = jiff::Timestamp::now();
    let ns = TestNamespace::new(&client, "e2e-fence").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    run_operator("stop");
    let _restore = RestoreSuiteOperator;

    let a = Operator::start("e2e-fa", extra_port(4));
    holder_becomes(&leases, "e2e-fa").await;
    let b = Operator::start("e2e-fb", extra_port(5));
    b.wait_ready().await;
    // Work in flight: a canary stepping through timed pauses keeps the leader writing.
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "fence-1", "namespace": ns.name},
        "spec": {"app": "fence", "version": "1", "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}}));
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    wait_release_phase(&api, "fence-1", ReleasePhase::Live).await;
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "fence-2", "namespace": ns.name},
        "spec": {"app": "fence", "version": "2", "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}},
                 "strategy": {"type": "Canary", "canary": {"steps": [
                     {"setWeight": 10}, {"pause": {"duration": "2s"}}, {"setWeight": 20}, {"pause": {"duration": "2s"}},
                     {"setWeight": 40}, {"pause": {"duration": "2s"}}, {"setWeight": 60}, {"pause": {"duration": "2s"}},
                     {"setWeight": 80}, {"pause": {"duration": "2s"}}]}}}}));
    wait_for(&api, "fence-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.current_step.unwrap_or(0) >= 1)
    })
    .await
    .unwrap();

    // Frozen past its Lease: the standby takes over and carries the rollout on.
    a.signal("-STOP");
    holder_becomes(&leases, "e2e-fb").await;
    wait_release_phase(&api, "fence-2", ReleasePhase::Live).await;
    let takeover = audit_log()
        .into_iter()
        .filter(|e| e.request_received_timestamp >= since)
        .filter(|e| e.by("e2e-fb") && e.write() && e.resource() == "leases" && e.code() / 100 == 2)
        .map(|e| e.request_received_timestamp)
        .min()
        .expect("the standby's takeover is in the audit log");

    // Resumed: it must not write anything, and it fences itself (exits).
    a.signal("-CONT");
    let mut a = a;
    eventually("the resumed leader exits", WAIT, || {
        let exited = a.child.try_wait().ok().flatten().is_some();
        async move { exited.then_some(()) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // the audit log is written as requests complete
    let log: Vec<Audited> = audit_log().into_iter().filter(|e| e.request_received_timestamp >= since).collect();
    let before = log.iter().filter(|e| e.by("e2e-fa") && e.write() && e.request_received_timestamp < takeover).count();
    let after: Vec<&Audited> =
        log.iter().filter(|e| e.by("e2e-fa") && e.write() && e.request_received_timestamp >= takeover).collect();
    println!("FIGURE fencing: the old leader made {before} writes before the takeover and {} after", after.len());
    assert!(before > 0, "the audit log names the leader's writes (user agent with its identity)");
    assert!(after.is_empty(), "writes after the takeover: {after:#?}");
    b.signal("-TERM");
}

/// The suite operator's kubeconfig with the API server's address replaced by `port` on 127.0.0.1
/// (the certificate names 127.0.0.1, whatever the port), written as `operator-<name>.kubeconfig`.
fn kubeconfig_through(port: u16, name: &str) -> (String, String) {
    let original = std::fs::read_to_string(format!("{}/operator.kubeconfig", state())).unwrap();
    let at = original.find("https://127.0.0.1:").expect("the kubeconfig names the API server on 127.0.0.1") + 8;
    let server: String = original[at..].chars().take_while(|c| c.is_ascii_digit() || ".:".contains(*c)).collect();
    let path = format!("{}/operator-{name}.kubeconfig", state());
    std::fs::write(&path, original.replace(&format!("https://{server}"), &format!("https://127.0.0.1:{port}")))
        .unwrap();
    (path, server)
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_leader_cut_off_with_writes_in_flight_cannot_overwrite_its_successor() {
    let _alone = alone().await;
    let client = client().await;
    let since = jiff::Timestamp::now();
    let ns = TestNamespace::new(&client, "e2e-partition").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    run_operator("stop");
    let _restore = RestoreSuiteOperator;

    // The leader's every connection to the API server goes through a bridge the test can pause.
    let server = kubeconfig_through(0, "probe").1;
    let bridge = phaseloop_e2e::bridge::Bridge::start(server).await;
    let (kubeconfig, _) = kubeconfig_through(bridge.port, "partitioned");
    let log = std::fs::File::create(format!("{}/logs/operator-e2e-pa.log", state())).unwrap();
    let mut a = std::process::Command::new(repo_root().join("target/debug/phaseloop-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env("PHASELOOP_METRICS_ADDR", format!("127.0.0.1:{}", extra_port(8)))
        .env("PHASELOOP_PROMETHEUS_URL", prometheus_url())
        .env("PHASELOOP_LEADER_ELECTION", "true")
        .env("PHASELOOP_LEASE_NAMESPACE", LEASE_NS)
        .env("POD_NAME", "e2e-pa")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    holder_becomes(&leases, "e2e-pa").await;
    let b = Operator::start("e2e-pb", extra_port(9));
    b.wait_ready().await;

    // A canary paused with its analysis running: every second the leader reads Prometheus (not
    // behind the bridge) and writes the tally into the status, a status write with no other write
    // before it, unasked.
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "cut-1", "namespace": ns.name},
        "spec": {"app": "cut", "version": "1", "replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}}}));
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    wait_release_phase(&api, "cut-1", ReleasePhase::Live).await;
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "cut-2", "namespace": ns.name},
        "spec": {"app": "cut", "version": "2", "replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "a"}]}},
                 "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "10m"}}]},
                     "analysis": {"interval": "1s", "metrics": [{"name": "up", "min": 0, "query": "vector(1)"}]}}}}));
    wait_for(&api, "cut-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.current_step == Some(1) && s.analysis.iter().any(|a| a.successes >= 2))
    })
    .await
    .unwrap();
    // Cut off just after a renewal of the leader's Lease: its next request on the connection the
    // renewal freed is the next tally (within 1 s; the next renewal is 2 s away), well within its
    // fence (6 s after that renewal). The tally goes into the bridge and stays there; the next
    // renewal needs a new connection, whose handshake the bridge holds too.
    let renewed =
        || async { leases.get_opt("phaseloop-operator").await.ok().flatten().and_then(|l| l.spec?.renew_time) };
    let last = renewed().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while renewed().await == last {
        assert!(Instant::now() < deadline, "e2e-pa renews its Lease every 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bridge.pause();
    // The standby takes over and writes its own tally.
    holder_becomes(&leases, "e2e-pb").await;
    eventually("the new leader writes cut-2's status", WAIT, || async {
        audit_log()
            .iter()
            .any(|e| {
                e.request_received_timestamp >= since
                    && e.by("e2e-pb")
                    && e.subresource() == "status"
                    && e.write()
                    && e.code() / 100 == 2
            })
            .then_some(())
    })
    .await
    .unwrap();
    let takeover = audit_log()
        .into_iter()
        .filter(|e| e.request_received_timestamp >= since)
        .filter(|e| e.by("e2e-pb") && e.write() && e.resource() == "leases" && e.code() / 100 == 2)
        .map(|e| e.request_received_timestamp)
        .min()
        .expect("the standby's takeover is in the audit log");
    let held = bridge.held();
    // The partition heals: what the old leader sent reaches the API server now.
    bridge.resume();
    let _ = eventually("the cut-off leader exits (fenced)", Duration::from_secs(30), || {
        let exited = a.try_wait().ok().flatten().is_some();
        async move { exited.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await; // the held requests are answered within 10 s
    let late: Vec<Audited> = audit_log()
        .into_iter()
        .filter(|e| e.by("e2e-pa") && e.write() && e.request_received_timestamp >= takeover)
        .collect();
    let summary: Vec<String> =
        late.iter().map(|e| format!("{} {}/{} {}", e.verb, e.resource(), e.subresource(), e.code())).collect();
    println!("FIGURE partition: {held} bytes held; the old leader's writes arriving after the takeover: {summary:?}");
    let stale_status: Vec<&Audited> = late.iter().filter(|e| e.subresource() == "status").collect();
    assert!(!stale_status.is_empty(), "no status write of the old leader was held: the partition came too late");
    assert!(
        stale_status.iter().all(|e| e.code() == 409),
        "a stale status write was accepted after the takeover: {summary:?}"
    );
    // The successor goes on from its own status.
    annotate(&api, "cut-2", "phaseloop.dev/promote", ADMIN).await;
    wait_release_phase(&api, "cut-2", ReleasePhase::Live).await;
    let _ = a.kill();
    let _ = a.wait();
    b.signal("-TERM");
}
