//! Only the versions the user chose ever serve, on every path: a cold revert, a candidate deleted
//! mid-rollout, a request annotation sent where it means nothing, a rollout started inside the
//! previous one's revert window, generated names for any Release name. Each runs under the traffic
//! monitor (the app Service's Ready endpoints by version, every 100 ms), which also checks that
//! never more than two versions serve.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client, ResourceExt};
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::{
    traffic::{Monitor, Sample},
    *,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);

async fn setup(prefix: &str) -> (Client, TestNamespace, Api<Release>) {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    (client, ns, api)
}

/// `release` whose pods take `secs` seconds to become Ready.
fn slow(mut release: serde_json::Value, secs: u32) -> serde_json::Value {
    release["spec"]["template"]["metadata"]["annotations"] =
        json!({"e2e.phaseloop.dev/ready-after": format!("{secs}s"), "e2e.phaseloop.dev/ready-jitter": "1s"});
    release
}

/// A cold revert (`warmReplicas: 0`) said "reverting to wm-2: 0 of 4 pods Ready" for good, and both
/// versions served meanwhile.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_cold_revert_starts_the_previous_version_and_switches_once_it_is_ready() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-coldrevert").await;
    create(&release(&ns.name, "wm", "1", 4, json!({"warmReplicas": 0})));
    wait_release_phase(&api, "wm-1", ReleasePhase::Live).await;
    create(&release(&ns.name, "wm", "2", 4, json!({"warmReplicas": 0})));
    wait_release_phase(&api, "wm-2", ReleasePhase::Live).await;
    eventually("wm-1 at zero (cold)", WAIT, || async {
        (replicas(&client, &ns.name, "wm-1").await == Some(0)).then_some(())
    })
    .await
    .unwrap();
    let monitor = Monitor::start(&client, &ns.name, "wm").await;
    monitor.mark("revert");
    let out = kubectl(&["phaseloop", "revert", "wm-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "wm-2", ReleasePhase::Reverted).await;
    wait_release_phase(&api, "wm-1", ReleasePhase::Live).await;
    eventually("only wm-1 serves", WAIT, || {
        let t = monitor.now();
        async move { t.samples.last().is_some_and(|s| s.only("1")).then_some(()) }
    })
    .await
    .unwrap();
    let t = monitor.stop().await;
    t.assert_never_empty("cold revert");
    let switched = t.first_after(t.mark("revert"), |s| s.endpoints.get("1").is_some_and(|n| *n > 0)).unwrap();
    t.assert_while("before the switch only the current version serves", |s| s.at < switched, |s| s.only("2"));
    let took = t.settled_after(t.mark("revert"), |s| s.only("1")).unwrap();
    eprintln!("FIGURE cold revert: previous-only endpoints {took:.2}s after the request");
}

/// Deleting a rolling-out candidate emptied the app: the app's Service (owned by the candidate
/// alone at the switch) was deleted with it, and the previous version's pods took 30 s to be Ready.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn deleting_a_candidate_at_the_switch_keeps_its_pods_until_the_stable_version_serves_at_full_size() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-delcand").await;
    create(&slow(release(&ns.name, "dl", "1", 4, json!({})), 15));
    wait_release_phase(&api, "dl-1", ReleasePhase::Live).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let uid = services.get("dl").await.unwrap().uid();
    let monitor = Monitor::start(&client, &ns.name, "dl").await;
    create(&ready_at_once(release(&ns.name, "dl", "2", 4, json!({}))));
    // At the switch: dl-2 serves alone while dl-1's warm pods take 15 s to be Ready.
    wait_for(&api, "dl-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.message.as_deref().unwrap_or_default().contains("switching"))
    })
    .await
    .unwrap();
    monitor.mark("delete");
    let out = kubectl(&["delete", "rel", "dl-2", "-n", &ns.name, "--wait=false"]);
    assert!(out.ok, "{}", out.stderr);
    eventually("dl-2 gone", WAIT, || async { api.get_opt("dl-2").await.ok()?.is_none().then_some(()) }).await.unwrap();
    eventually("only dl-1 serves, 4 Ready, and dl-2's pods are gone", WAIT, || {
        let t = monitor.now();
        let done = |s: &Sample| s.only("1") && s.ready() == 4 && s.pods.get("2").copied().unwrap_or(0) == 0;
        async move { t.samples.last().is_some_and(done).then_some(()) }
    })
    .await
    .unwrap();
    let t = monitor.stop().await;
    t.assert_never_empty("a candidate deleted at the switch");
    let from = t.mark("delete");
    t.assert_while(
        "the candidate's pods go only once the stable version has all of its own Ready",
        |s| s.at >= from && s.pods.get("2").copied().unwrap_or(0) < 4,
        |s| s.endpoints.get("1").copied().unwrap_or(0) >= 4,
    );
    assert_eq!(services.get("dl").await.unwrap().uid(), uid, "the app's Service was never deleted");
    assert_eq!(api.get("dl-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
}

/// A raw `revert` annotation during a canary pause was neither taken nor refused, and reverted the
/// Release right after a later promote took it Live.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_request_where_it_means_nothing_is_refused_at_once_and_never_fires_later() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-requests").await;
    create(&release(&ns.name, "rv", "1", 2, json!({})));
    wait_release_phase(&api, "rv-1", ReleasePhase::Live).await;
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    create(&release(&ns.name, "rv", "2", 2, canary));
    wait_release_phase(&api, "rv-2", ReleasePhase::Paused).await;
    annotate(&api, "rv-2", "phaseloop.dev/revert", ADMIN).await;
    let r = wait_for(&api, "rv-2", WAIT, |r: Option<&Release>| {
        r.is_some_and(|r| !r.annotations().contains_key("phaseloop.dev/revert"))
    })
    .await
    .unwrap();
    let c = condition(&r, "RequestRefused").expect("the refusal is a condition");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "RevertRefused"), "{c:?}");
    assert!(event_about(&client, &ns.name, "rv-2", "RevertRefused").await.contains("Paused"));
    // Promoted to Live, it stays Live: nothing was kept for later.
    let out = kubectl(&["phaseloop", "promote", "rv-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    let live = wait_release_phase(&api, "rv-2", ReleasePhase::Live).await;
    let seen = reconcile_count("release", Some(&ns.name), "rv-2").await;
    annotate(&api, "rv-2", "e2e.phaseloop.dev/nudge", "1").await;
    reconciled_again("release", Some(&ns.name), "rv-2", seen, 1).await;
    assert_eq!(api.get("rv-2").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live), "{live:?}");
    // An abort of the Live Release is refused the same way.
    annotate(&api, "rv-2", "phaseloop.dev/abort", ADMIN).await;
    let r = wait_for(&api, "rv-2", WAIT, |r: Option<&Release>| {
        r.is_some_and(|r| !r.annotations().contains_key("phaseloop.dev/abort"))
    })
    .await
    .unwrap();
    assert_eq!(condition(&r, "RequestRefused").unwrap().reason, "AbortRefused");
    assert_eq!(r.status.unwrap().phase, Some(ReleasePhase::Live));
}

/// A third Release created while the second's revert window was open: the version before last
/// served beside versions 2 and 3, and two Releases wrote the Service's selector in turn.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_rollout_inside_an_open_revert_window_takes_the_version_before_last_out_first() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-window").await;
    create(&release(&ns.name, "win", "1", 4, json!({})));
    wait_release_phase(&api, "win-1", ReleasePhase::Live).await;
    create(&release(&ns.name, "win", "2", 4, json!({})));
    wait_release_phase(&api, "win-2", ReleasePhase::Live).await;
    kubectl_wait_condition(&ns.name, "win-2", "RevertReady");
    let monitor = Monitor::start(&client, &ns.name, "win").await;
    monitor.mark("third");
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "5s"}}]}});
    create(&release(&ns.name, "win", "3", 4, canary));
    wait_release_phase(&api, "win-3", ReleasePhase::Live).await;
    assert!(event_about(&client, &ns.name, "win-3", "RevertWindowClosed").await.contains("win-1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = monitor.stop().await; // never more than two versions
    t.assert_never_empty("a rollout inside an open window");
    t.assert_while(
        "the version before last never serves once the new rollout began",
        |s| s.at >= t.mark("third") && s.releases.contains_key("win-3"),
        |s| s.endpoints.get("1").copied().unwrap_or(0) == 0 || s.pods.get("3").copied().unwrap_or(0) == 0,
    );
}

/// A Release named with a dot and a `testEnvironment` never tested: the test Environment's name
/// was not a DNS label.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_release_named_with_a_dot_is_tested_in_its_test_environment() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("dots-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"tier": "staging"}}));
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    let rel = with_spec(
        named(with_test(release(&name, "dot", "1.0.0", 1, json!({})), false), "dot.v1"),
        json!({"testEnvironment": {"ttl": "10m"}}),
    );
    create(&rel);
    let r = wait_release_phase(&api, "dot.v1", ReleasePhase::Live).await;
    let status = r.status.unwrap();
    assert_eq!(status.tests[0].phase, phaseloop::api::TestPhase::Succeeded, "{:?}", status.message);
}

/// Plugin errors are one line a person reads, even with RUST_BACKTRACE set.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn plugin_errors_are_one_line_without_a_backtrace() {
    let _shared = shared().await;
    let out = std::process::Command::new("kubectl")
        .args(["phaseloop", "status", "no-such-release", "-n", "default"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains("no-such-release"), "{stderr}");
}

fn kubectl_wait_condition(ns: &str, release: &str, condition: &str) {
    let out = kubectl(&[
        "wait",
        "-n",
        ns,
        &format!("rel/{release}"),
        &format!("--for=condition={condition}"),
        "--timeout=120s",
    ]);
    assert!(out.ok, "kubectl wait --for=condition={condition} rel/{release}: {}", out.stderr);
}
