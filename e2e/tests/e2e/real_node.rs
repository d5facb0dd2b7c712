//! Scenarios on the real node: pods that run (containerd + runc on `real-node-0`), real traffic
//! through kube-proxy or the node's Gateway (Traefik) from inside the node's network namespace, the
//! demo app's own metrics in the node's Prometheus, and the operator itself running as a pod
//! installed by Helm from its image (run-e2e.sh: `helm upgrade` with the image built here; the
//! host-process operator has stopped, so the pod holds the chart's Lease and is the one
//! reconciling).
//!
//! Every figure (failed requests, seconds, latency) is printed for the documentation; timings are
//! never asserted. What is asserted could fail: which version answered, how many requests failed.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Service},
};
use kube::{Api, Client, api::ListParams};
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::{
    TestNamespace, client, create, eventually,
    gateway::{self, backend, header_rule, http_route, weighted_rule},
    kubectl,
    real_node::{
        self, Request, Target, Traffic, demo_deployment, demo_release, demo_service, errors, first_requests, now_ms,
        service_ip, summarize,
    },
    wait_release_phase,
};
use serde_json::json;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_e2e-traffic");
const RATE: f64 = 40.0;

/// Errors per request of the Release's own version over 30s; 0 without requests.
const ERROR_RATIO: &str = r#"sum(increase(http_requests_total{namespace="{{namespace}}",app="{{app}}",version="{{version}}",code=~"5.."}[30s])) / clamp_min(sum(increase(http_requests_total{namespace="{{namespace}}",app="{{app}}",version="{{version}}"}[30s])), 1)"#;

async fn phase(api: &Api<Release>, name: &str) -> Option<ReleasePhase> {
    api.get(name).await.ok()?.status?.phase
}

/// Waits for one of `phases`, returning it and when it was seen.
async fn wait_phase_any(api: &Api<Release>, name: &str, phases: &[ReleasePhase], timeout: Duration) -> ReleasePhase {
    eventually(&format!("{name} in one of {phases:?}"), timeout, || async {
        phase(api, name).await.filter(|p| phases.contains(p))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The app's Service URL inside the node's namespace (port 80).
async fn app_url(client: &Client, ns: &str, svc: &str) -> String {
    let ip = service_ip(client, ns, svc).await.unwrap();
    format!("http://{ip}/")
}

/// Waits until the last `window` of requests were all answered by `version` (and succeeded);
/// returns the time of the first of them (unix ms).
async fn wait_all_answered_by(traffic: &Traffic, version: &str, window: Duration, timeout: Duration) -> u64 {
    let w = window.as_millis() as u64;
    eventually(&format!("every request answered by {version} for {window:?}"), timeout, || async {
        let recs = traffic.records();
        let now = now_ms();
        let recent: Vec<&Request> = recs.iter().filter(|r| r.t + 2500 < now && r.t + 2500 + w >= now).collect();
        let ok = recent.len() as f64 >= RATE * window.as_secs_f64() * 0.5
            && recent.iter().all(|r| r.version == version && !r.failed());
        if !ok {
            return None;
        }
        // The first request of the final run answered by `version`.
        let last_other = recs.iter().filter(|r| r.version != version || r.failed()).map(|r| r.t).max().unwrap_or(0);
        recs.iter().map(|r| r.t).filter(|t| *t > last_other).min()
    })
    .await
    .unwrap()
}

/// Seconds from `at` to the last request answered by `version` (negative: before `at`).
fn last_answer_by(recs: &[Request], version: &str, at: u64) -> String {
    match recs.iter().filter(|r| r.version == version).map(|r| r.t).max() {
        Some(t) => format!("{:+.1}s", (t as f64 - at as f64) / 1000.0),
        None => "never".into(),
    }
}

/// An app's first version (1.0.0) Live with `replicas`, under steady traffic that it alone answers.
struct Serving {
    client: Client,
    ns: TestNamespace,
    api: Api<Release>,
    traffic: Traffic,
}

async fn live_under_traffic(
    prefix: &str,
    app: &str,
    replicas: i32,
    strategy: serde_json::Value,
    label: &str,
) -> Serving {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&demo_release(&ns.name, app, "1.0.0", replicas, &[], strategy));
    wait_release_phase(&api, &format!("{app}-1-0-0"), ReleasePhase::Live).await;
    let traffic = Traffic::start(TRAFFIC, &app_url(&client, &ns.name, app).await, RATE, label);
    wait_all_answered_by(&traffic, "1.0.0", Duration::from_secs(3), Duration::from_secs(60)).await;
    Serving { client, ns, api, traffic }
}

fn report(scenario: &str, what: &str, s: impl std::fmt::Display) {
    eprintln!("[real-node] {scenario}: {what}: {s}");
}

/// Scenario 1: a canary that really answers 5% of its requests with 500 is rolled back by the
/// analysis of its own metrics (scraped from its pods), under steady traffic.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_canary_that_fails_5_percent_of_real_requests_is_rolled_back_by_its_own_metrics() {
    let Serving { ns, api, traffic, .. } = live_under_traffic("rn-canary", "shop", 4, json!({}), "canary").await;

    let started = now_ms();
    let strategy = json!({
        "type": "Canary",
        "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "3m"}}, {"setWeight": 50}, {"pause": {"duration": "3m"}}]},
        "analysis": {"interval": "5s", "metrics": [
            {"name": "error-ratio", "query": ERROR_RATIO, "max": 0.01, "failureLimit": 1, "inconclusiveLimit": 30}
        ]}
    });
    create(&demo_release(&ns.name, "shop", "2.0.0", 4, &["--error-rate=0.05"], strategy));
    let seen =
        wait_phase_any(&api, "shop-2-0-0", &[ReleasePhase::RolledBack, ReleasePhase::Failed], Duration::from_secs(300))
            .await;
    let rolled_back = now_ms();
    let back = wait_all_answered_by(&traffic, "1.0.0", Duration::from_secs(5), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs = traffic.stop();

    let r2 = api.get("shop-2-0-0").await.unwrap();
    let status = r2.status.unwrap();
    let before = summarize(&recs, started, rolled_back);
    let all = summarize(&recs, 0, u64::MAX);
    report("canary 5% errors", "before the rollback", &before);
    report("canary 5% errors", "whole run", &all);
    report("canary 5% errors", "analysis", format!("{:?}", status.analysis));
    report(
        "canary 5% errors",
        "seconds",
        format!(
            "create -> {seen:?} seen {:.1}s; last 2.0.0 answer {} from then; steady on 1.0.0 from {:+.1}s",
            (rolled_back - started) as f64 / 1000.0,
            last_answer_by(&recs, "2.0.0", rolled_back),
            (back as f64 - rolled_back as f64) / 1000.0
        ),
    );
    assert_eq!(seen, ReleasePhase::RolledBack, "{:?}", status.message);
    let failed_analysis = status.analysis.iter().find(|a| a.name == "error-ratio").expect("the analysis ran");
    assert!(failed_analysis.failures > 0, "{failed_analysis:?}");
    assert!(before.by_version.get("2.0.0").copied().unwrap_or(0) > 0, "the canary served real requests: {before}");
    assert!(all.failed_by_version.get("2.0.0").copied().unwrap_or(0) > 0, "the canary really failed requests");
    // Only the canary's own 500s: the stable version and the rollback itself dropped nothing.
    let other_failures: Vec<&Request> =
        recs.iter().filter(|r| r.failed() && !(r.status == 500 && r.version == "2.0.0")).collect();
    assert!(other_failures.is_empty(), "failures beyond the canary's 500s: {:?}", errors(&recs));
}

/// Scenario 2: a version whose container exits at start never becomes ready; at the progress
/// deadline it is rolled back, and the stable version answers every request meanwhile.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_version_that_crashes_at_start_is_rolled_back_at_the_deadline_without_failed_requests() {
    let Serving { client, ns, api, traffic } = live_under_traffic("rn-crash", "api", 2, json!({}), "crash").await;

    let started = now_ms();
    create(&demo_release(&ns.name, "api", "2.0.0", 2, &["--exit-at-start=3"], json!({"progressDeadline": "40s"})));
    // The candidate's containers really ran and exited with the code they were given: read while
    // the rollout runs (the rollback removes the pods, and with them what they exited with).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let exit_codes = || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/version=2.0.0")).await;
        list.map(|l| l.items)
            .unwrap_or_default()
            .iter()
            .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
            .filter_map(|c| {
                let terminated =
                    c.last_state.as_ref()?.terminated.as_ref().or(c.state.as_ref()?.terminated.as_ref())?;
                Some(terminated.exit_code)
            })
            .collect::<Vec<i32>>()
    };
    let phases = [ReleasePhase::RolledBack, ReleasePhase::Failed];
    let mut exits: Vec<i32> = Vec::new();
    let seen = loop {
        exits.extend(exit_codes().await);
        let phase = api.get("api-2-0-0").await.ok().and_then(|r| r.status.and_then(|s| s.phase));
        if let Some(p) = phase.filter(|p| phases.contains(p)) {
            break p;
        }
        assert!(now_ms() - started < 180_000, "api-2-0-0 neither RolledBack nor Failed after 180s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let ended = now_ms();
    exits.sort();
    exits.dedup();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let recs = traffic.stop();
    let during = summarize(&recs, started, ended);
    report("crash at start", "during the rollout", &during);
    report("crash at start", "seconds", format!("create -> {seen:?} {:.1}s", (ended - started) as f64 / 1000.0));
    report("crash at start", "exit codes of the candidate's containers", format!("{exits:?}"));
    assert_eq!(seen, ReleasePhase::RolledBack);
    assert!(exits.contains(&3), "the candidate's containers exited with code 3: {exits:?}");
    assert_eq!(during.failed, 0, "no failed request on the stable version: {:?}", errors(&recs));
    assert_eq!(during.by_version.keys().collect::<Vec<_>>(), ["1.0.0"], "only the stable version answered");
}

/// Scenario 3: a revert within the window: the previous version takes every request back, at once
/// (it was kept warm) and without failed requests.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_revert_within_the_window_serves_the_previous_version_again_without_failed_requests() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rn-revert").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&demo_release(&ns.name, "web", "1.0.0", 3, &[], json!({})));
    wait_release_phase(&api, "web-1-0-0", ReleasePhase::Live).await;
    let traffic = Traffic::start(TRAFFIC, &app_url(&client, &ns.name, "web").await, RATE, "revert");
    create(&demo_release(&ns.name, "web", "2.0.0", 3, &[], json!({})));
    wait_release_phase(&api, "web-2-0-0", ReleasePhase::Live).await;
    wait_all_answered_by(&traffic, "2.0.0", Duration::from_secs(3), Duration::from_secs(60)).await;
    // Kept warm: the previous version's ready pods at the moment of the revert.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let warm = deployments.get("web-1-0-0").await.ok().and_then(|d| d.status?.ready_replicas).unwrap_or(0);

    let reverted = now_ms();
    let out = kubectl(&["phaseloop", "revert", "web-2-0-0", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "web-2-0-0", ReleasePhase::Reverted).await;
    let back = wait_all_answered_by(&traffic, "1.0.0", Duration::from_secs(5), Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs = traffic.stop();
    let after = summarize(&recs, reverted, u64::MAX);
    report("revert", "after the revert", &after);
    report(
        "revert",
        "seconds",
        format!(
            "revert -> every request on 1.0.0: {:.1}s (last 2.0.0 answer {}); previous version's ready pods at the revert: {warm}",
            back.saturating_sub(reverted) as f64 / 1000.0,
            last_answer_by(&recs, "2.0.0", reverted)
        ),
    );
    assert_eq!(summarize(&recs, 0, u64::MAX).failed, 0, "failed requests: {:?}", errors(&recs));
    assert!(warm >= 3, "the previous version is kept warm for the revert window: {warm} ready pods, want 3");
}

/// Scenario 4a: a BlueGreen switch under load: production traffic stays on the stable version
/// during the preview, switches at once, and no request fails. The candidate's replicas become
/// ready at different times (up to 12s apart), so the preview lasts while some are already ready.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_blue_green_switch_under_load_fails_no_request_and_keeps_the_preview_private() {
    let bg = json!({"type": "BlueGreen"});
    let Serving { client, ns, api, traffic } =
        live_under_traffic("rn-bluegreen", "blog", 3, bg.clone(), "bluegreen").await;

    // The moment the production Service switches, seen from a watch-speed poll of its selector.
    let started = now_ms();
    create(&demo_release(&ns.name, "blog", "2.0.0", 3, &["--ready-after-max-ms=12000"], bg));
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let deadline = Instant::now() + Duration::from_secs(180);
    let switched = loop {
        let sel = services.get("blog").await.ok().and_then(|s| s.spec?.selector).unwrap_or_default();
        if sel.get("app.kubernetes.io/version").map(String::as_str) == Some("2.0.0") {
            break now_ms();
        }
        assert!(Instant::now() < deadline, "blog never selected 2.0.0: {sel:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_release_phase(&api, "blog-2-0-0", ReleasePhase::Live).await;
    let done = wait_all_answered_by(&traffic, "2.0.0", Duration::from_secs(5), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs = traffic.stop();
    // Requests sent before the switch was seen (less the 100ms poll and the API round trip).
    let preview = summarize(&recs, started, switched.saturating_sub(300));
    let switch = summarize(&recs, switched.saturating_sub(5000), switched + 5000);
    report("blue-green", "preview (production Service)", &preview);
    report("blue-green", "switch ±5s", &switch);
    report(
        "blue-green",
        "seconds",
        format!(
            "create -> switch {:.1}s; switch -> every request on 2.0.0 {:.1}s",
            (switched - started) as f64 / 1000.0,
            done.saturating_sub(switched) as f64 / 1000.0
        ),
    );
    assert_eq!(summarize(&recs, 0, u64::MAX).failed, 0, "failed requests: {:?}", errors(&recs));
    assert_eq!(
        preview.by_version.keys().collect::<Vec<_>>(),
        ["1.0.0"],
        "during the preview production traffic reaches only the stable version: {preview}"
    );
}

/// Scenario 4b: a Rolling update under load fails no request.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_rolling_update_under_load_fails_no_request() {
    let Serving { ns, api, traffic, .. } = live_under_traffic("rn-rolling", "cart", 3, json!({}), "rolling").await;
    let started = now_ms();
    create(&demo_release(&ns.name, "cart", "2.0.0", 3, &[], json!({})));
    wait_release_phase(&api, "cart-2-0-0", ReleasePhase::Live).await;
    let live = now_ms();
    let done = wait_all_answered_by(&traffic, "2.0.0", Duration::from_secs(5), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs = traffic.stop();
    let during = summarize(&recs, started, done + 5000);
    report("rolling", "during the update (until 5s after the last 1.0.0 answer)", &during);
    report("rolling", "before the update", summarize(&recs, 0, started));
    report(
        "rolling",
        "seconds",
        format!(
            "create -> Live {:.1}s; create -> every request on 2.0.0 {:.1}s",
            (live - started) as f64 / 1000.0,
            (done - started) as f64 / 1000.0
        ),
    );
    assert_eq!(summarize(&recs, 0, u64::MAX).failed, 0, "failed requests: {:?}", errors(&recs));
    assert!(during.by_version.contains_key("2.0.0") && during.by_version.contains_key("1.0.0"), "{during}");
    assert_eq!(summarize(&recs, done, u64::MAX).by_version.keys().collect::<Vec<_>>(), ["2.0.0"]);
}

/// Scenario 5: autoscaling from the app's real request rate: a load step, and the seconds until
/// the new pods serve.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn autoscaling_follows_the_real_request_rate() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rn-scale").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let mut rel = demo_release(&ns.name, "feed", "1.0.0", 1, &[], json!({}));
    rel["spec"]["scaling"] = json!({
        "minReplicas": 1, "maxReplicas": 4, "interval": "5s",
        "metric": {"query": r#"sum(rate(http_requests_total{namespace="{{namespace}}",app="{{app}}"}[20s]))"#,
                   "targetPerReplica": 15}
    });
    create(&rel);
    wait_release_phase(&api, "feed-1-0-0", ReleasePhase::Live).await;
    let url = app_url(&client, &ns.name, "feed").await;
    let base = Traffic::start(TRAFFIC, &url, 10.0, "scale-base");
    // At 10 req/s one replica carries the load; wait until the autoscaler has seen it.
    eventually("feed observes the base load", Duration::from_secs(90), || async {
        let s = api.get("feed-1-0-0").await.ok()?.status?.scaling?;
        (s.observed_value? > 5.0 && s.desired_replicas? == 1).then_some(())
    })
    .await
    .unwrap();

    let step = now_ms();
    let step_at = Instant::now();
    let extra = Traffic::start(TRAFFIC, &url, 35.0, "scale-step"); // 45 req/s: 3 replicas of 15
    let desired = eventually("feed wants 3 replicas", Duration::from_secs(120), || async {
        let s = api.get("feed-1-0-0").await.ok()?.status?.scaling?;
        (s.desired_replicas? >= 3).then(|| step_at.elapsed())
    })
    .await
    .unwrap();
    // Serving: three distinct pods answered within the last 2 seconds.
    let serving = eventually("3 pods serve", Duration::from_secs(120), || async {
        let now = now_ms();
        let mut pods: Vec<String> = extra
            .records()
            .into_iter()
            .chain(base.records())
            .filter(|r| r.t + 2000 >= now && !r.failed())
            .map(|r| r.pod)
            .collect();
        pods.sort();
        pods.dedup();
        (pods.len() >= 3).then(|| step_at.elapsed())
    })
    .await
    .unwrap();
    let recs: Vec<Request> = extra.stop().into_iter().chain(base.stop()).collect();
    let after = summarize(&recs, step, u64::MAX);
    let status = api.get("feed-1-0-0").await.unwrap().status.unwrap().scaling.unwrap();
    report("autoscaling", "after the step", &after);
    report(
        "autoscaling",
        "seconds",
        format!(
            "load step 10 -> 45 req/s: desired 3 after {:.1}s, 3 pods serving after {:.1}s (observed {:?} req/s)",
            desired.as_secs_f64(),
            serving.as_secs_f64(),
            status.observed_value
        ),
    );
    assert_eq!(after.failed, 0, "failed requests: {:?}", errors(&recs));
    // The series the autoscaler read come from the pods themselves: one per serving pod.
    let query = format!("http_requests_total{{namespace=\"{}\",app=\"feed\",code=\"200\"}}", ns.name);
    eventually("one series per pod in the node's Prometheus", Duration::from_secs(60), || async {
        (real_node::prom_query(&query).await.ok()?.len() >= 3).then_some(())
    })
    .await
    .unwrap();
}

/// Scenario 6: the operator runs as a pod on the real node, from the image built here, installed by
/// `helm install`/`upgrade` under the restricted Pod Security Standard with the chart's
/// ServiceAccount; it holds the Lease, reconciles a Release to Live, and `helm test` passes.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn the_operator_installed_by_helm_from_its_image_runs_on_the_node_and_reconciles() {
    let client = client().await;
    let system = std::env::var("PHASELOOP_NAMESPACE").unwrap_or_else(|_| "phaseloop-system".into());
    let image = std::env::var("E2E_OPERATOR_IMAGE").expect("E2E_OPERATOR_IMAGE (run-e2e.sh)");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &system);
    let operator = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=phaseloop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.metadata.deletion_timestamp.is_none())
        .expect("an operator pod");
    let spec = operator.spec.clone().unwrap();
    let name = operator.metadata.name.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(real_node::node_name().as_str()));
    assert_eq!(spec.containers[0].image.as_deref(), Some(image.as_str()));
    assert_eq!(spec.service_account_name.as_deref(), Some("phaseloop"));
    let ready = operator.status.as_ref().and_then(|s| s.container_statuses.as_ref()).is_some_and(|c| c[0].ready);
    assert!(ready, "the operator pod is ready");
    let ns_labels = kubectl(&["get", "ns", &system, "-o", "jsonpath={.metadata.labels}"]);
    assert!(ns_labels.stdout.contains(r#""pod-security.kubernetes.io/enforce":"restricted""#), "{}", ns_labels.stdout);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &system);
    let holder =
        leases.list(&ListParams::default()).await.unwrap().items.into_iter().find_map(|l| l.spec?.holder_identity);
    assert_eq!(holder.as_deref(), Some(name.as_str()), "the pod holds the chart's Lease");

    let ns = TestNamespace::new(&client, "rn-helm").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    create(&demo_release(&ns.name, "hello", "1.0.0", 2, &[], json!({})));
    wait_release_phase(&api, "hello-1-0-0", ReleasePhase::Live).await;
    let live = started.elapsed();
    let ip = service_ip(&client, &ns.name, "hello").await.unwrap();
    let out = real_node::in_netns(&["curl", "-fsS", "--max-time", "5", &format!("http://{ip}/")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.0.0", "{}", String::from_utf8_lossy(&out.stderr));

    let helm = std::process::Command::new("helm")
        .args(["test", "phaseloop", "-n", &system, "--timeout", "120s"])
        .output()
        .expect("helm runs");
    let helm_out = String::from_utf8_lossy(&helm.stdout);
    report("operator from its image", "Release to Live", format!("{:.1}s", live.as_secs_f64()));
    report(
        "operator from its image",
        "helm test",
        helm_out.lines().filter(|l| l.contains("Phase")).collect::<Vec<_>>().join("; "),
    );
    assert!(helm.status.success(), "helm test: {helm_out}{}", String::from_utf8_lossy(&helm.stderr));
}

/// Scenario 7: a cold revert (`warmReplicas: 0`) under load: the previous version starts while
/// the current one keeps answering alone, then takes every request; no request fails.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_cold_revert_under_load_switches_once_the_previous_version_is_ready_without_failed_requests() {
    let cold = json!({"warmReplicas": 0});
    let Serving { client, ns, api, traffic } =
        live_under_traffic("rn-coldrevert", "cold", 3, cold.clone(), "cold").await;
    create(&demo_release(&ns.name, "cold", "2.0.0", 3, &[], cold));
    wait_release_phase(&api, "cold-2-0-0", ReleasePhase::Live).await;
    wait_all_answered_by(&traffic, "2.0.0", Duration::from_secs(3), Duration::from_secs(60)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually("the previous version cold", Duration::from_secs(60), || async {
        let d = deployments.get("cold-1-0-0").await.ok()?;
        (d.spec.replicas == Some(0)).then_some(())
    })
    .await
    .unwrap();

    let reverted = now_ms();
    let out = kubectl(&["phaseloop", "revert", "cold-2-0-0", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "cold-2-0-0", ReleasePhase::Reverted).await;
    let back = wait_all_answered_by(&traffic, "1.0.0", Duration::from_secs(5), Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs = traffic.stop();
    report("cold revert", "after the revert", summarize(&recs, reverted, u64::MAX));
    report(
        "cold revert",
        "seconds",
        format!(
            "revert -> every request on 1.0.0: {:.1}s (last 2.0.0 answer {})",
            back.saturating_sub(reverted) as f64 / 1000.0,
            last_answer_by(&recs, "2.0.0", reverted)
        ),
    );
    assert_eq!(summarize(&recs, 0, u64::MAX).failed, 0, "failed requests: {:?}", errors(&recs));
}

/// Scenario 8: the candidate deleted at the switch, while the previous version's warm pods take
/// seconds to be Ready: the candidate answers until they are, then the previous version answers
/// alone; no request fails (the app's Service was deleted with the candidate before).
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_candidate_deleted_at_the_switch_under_load_fails_no_request() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rn-delcand").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&demo_release(&ns.name, "del", "1.0.0", 3, &["--ready-after-max-ms=10000"], json!({})));
    wait_release_phase(&api, "del-1-0-0", ReleasePhase::Live).await;
    let traffic = Traffic::start(TRAFFIC, &app_url(&client, &ns.name, "del").await, RATE, "delcand");
    wait_all_answered_by(&traffic, "1.0.0", Duration::from_secs(3), Duration::from_secs(60)).await;
    create(&demo_release(&ns.name, "del", "2.0.0", 3, &[], json!({})));
    eventually("del-2-0-0 at the switch", Duration::from_secs(120), || async {
        let s = api.get("del-2-0-0").await.ok()?.status?;
        s.message.as_deref().unwrap_or_default().contains("switching").then_some(())
    })
    .await
    .unwrap();
    let deleted = now_ms();
    let out = kubectl(&["delete", "rel", "del-2-0-0", "-n", &ns.name, "--wait=false"]);
    assert!(out.ok, "{}", out.stderr);
    let back = wait_all_answered_by(&traffic, "1.0.0", Duration::from_secs(5), Duration::from_secs(120)).await;
    eventually("del-2-0-0 gone", Duration::from_secs(120), || async {
        api.get_opt("del-2-0-0").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    let recs = traffic.stop();
    report("candidate deleted", "after the delete", summarize(&recs, deleted, u64::MAX));
    report(
        "candidate deleted",
        "seconds",
        format!(
            "delete -> every request on 1.0.0: {:.1}s (last 2.0.0 answer {})",
            back.saturating_sub(deleted) as f64 / 1000.0,
            last_answer_by(&recs, "2.0.0", deleted)
        ),
    );
    assert_eq!(summarize(&recs, 0, u64::MAX).failed, 0, "failed requests: {:?}", errors(&recs));
    assert_eq!(phase(&api, "del-1-0-0").await, Some(ReleasePhase::Live));
}

/// Requests per weight step through the Gateway, and the tolerance on the share (points).
const GATEWAY_REQUESTS: usize = 2000;
const GATEWAY_TOLERANCE: f64 = 2.0;
const GATEWAY_RATE: f64 = 80.0;

/// Scenario 9: the Gateway alone, with plain objects (no Release, the operator not involved):
/// Traefik inside the node's namespace routes an HTTPRoute's requests to pod addresses by its
/// weighted backendRefs (95/5, 50/50, 100/0) and sends every request with an exact header to the
/// second version at any weight, under steady load and without a failed request.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_gateway_splits_requests_by_route_weight_and_sends_header_matches_to_their_backend() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rn-gateway").await;
    for (deployment, service, version) in [("web-1", "web-v1", "1.0.0"), ("web-2", "web-v2", "2.0.0")] {
        create(&demo_deployment(&ns.name, deployment, "web", version, 2));
        create(&demo_service(&ns.name, service, json!({"app": "web", "version": version})));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for d in ["web-1", "web-2"] {
        eventually(&format!("{d} has 2 ready replicas"), Duration::from_secs(120), || async {
            (deployments.get(d).await.ok()?.status?.ready_replicas? == 2).then_some(())
        })
        .await
        .unwrap();
    }

    let host = format!("web.{}.test", ns.name);
    let (header, value) = ("x-phaseloop-canary", "always");
    let route = |stable: u32, canary: u32| {
        http_route(
            &ns.name,
            "web",
            &host,
            vec![
                header_rule(header, value, vec![backend("web-v2", 1)]),
                weighted_rule(vec![backend("web-v1", stable), backend("web-v2", canary)]),
            ],
        )
    };
    let url = gateway::url(&client).await.unwrap();
    let plain = Target::new(&url).host(&host);
    let mut traffic: Option<(Traffic, Traffic)> = None;
    let mut steps = Vec::new();
    for (stable, canary) in [(95, 5), (50, 50), (100, 0)] {
        let written = now_ms();
        gateway::apply_route(&client, &route(stable, canary)).await.unwrap();
        let live = gateway::wait_route_live(&client, &ns.name, "web", Duration::from_secs(60)).await.unwrap();
        // The load starts once the first rules are live and runs through every change.
        let (load, matched) = traffic.get_or_insert_with(|| {
            (
                Traffic::start_to(TRAFFIC, &plain, GATEWAY_RATE, "gateway"),
                Traffic::start_to(TRAFFIC, &plain.clone().header(header, value), 10.0, "gateway-header"),
            )
        });
        let window = first_requests(load, live, GATEWAY_REQUESTS, Duration::from_secs(120)).await.unwrap();
        let end = window.last().unwrap().t + 1;
        let s = summarize(&window, live, end);
        let m = summarize(&matched.records(), live, end);
        let share = 100.0 * s.by_version.get("2.0.0").copied().unwrap_or(0) as f64 / s.requests as f64;
        report(
            "gateway",
            &format!("weights {stable}/{canary}"),
            format!(
                "live {:.1}s after the write; 2.0.0 answered {share:.2}% of {}: {s}; header-matched: {m}",
                (live - written) as f64 / 1000.0,
                s.requests
            ),
        );
        steps.push((canary, share, s, m));
    }
    let (load, matched) = traffic.unwrap();
    let (all, all_matched) = (load.stop(), matched.stop());
    report("gateway", "whole run, unmatched", summarize(&all, 0, u64::MAX));
    report("gateway", "whole run, header-matched", summarize(&all_matched, 0, u64::MAX));

    let failed: Vec<Request> = all.iter().chain(&all_matched).filter(|r| r.failed()).cloned().collect();
    assert!(failed.is_empty(), "failed requests: {:?}", errors(&failed));
    for (canary, share, s, m) in &steps {
        assert_eq!(s.requests, GATEWAY_REQUESTS);
        assert!(
            (share - f64::from(*canary)).abs() <= GATEWAY_TOLERANCE,
            "at weight {canary} the second version answered {share:.2}% of the requests: {s}"
        );
        assert!(m.requests > 0, "header-matched requests were sent at weight {canary}");
        assert_eq!(m.by_version.keys().collect::<Vec<_>>(), ["2.0.0"], "header-matched at weight {canary}: {m}");
    }
    // At weight 0 the second version answered no request without the header.
    assert_eq!(steps[2].2.by_version.keys().collect::<Vec<_>>(), ["1.0.0"], "{}", steps[2].2);
    assert_eq!(
        summarize(&all_matched, 0, u64::MAX).by_version.keys().collect::<Vec<_>>(),
        ["2.0.0"],
        "every header-matched request reached the second version"
    );
}

/// The route as its owner writes it: one rule, `web`, to the app's Service; phaseloop steers its
/// backendRefs.
fn owners_route(ns: &str, host: &str) -> serde_json::Value {
    let mut rule = weighted_rule(vec![backend("web", 1)]);
    rule["name"] = json!("web");
    http_route(ns, "web", host, vec![rule])
}

/// A Canary steered through HTTPRoute `web`'s rule `web`, with `steps`.
fn through_the_route(steps: serde_json::Value) -> serde_json::Value {
    json!({"type": "Canary", "canary": {"steps": steps,
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "web", "rules": ["web"]}]}}}})
}

/// Scenario 10: a Release steered through the Gateway. Under steady load, at each step of a
/// canary (a header route at weight 0, then 5% and 50%) the share of requests the candidate
/// answers is the step's weight within 2 points over 2,000 requests, and every request with the
/// header (only those, at weight 0) reaches it; then an abort and a revert, each moving the route
/// before the pods. No request fails over the whole run.
#[tokio::test]
#[ignore = "needs the real node: make e2e"]
async fn a_release_through_the_gateway_gets_exact_weights_and_header_routes_and_goes_back_without_a_failed_request() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rn-routed").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let host = format!("web.{}.test", ns.name);
    let (header, value) = ("x-phaseloop-canary", "always");
    gateway::apply_route(&client, &owners_route(&ns.name, &host)).await.unwrap();
    create(&demo_release(&ns.name, "web", "1.0.0", 4, &[], through_the_route(json!([{"setWeight": 100}]))));
    wait_release_phase(&api, "web-1-0-0", ReleasePhase::Live).await;
    let url = gateway::url(&client).await.unwrap();
    let live = gateway::wait_route_live(&client, &ns.name, "web", Duration::from_secs(120)).await.unwrap();
    let plain = Target::new(&url).host(&host);
    let load = Traffic::start_to(TRAFFIC, &plain, GATEWAY_RATE, "routed");
    let matched = Traffic::start_to(TRAFFIC, &plain.clone().header(header, value), 10.0, "routed-header");
    first_requests(&load, live, 200, Duration::from_secs(60)).await.unwrap();

    let steps = json!([{"setHeaderRoute": {"name": header, "exact": value}}, {"pause": {}},
        {"setWeight": 5}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    create(&demo_release(&ns.name, "web", "2.0.0", 4, &[], through_the_route(steps)));
    let mut measured = Vec::new();
    for weight in [0, 5, 50] {
        eventually(&format!("web-2-0-0 paused at {weight}%"), Duration::from_secs(180), || async {
            let s = api.get("web-2-0-0").await.ok()?.status?;
            (s.phase == Some(ReleasePhase::Paused) && s.weight == Some(weight)).then_some(())
        })
        .await
        .unwrap();
        let live = gateway::wait_route_live(&client, &ns.name, "web", Duration::from_secs(60)).await.unwrap();
        let window = first_requests(&load, live, GATEWAY_REQUESTS, Duration::from_secs(120)).await.unwrap();
        let end = window.last().unwrap().t + 1;
        let (s, m) = (summarize(&window, live, end), summarize(&matched.records(), live, end));
        let share = 100.0 * s.by_version.get("2.0.0").copied().unwrap_or(0) as f64 / s.requests as f64;
        report(
            "routed",
            &format!("weight {weight}"),
            format!("2.0.0 answered {share:.2}% of {s}; header-matched: {m}"),
        );
        measured.push((weight, share, s, m));
        let out = kubectl(&["phaseloop", "promote", "web-2-0-0", "-n", &ns.name]);
        if weight == 50 {
            // The last pause is left by an abort instead.
            break;
        }
        assert!(out.ok, "{}", out.stderr);
    }
    // At 50%: an abort moves the route back first, then the candidate's pods go.
    let abort = now_ms();
    let out = kubectl(&["phaseloop", "abort", "web-2-0-0", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "web-2-0-0", ReleasePhase::RolledBack).await;
    let back = wait_all_answered_by(&load, "1.0.0", Duration::from_secs(3), Duration::from_secs(120)).await;
    report(
        "routed",
        "abort",
        format!("every request answered by 1.0.0 {:.2}s after the abort", (back as f64 - abort as f64) / 1000.0),
    );
    // A third version goes Live through the route, and is reverted within its window.
    create(&demo_release(&ns.name, "web", "3.0.0", 4, &[], through_the_route(json!([{"setWeight": 50}]))));
    wait_release_phase(&api, "web-3-0-0", ReleasePhase::Live).await;
    wait_all_answered_by(&load, "3.0.0", Duration::from_secs(3), Duration::from_secs(120)).await;
    let revert = now_ms();
    let out = kubectl(&["phaseloop", "revert", "web-3-0-0", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "web-3-0-0", ReleasePhase::Reverted).await;
    let back = wait_all_answered_by(&load, "1.0.0", Duration::from_secs(3), Duration::from_secs(120)).await;
    report(
        "routed",
        "revert",
        format!("every request answered by 1.0.0 {:.2}s after the revert", (back as f64 - revert as f64) / 1000.0),
    );
    let (all, all_matched) = (load.stop(), matched.stop());
    report("routed", "whole run, unmatched", summarize(&all, 0, u64::MAX));
    report("routed", "whole run, header-matched", summarize(&all_matched, 0, u64::MAX));

    let failed: Vec<Request> = all.iter().chain(&all_matched).filter(|r| r.failed()).cloned().collect();
    assert!(failed.is_empty(), "failed requests: {:?}", errors(&failed));
    for (weight, share, s, m) in &measured {
        assert_eq!(s.requests, GATEWAY_REQUESTS);
        assert!(
            (share - f64::from(*weight)).abs() <= GATEWAY_TOLERANCE,
            "at weight {weight} the candidate answered {share:.2}% of the requests: {s}"
        );
        assert!(m.requests > 0, "header-matched requests were sent at weight {weight}");
        assert_eq!(m.by_version.keys().collect::<Vec<_>>(), ["2.0.0"], "header-matched at weight {weight}: {m}");
    }
    assert_eq!(
        measured[0].2.by_version.keys().collect::<Vec<_>>(),
        ["1.0.0"],
        "at weight 0 only header matches reach 2.0.0"
    );
}
