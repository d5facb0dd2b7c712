//! Releases against a real API server and the running operator, seen from the traffic's side: every
//! rollout runs under the traffic-invariant monitor (the app Service's Ready endpoints by version,
//! sampled every 100 ms) with pods that become Ready over seconds. The deploy queue, the gates,
//! rolling, canary and blue-green rollouts, promotion, abort, rollback on analysis or on a missed
//! progress deadline, the warm revert window, protected deletion and refusals.
//!
//! Figures for the closing note are printed with `FIGURE` (timings are measured, never asserted).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client, ResourceExt};
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::{
    traffic::{self, Monitor},
    *,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

async fn setup(prefix: &str) -> (Client, TestNamespace, Api<Release>) {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    (client, ns, api)
}

/// Version 1 of `app` Live at `replicas`, and a Monitor of what its Service routes to from then on.
async fn live_and_watched(client: &Client, ns: &str, api: &Api<Release>, app: &str, replicas: i32) -> Monitor {
    create(&release(ns, app, "1", replicas, json!({})));
    wait_release_phase(api, &format!("{app}-1"), ReleasePhase::Live).await;
    Monitor::start(client, ns, app).await
}

/// `kubectl wait` as a user would, for a condition of a Release.
fn kubectl_wait(ns: &str, release: &str, condition: &str) {
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

/// Reverts `release` with the plugin and measures, on `monitor`, the seconds until every Ready
/// endpoint is `previous`'s and stays so.
async fn revert_and_measure(monitor: Monitor, ns: &str, release: &str, previous: &str, version: &str) -> f64 {
    let api: Api<Release> = Api::namespaced(client().await, ns);
    monitor.mark("revert");
    let out = kubectl(&["phaseloop", "revert", release, "-n", ns]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, release, ReleasePhase::Reverted).await;
    wait_release_phase(&api, previous, ReleasePhase::Live).await;
    // Let the endpoints settle, then look at the whole revert.
    eventually("previous-only endpoints", WAIT, || {
        let t = monitor.now();
        async move { t.samples.last().is_some_and(|s| s.only(version)).then_some(()) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = monitor.stop().await;
    t.assert_never_empty("revert");
    let from = t.mark("revert");
    t.settled_after(from, |s| s.only(version)).expect("the previous version took all traffic")
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_rolling_update_hands_over_within_its_surge_keeps_the_previous_version_warm_and_reverts_at_once() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-rolling").await;
    create(&release(&ns.name, "shop", "1", 4, json!({})));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    kubectl_wait(&ns.name, "shop-1", "Ready");
    let monitor = Monitor::start(&client, &ns.name, "shop").await;

    create(&release(&ns.name, "shop", "2", 4, json!({"rolling": {"maxSurge": 1, "maxUnavailable": 0}})));
    kubectl_wait(&ns.name, "shop-2", "Ready");
    let status = api.get("shop-2").await.unwrap().status.unwrap();
    assert_eq!(status.stable_release.as_deref(), Some("shop-1"));
    assert!(status.revert_window_ends_at.is_some());
    wait_release_phase(&api, "shop-1", ReleasePhase::Superseded).await;
    kubectl_wait(&ns.name, "shop-1", "Ready=false");
    kubectl_wait(&ns.name, "shop-1", "Available=false");
    assert_eq!(service_selects(&client, &ns.name, "shop").await.as_deref(), Some("2"));

    // The handover: never more than one pod above the total, never fewer Ready endpoints than it.
    monitor.seen("shop-1 Superseded", |s| s.phase("shop-1") == Some(ReleasePhase::Superseded)).await;
    let t = monitor.now();
    t.assert_never_empty("rolling update");
    t.assert_while(
        "maxSurge 1",
        |s| s.releases.get("shop-2").is_some_and(|r| r.step == Some(0)),
        |s| s.pods.values().sum::<usize>() <= 5,
    );
    t.assert_while(
        "maxUnavailable 0",
        |s| s.releases.get("shop-2").is_some_and(|r| r.step == Some(0) && r.phase == Some(ReleasePhase::Progressing)),
        |s| s.ready() >= 4,
    );
    eprintln!("FIGURE Rolling: minimum Ready endpoints during the rollout {} (total 4)", t.min_ready());
    // The window is warm: the previous version keeps its 4 Ready pods, out of the Service.
    t.assert_while(
        "warm window",
        |s| {
            s.phase("shop-2") == Some(ReleasePhase::Live)
                && s.at > t.first_after(Default::default(), |s| s.phase("shop-2") == Some(ReleasePhase::Live)).unwrap()
        },
        |s| s.ready_pods.get("1") == Some(&4) && s.only("2"),
    );
    let r1 = api.get("shop-1").await.unwrap();
    assert_eq!(condition(&api.get("shop-2").await.unwrap(), "RevertReady").unwrap().status, "True", "{r1:?}");

    let took = revert_and_measure(monitor, &ns.name, "shop-2", "shop-1", "1").await;
    eprintln!("FIGURE Rolling: revert to previous-only endpoints {took:.2}s");
    assert_eq!(replicas(&client, &ns.name, "shop-1").await, Some(4));
    assert_eq!(replicas(&client, &ns.name, "shop-2").await, Some(0));
    let r1 = api.get("shop-1").await.unwrap();
    assert!(r1.status.unwrap().message.unwrap().contains("revert of shop-2"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_canary_follows_its_weights_queues_the_next_release_and_keeps_the_previous_version_warm() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-canary").await;
    let monitor = live_and_watched(&client, &ns.name, &api, "cart", 4).await;

    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}});
    create(&release(&ns.name, "cart", "2", 4, canary));
    let r2 = wait_release_phase(&api, "cart-2", ReleasePhase::Paused).await;
    let status = r2.status.unwrap();
    assert_eq!((status.step_weight, status.candidate_replicas, status.stable_replicas), (Some(25), Some(1), Some(3)));
    assert_eq!(service_selects(&client, &ns.name, "cart").await, None, "both versions serve during the canary");

    // A third Release queues behind the rollout in flight; deleting it (it serves nothing) is immediate.
    create(&release(&ns.name, "cart", "3", 4, json!({})));
    let r3 = wait_for(&api, "cart-3", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.queue_position == Some(1))
    })
    .await
    .unwrap();
    assert_eq!(r3.status.unwrap().phase, Some(ReleasePhase::Pending));
    let out = kubectl(&["delete", "rel", "cart-3", "-n", &ns.name, "--timeout=60s"]);
    assert!(out.ok, "{}", out.stderr);

    tokio::time::sleep(Duration::from_secs(2)).await; // a paused stretch to compare weights on
    annotate(&api, "cart-2", "phaseloop.dev/promote", ADMIN).await;
    kubectl_wait(&ns.name, "cart-2", "Ready");
    monitor.seen("cart-2 Live", |s| s.phase("cart-2") == Some(ReleasePhase::Live)).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // some of the revert window, to look at
    let t = monitor.now();
    t.assert_never_empty("canary");
    t.assert_weight_is_what_serves("cart-2", "2");
    eprintln!("FIGURE Canary: minimum Ready endpoints during the rollout {} (total 4)", t.min_ready());
    let live = t.first_after(Default::default(), |s| s.phase("cart-2") == Some(ReleasePhase::Live)).unwrap();
    t.assert_while(
        "warm window",
        |s| s.at > live && s.phase("cart-2") == Some(ReleasePhase::Live),
        |s| s.ready_pods.get("1") == Some(&4) && s.only("2"),
    );
    let took = revert_and_measure(monitor, &ns.name, "cart-2", "cart-1", "1").await;
    eprintln!("FIGURE Canary: revert to previous-only endpoints {took:.2}s");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn blue_green_previews_without_production_traffic_then_switches_at_once() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-bluegreen").await;
    let monitor = live_and_watched(&client, &ns.name, &api, "blog", 2).await;
    create(&release(&ns.name, "blog", "2", 2, json!({"type": "BlueGreen"})));
    kubectl_wait(&ns.name, "blog-2", "Ready");
    monitor.seen("blog-2 Live", |s| s.phase("blog-2") == Some(ReleasePhase::Live)).await;
    assert_eq!(service_selects(&client, &ns.name, "blog").await.as_deref(), Some("2"));
    assert_eq!(service_selects(&client, &ns.name, "blog-preview").await.as_deref(), Some("2"));
    let t = monitor.now();
    t.assert_never_empty("blue-green");
    // The preview: the candidate runs at full size, and production traffic stays on the stable version.
    // (Step 0 is the preview; step 1 is the switch, one selector change.)
    let preview = |s: &traffic::Sample| {
        s.releases.get("blog-2").is_some_and(|r| r.step.unwrap_or(0) == 0 && r.phase != Some(ReleasePhase::Live))
    };
    t.assert_while("preview serves the stable version only", preview, |s| s.only("1"));
    t.assert_while(
        "the candidate's Ready pods do not serve before the switch",
        |s| preview(s) && s.ready_pods.get("2").is_some_and(|n| *n > 0),
        |s| s.only("1"),
    );
    eprintln!("FIGURE BlueGreen: minimum Ready endpoints during the rollout {} (total 2)", t.min_ready());
    assert_eq!(replicas(&client, &ns.name, "blog-1").await, Some(2), "the previous version is kept warm");
    let took = revert_and_measure(monitor, &ns.name, "blog-2", "blog-1", "1").await;
    eprintln!("FIGURE BlueGreen: revert to previous-only endpoints {took:.2}s");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_aborted_canary_returns_all_traffic_to_the_stable_version_without_a_gap() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-abort").await;
    let monitor = live_and_watched(&client, &ns.name, &api, "web", 2).await;
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    create(&release(&ns.name, "web", "2", 2, canary));
    wait_release_phase(&api, "web-2", ReleasePhase::Paused).await;
    monitor.mark("abort");
    kubectl(&["phaseloop", "abort", "web-2", "-n", &ns.name]);
    let r = wait_release_phase(&api, "web-2", ReleasePhase::RolledBack).await;
    assert!(r.status.unwrap().message.unwrap().contains("aborted"));
    eventually("web-2 at zero and web-1 at 2", WAIT, || async {
        let (a, b) = (replicas(&client, &ns.name, "web-2").await, replicas(&client, &ns.name, "web-1").await);
        (a == Some(0) && b == Some(2)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(service_selects(&client, &ns.name, "web").await.as_deref(), Some("1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = monitor.stop().await;
    t.assert_never_empty("abort");
    let rolled_back =
        t.first_after(Default::default(), |s| s.phase("web-2") == Some(ReleasePhase::RolledBack)).unwrap();
    t.assert_while("after the rollback", |s| s.at > rolled_back + Duration::from_secs(1), |s| s.only("1"));
    assert_eq!(api.get("web-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_failing_analysis_rolls_every_strategy_back_to_stable_only_endpoints() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-analysis").await;
    for (strategy, extra) in [
        ("Rolling", json!({})),
        ("Canary", json!({"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "5m"}}]}})),
        ("BlueGreen", json!({})),
    ] {
        let app = format!("pay{}", strategy.to_lowercase());
        create(&release(&ns.name, &app, "1", 4, json!({})));
        wait_release_phase(&api, &format!("{app}-1"), ReleasePhase::Live).await;
        // The candidate's error rate, as the app would export it, through the pushgateway.
        let body = format!("e2e_error_ratio{{app=\"{app}\",version=\"2\"}} 0.5\n");
        let url = format!("{}/metrics/job/e2e/instance/{app}", pushgateway_url());
        reqwest::Client::new().put(url).body(body).send().await.unwrap().error_for_status().unwrap();
        let series = format!("e2e_error_ratio{{app=\"{app}\"}}");
        eventually("the pushed error ratio in Prometheus", WAIT, || async {
            (!prom_query(&series).await.ok()?.is_empty()).then_some(())
        })
        .await
        .unwrap();

        let monitor = Monitor::start(&client, &ns.name, &app).await;
        let mut s = json!({"type": strategy,
            "analysis": {"interval": "2s", "metrics": [{"name": "errors", "max": 0.1, "failureLimit": 0,
                "query": "max(e2e_error_ratio{app=\"{{app}}\",version=\"{{version}}\"})"}]}});
        s.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        create(&release(&ns.name, &app, "2", 4, s));
        let r = wait_release_phase(&api, &format!("{app}-2"), ReleasePhase::RolledBack).await;
        let status = r.status.unwrap();
        assert!(status.message.as_deref().unwrap_or("").contains("errors = 0.5"), "{:?}", status.message);
        eventually("the stable version back at 4", WAIT, || async {
            (replicas(&client, &ns.name, &format!("{app}-1")).await == Some(4)).then_some(())
        })
        .await
        .unwrap();
        assert_eq!(service_selects(&client, &ns.name, &app).await.as_deref(), Some("1"));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = monitor.stop().await;
        t.assert_never_empty(strategy);
        let failed = t
            .first_after(Default::default(), |s| s.releases.get(&format!("{app}-2")).is_some_and(|r| r.failures > 0))
            .expect("the failed measurement was seen");
        let took = t.settled_after(failed, |s| s.only("1")).unwrap();
        eprintln!("FIGURE {strategy}: failed analysis to stable-only endpoints {took:.2}s");
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_candidate_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-deadline").await;
    let monitor = live_and_watched(&client, &ns.name, &api, "api", 4).await;
    create(&broken(release(&ns.name, "api", "2", 4, json!({"progressDeadline": "15s"}))));
    let r = wait_release_phase(&api, "api-2", ReleasePhase::RolledBack).await;
    assert!(r.status.unwrap().message.unwrap().contains("progress deadline"));
    assert_eq!(replicas(&client, &ns.name, "api-2").await, Some(0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = monitor.stop().await;
    t.assert_never_empty("progress deadline");
    // The default maxUnavailable (25% of 4): at least 3 Ready endpoints, all of the stable version.
    assert!(t.min_ready() >= 3, "{}", t.tail(60));
    t.assert_while("broken pods never serve", |_| true, |s| s.endpoints.get("2").is_none_or(|n| *n == 0));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn with_auto_rollback_off_a_failure_pauses_promote_does_not_pass_it_override_does_and_abort_rolls_back() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-noauto").await;
    let body =
        "e2e_error_ratio{app=\"manual\",version=\"2\"} 0.5\ne2e_error_ratio{app=\"manual2\",version=\"2\"} 0.5\n";
    let url = format!("{}/metrics/job/e2e/instance/manual", pushgateway_url());
    reqwest::Client::new().put(url).body(body).send().await.unwrap().error_for_status().unwrap();
    eventually("the error ratio in Prometheus", WAIT, || async {
        (prom_query("e2e_error_ratio{app=\"manual2\"}").await.ok()?.len() == 1).then_some(())
    })
    .await
    .unwrap();
    let strategy = json!({"type": "Canary", "autoRollback": false,
        "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "5m"}}]},
        "analysis": {"interval": "2s", "metrics": [{"name": "errors", "max": 0.1,
            "query": "max(e2e_error_ratio{app=\"{{app}}\",version=\"{{version}}\"})"}]}});
    for app in ["manual", "manual2"] {
        create(&release(&ns.name, app, "1", 2, json!({})));
        wait_release_phase(&api, &format!("{app}-1"), ReleasePhase::Live).await;
        create(&release(&ns.name, app, "2", 2, strategy.clone()));
    }
    let monitor = Monitor::start(&client, &ns.name, "manual").await;
    let paused = wait_for(&api, "manual-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Degraded")).is_some_and(|c| c.reason == "AnalysisFailed")
    })
    .await
    .unwrap();
    assert_eq!(paused.status.as_ref().unwrap().phase, Some(ReleasePhase::Paused));
    assert!(paused.status.unwrap().message.unwrap().contains("--override"));
    event_about(&client, &ns.name, "manual-2", "AnalysisFailed").await;

    // A plain promote does not go past a failure: once the operator has looked, nothing moved.
    let rv = annotate(&api, "manual-2", "phaseloop.dev/promote", ADMIN).await;
    reconciled("release", Some(&ns.name), "manual-2", &rv).await;
    let still = api.get("manual-2").await.unwrap().status.unwrap();
    assert_eq!((still.phase, still.current_step), (Some(ReleasePhase::Paused), Some(0)));

    // An override does, recorded with who gave it.
    let out = kubectl(&["phaseloop", "promote", "--override", "manual-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_for(&api, "manual-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.override_.is_some())
    })
    .await
    .unwrap();
    let record = r.status.unwrap().override_.unwrap();
    assert_eq!(record.by, "phaseloop-e2e-admin");
    assert!(record.verdict.contains("errors"), "{record:?}");
    event_about(&client, &ns.name, "manual-2", "Overridden").await;
    monitor.stop().await.assert_never_empty("override");

    // Abort always rolls back, autoRollback or not.
    wait_for(&api, "manual2-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Degraded")).is_some_and(|c| c.reason == "AnalysisFailed")
    })
    .await
    .unwrap();
    kubectl(&["phaseloop", "abort", "manual2-2", "-n", &ns.name]);
    wait_release_phase(&api, "manual2-2", ReleasePhase::RolledBack).await;
    assert_eq!(service_selects(&client, &ns.name, "manual2").await.as_deref(), Some("1"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn deleting_a_serving_release_waits_until_it_no_longer_serves() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-protect").await;
    let monitor = live_and_watched(&client, &ns.name, &api, "shop", 2).await;
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]},
        "revertWindow": "10s"});
    create(&release(&ns.name, "shop", "2", 2, canary));
    wait_release_phase(&api, "shop-2", ReleasePhase::Paused).await;

    // A GitOps prune or a tidy-minded delete of the stable version mid-rollout.
    let out = kubectl(&["delete", "rel", "shop-1", "-n", &ns.name, "--wait=false"]);
    assert!(out.ok, "{}", out.stderr);
    let waiting = wait_for(&api, "shop-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Deleting")).is_some_and(|c| c.status == "True")
    })
    .await
    .unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(condition(&waiting, "Deleting").unwrap().message.contains("Live"));
    event_about(&client, &ns.name, "shop-1", "DeletionWaiting").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(replicas(&client, &ns.name, "shop-1").await, Some(1), "its pods stay");
    assert_eq!(api.get("shop-2").await.unwrap().status.unwrap().stable_release.as_deref(), Some("shop-1"));

    // The rollout finishes normally; once the window is over shop-1 no longer serves and goes.
    annotate(&api, "shop-2", "phaseloop.dev/promote", ADMIN).await;
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    eventually("shop-1 and its Deployment gone", WAIT, || async {
        let gone = api.get_opt("shop-1").await.ok()?.is_none() && deployments.get_opt("shop-1").await.ok()?.is_none();
        gone.then_some(())
    })
    .await
    .unwrap();
    let t = monitor.stop().await;
    t.assert_never_empty("a deleted stable version");
    t.assert_while(
        "the candidate never takes all traffic before it is promoted",
        |s| s.phase("shop-2") == Some(ReleasePhase::Paused),
        |s| s.endpoints.get("1").is_some_and(|n| *n > 0),
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_rollout_whose_analysis_never_measured_anything_is_not_promoted_blind() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-blind").await;
    create(&release(&ns.name, "blind", "1", 2, json!({})));
    wait_release_phase(&api, "blind-1", ReleasePhase::Live).await;
    // Every query returns nothing: inconclusive each time, fewer times than the limit.
    let strategy = json!({"analysis": {"interval": "1s", "metrics": [{"name": "latency", "max": 0.5,
        "inconclusiveLimit": 50, "query": "max(e2e_never_exported{app=\"{{app}}\"})"}]}});
    create(&release(&ns.name, "blind", "2", 2, strategy));
    let r = wait_release_phase(&api, "blind-2", ReleasePhase::Paused).await;
    let message = r.status.unwrap().message.unwrap();
    assert!(message.contains("latency: 0 of 1 successful"), "{message}");
    assert_eq!(service_selects(&client, &ns.name, "blind").await, None, "not switched to the candidate");
    // A person may go on.
    kubectl(&["phaseloop", "promote", "blind-2", "-n", &ns.name]);
    wait_release_phase(&api, "blind-2", ReleasePhase::Live).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn promote_past_an_inconclusive_pause_goes_on_with_a_fresh_tally() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-inconclusive").await;
    create(&release(&ns.name, "flaky", "1", 2, json!({})));
    wait_release_phase(&api, "flaky-1", ReleasePhase::Live).await;
    let app = format!("flaky{}", unique_suffix());
    let strategy = json!({"type": "Canary",
        "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "4s"}}, {"setWeight": 75}, {"pause": {"duration": "4s"}}]},
        "analysis": {"interval": "1s", "metrics": [{"name": "errors", "max": 0.1, "inconclusiveLimit": 1,
            "query": format!("max(e2e_flaky_errors{{app=\"{app}\"}})")}]}});
    create(&release(&ns.name, "flaky", "2", 2, strategy));
    let r = wait_release_phase(&api, "flaky-2", ReleasePhase::Paused).await;
    assert!(r.status.unwrap().message.unwrap().contains("inconclusive"));
    // The metric is healthy again; a person promotes: the rollout goes on to the end.
    let url = format!("{}/metrics/job/e2e/instance/{app}", pushgateway_url());
    let body = format!("e2e_flaky_errors{{app=\"{app}\"}} 0\n");
    reqwest::Client::new().put(url).body(body).send().await.unwrap().error_for_status().unwrap();
    eventually("the healthy value in Prometheus", WAIT, || async {
        (!prom_query(&format!("e2e_flaky_errors{{app=\"{app}\"}}")).await.ok()?.is_empty()).then_some(())
    })
    .await
    .unwrap();
    kubectl(&["phaseloop", "promote", "flaky-2", "-n", &ns.name]);
    let live = wait_release_phase(&api, "flaky-2", ReleasePhase::Live).await;
    let tally = &live.status.unwrap().analysis[0];
    assert!(tally.inconclusive <= 1 && tally.successes >= 1, "{tally:?}");
    let _ = client;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_revert_that_cannot_be_carried_out_is_refused_by_the_plugin_and_reported_by_the_operator() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-refuse").await;
    create(&release(&ns.name, "solo", "1", 1, json!({})));
    wait_release_phase(&api, "solo-1", ReleasePhase::Live).await;
    let out = kubectl(&["phaseloop", "revert", "solo-1", "-n", &ns.name]);
    assert!(!out.ok && out.stderr.contains("first Release"), "{} {}", out.stdout, out.stderr);
    // Asked for anyway (plain kubectl): the operator says why, and the request is consumed.
    annotate(&api, "solo-1", "phaseloop.dev/revert", ADMIN).await;
    // The annotation is consumed after the outcome is written: once it is gone, the condition says why.
    let r = wait_for(&api, "solo-1", WAIT, |r: Option<&Release>| {
        r.is_some_and(|r| !r.annotations().contains_key("phaseloop.dev/revert"))
    })
    .await
    .unwrap();
    let c = condition(&r, "RevertReady").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RevertRefused"));
    assert!(c.message.contains("first Release"), "{}", c.message);
    assert!(event_about(&client, &ns.name, "solo-1", "RevertRefused").await.contains("first Release"));
    assert_eq!(r.status.unwrap().phase, Some(ReleasePhase::Live));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_rolling_update_inside_a_tight_quota_completes_within_its_surge() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("tight-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"quota": {"pods": 5}}}));
    let envs: Api<phaseloop::api::Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&phaseloop::api::Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    let monitor = live_and_watched(&client, &name, &api, "quota", 4).await;
    // 4 pods and room for one more: a cold revert window (warmReplicas 0) fits the quota.
    let strategy =
        json!({"rolling": {"maxSurge": 1, "maxUnavailable": 0}, "warmReplicas": 0, "progressDeadline": "2m"});
    create(&release(&name, "quota", "2", 4, strategy));
    wait_release_phase(&api, "quota-2", ReleasePhase::Live).await;
    let t = monitor.stop().await;
    t.assert_never_empty("tight quota");
    t.assert_while("within the quota", |_| true, |s| s.pods.values().sum::<usize>() <= 5);
    assert!(t.min_ready() >= 4, "maxUnavailable 0\n{}", t.tail(40));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_approval_gate_holds_until_approved() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-approval").await;
    let mut r = release(&ns.name, "api", "7", 1, json!({}));
    r["spec"]["approval"] = json!({"required": true});
    create(&r);
    let waiting = wait_release_phase(&api, "api-7", ReleasePhase::AwaitingApproval).await;
    // Nothing runs while it waits: once the operator has seen this version, there is no Deployment.
    reconciled("release", Some(&ns.name), "api-7", &waiting.resource_version().unwrap()).await;
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns.name).get_opt("api-7").await.unwrap().is_none());
    let out = kubectl(&["phaseloop", "status", "api-7", "-n", &ns.name]);
    assert!(out.ok && out.stdout.contains("phase:    AwaitingApproval"), "{} {}", out.stdout, out.stderr);
    // Approve through the kubectl plugin: it records who the API server says we are.
    let out = kubectl(&["phaseloop", "approve", "api-7", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_release_phase(&api, "api-7", ReleasePhase::Live).await;
    assert_eq!(r.status.unwrap().approval.unwrap().approved_by, "phaseloop-e2e-admin");
    let out = kubectl(&["phaseloop", "status", "api-7", "-n", &ns.name]);
    assert!(out.stdout.contains("steps:    [##] 2/2"), "{}", out.stdout);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn tests_pass_before_the_rollout_and_a_failing_test_leaves_the_stable_version_serving() {
    let _shared = shared().await;
    let (client, ns, api) = setup("e2e-tests").await;
    create(&with_test(release(&ns.name, "shop", "1", 2, json!({})), false));
    let r1 = wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    let status = r1.status.unwrap();
    assert_eq!(status.tests[0].phase, phaseloop::api::TestPhase::Succeeded);
    assert!(status.phase_times.contains_key("Testing"));
    let job: k8s_openapi::api::batch::v1::Job =
        Api::namespaced(client.clone(), &ns.name).get("shop-1-test-smoke-1").await.unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let url = env.iter().find(|e| e.name == "PHASELOOP_CANDIDATE_URL").unwrap().value.clone().unwrap();
    assert_eq!(url, format!("http://shop-preview.{}.svc:80", ns.name));

    let monitor = Monitor::start(&client, &ns.name, "shop").await;
    create(&with_test(release(&ns.name, "shop", "2", 2, json!({})), true));
    let r2 = wait_release_phase(&api, "shop-2", ReleasePhase::Failed).await;
    let status = r2.status.unwrap();
    assert_eq!((status.tests[0].phase.as_str(), status.tests[0].attempts), ("Failed", 2), "one retry, then failed");
    assert_eq!(replicas(&client, &ns.name, "shop-2").await, Some(0));
    assert_eq!(replicas(&client, &ns.name, "shop-1").await, Some(2));
    assert_eq!(service_selects(&client, &ns.name, "shop").await.as_deref(), Some("1"));
    assert_eq!(api.get("shop-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
    let t = monitor.stop().await;
    t.assert_never_empty("tests");
    t.assert_while("the tested candidate never serves", |_| true, |s| s.only("1"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn promotion_waits_for_the_version_to_soak_upstream_counts_a_superseded_one_and_a_freeze_holds_rollouts() {
    let _shared = shared().await;
    let client = client().await;
    let staging = format!("stg-{}", unique_suffix());
    let prod = format!("prd-{}", unique_suffix());
    let _g1 = EnvironmentGuard::new(&staging);
    let _g2 = EnvironmentGuard::new(&prod);
    let env = |name: &str, spec: Value| json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name}, "spec": spec});
    create(&env(&staging, json!({"tier": "staging"})));
    create(&env(&prod, json!({"tier": "production", "promotion": {"from": staging, "soak": "5s"}})));
    let envs: Api<phaseloop::api::Environment> = Api::all(client.clone());
    for name in [&staging, &prod] {
        wait_for(&envs, name, WAIT, |e: Option<&phaseloop::api::Environment>| {
            e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
        })
        .await
        .unwrap();
    }
    let prod_api: Api<Release> = Api::namespaced(client.clone(), &prod);
    let staging_api: Api<Release> = Api::namespaced(client.clone(), &staging);

    create(&release(&prod, "shop", "1", 1, json!({})));
    let r = wait_release_phase(&prod_api, "shop-1", ReleasePhase::AwaitingApproval).await;
    assert!(r.status.unwrap().message.unwrap().contains(&format!("to be Live in {staging}")));
    create(&release(&staging, "shop", "1", 1, json!({})));
    wait_release_phase(&staging_api, "shop-1", ReleasePhase::Live).await;
    let r = wait_release_phase(&prod_api, "shop-1", ReleasePhase::Live).await;
    let times = r.status.unwrap().phase_times;
    let live_staging = staging_api.get("shop-1").await.unwrap().status.unwrap().phase_times["Live"].0;
    assert!(times["Live"].0.duration_since(live_staging).as_secs() >= 5, "promoted before the soak time");

    // A version that soaked upstream and has since been superseded there still counts.
    create(&release(&staging, "shop", "2", 1, json!({})));
    wait_release_phase(&staging_api, "shop-2", ReleasePhase::Live).await;
    tokio::time::sleep(Duration::from_secs(6)).await; // its soak time, upstream
    create(&release(&staging, "shop", "3", 1, json!({})));
    wait_release_phase(&staging_api, "shop-2", ReleasePhase::Superseded).await;
    create(&release(&prod, "shop", "2", 1, json!({})));
    wait_release_phase(&prod_api, "shop-2", ReleasePhase::Live).await;

    // A freeze holds new rollouts.
    let patch = json!({"spec": {"promotion": {"freeze": true}}});
    let frozen = envs.patch(&prod, &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    reconciled("environment", None, &prod, &frozen.resource_version().unwrap()).await;
    create(&release(&prod, "shop", "3", 1, json!({})));
    let r = wait_release_phase(&prod_api, "shop-3", ReleasePhase::AwaitingApproval).await;
    assert!(r.status.unwrap().message.unwrap().contains("frozen"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_operator_killed_mid_canary_finishes_the_same_rollout_after_a_restart() {
    let _alone = alone().await;
    let (client, ns, api) = setup("e2e-crash").await;
    let monitor = live_and_watched(&client, &ns.name, &api, "mail", 4).await;
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 75}]}});
    create(&release(&ns.name, "mail", "2", 4, canary));
    wait_release_phase(&api, "mail-2", ReleasePhase::Paused).await;

    let out = std::process::Command::new("bash")
        .arg(repo_root().join("e2e/scripts/run-operator.sh"))
        .arg("crash")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = api.get("mail-2").await.unwrap().status.unwrap();
    assert_eq!((before.current_step, before.step_weight), (Some(1), Some(50)), "the restarted operator kept the step");

    annotate(&api, "mail-2", "phaseloop.dev/promote", ADMIN).await;
    wait_release_phase(&api, "mail-2", ReleasePhase::Live).await;
    // One Deployment per Release, nothing duplicated.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> =
        deployments.list(&Default::default()).await.unwrap().items.into_iter().map(|d| d.name_any()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(replicas(&client, &ns.name, "mail-2").await, Some(4));
    monitor.stop().await.assert_never_empty("an operator crash mid-canary");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn tests_run_in_an_ephemeral_branch_of_the_environment_which_is_deleted_afterwards() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("dev-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"infrastructure": [{"name": "db", "objects": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config"}, "data": {"DB": "x"}}]}]}}));
    let envs: Api<phaseloop::api::Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&phaseloop::api::Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    let mut r = with_test(release(&name, "shop", "1", 1, json!({})), false);
    r["spec"]["testEnvironment"] = json!({"ttl": "10m"});
    create(&r);

    // The branch exists while the tests run, with the parent's infrastructure and the candidate.
    let test_env = format!("{name}-shop-1-test");
    let branch = wait_for(&envs, &test_env, WAIT, |e: Option<&phaseloop::api::Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    assert_eq!(branch.spec.from.as_deref(), Some(name.as_str()));
    assert_eq!(branch.spec.tier, phaseloop::api::Tier::Test);

    let r = wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    assert_eq!(r.status.unwrap().tests[0].phase, phaseloop::api::TestPhase::Succeeded);
    eventually("the test Environment to be gone", WAIT, || async {
        envs.get_opt(&test_env).await.ok().flatten().is_none().then_some(())
    })
    .await
    .unwrap();
}
