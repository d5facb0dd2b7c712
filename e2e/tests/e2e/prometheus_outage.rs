//! Prometheus stopped while an app is autoscaled and another is analysed: the replicas hold, the
//! analysis is inconclusive and the canary pauses (never fails or promotes blind), the conditions
//! say why, and scaling resumes when Prometheus is back. It runs alone (`alone()`), because it stops
//! the Prometheus every other test uses.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use phaseloop::api::{Release, ReleasePhase, condition};
use phaseloop_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(90);

fn component(args: &[&str]) {
    let script = repo_root().join("e2e/scripts/component.sh");
    let status = std::process::Command::new("bash").arg(script).args(args).status().expect("bash runs");
    assert!(status.success(), "component.sh {args:?} failed");
}

async fn scaling_reason_becomes(api: &Api<Release>, name: &str, reason: &'static str) -> Release {
    wait_for(api, name, WAIT, move |r: Option<&Release>| {
        let conditions = r.and_then(|r| r.status.as_ref()).map(|s| s.conditions.as_slice()).unwrap_or_default();
        conditions.iter().any(|c| c.type_ == condition::SCALING_ACTIVE && c.reason == reason)
    })
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn with_prometheus_down_the_replicas_hold_and_scaling_resumes_when_it_is_back() {
    let _alone = alone().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-promdown").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let load = Load::new(&ns.name, "web");
    load.set(300.0).await;
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "web-1", "namespace": ns.name},
        "spec": {"app": "web", "version": "1",
                 "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}},
                 "scaling": {"minReplicas": 1, "maxReplicas": 10, "interval": "2s",
                     "metric": {"query": Load::QUERY, "targetPerReplica": 100.0},
                     "behavior": {"scaleDown": {"stabilizationWindow": "0s"}}}}}));
    let at = |n: i32| {
        let deployments = deployments.clone();
        move || {
            let deployments = deployments.clone();
            async move { (deployments.get_opt("web-1").await.ok()??.spec.replicas == Some(n)).then_some(()) }
        }
    };
    eventually("web-1 at 3 replicas", WAIT, at(3)).await.unwrap();
    // A second app, Live before the outage, whose next version is analysed during it.
    let pay = |version: &str, strategy: serde_json::Value| {
        json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": format!("pay-{version}"), "namespace": ns.name},
            "spec": {"app": "pay", "version": version, "replicas": 2,
                     "template": {"spec": {"containers": [{"name": "app", "image": format!("pay:{version}")}]}},
                     "strategy": strategy}})
    };
    create(&pay("1", json!({})));
    wait_release_phase(&api, "pay-1", ReleasePhase::Live).await;

    component(&["stop", "prometheus"]);
    let r = scaling_reason_becomes(&api, "web-1", "MetricUnavailable").await;
    let c = r.status.unwrap().conditions.into_iter().find(|c| c.type_ == condition::SCALING_ACTIVE).unwrap();
    assert_eq!(c.status, "False");
    assert!(c.message.contains("unreachable"), "{}", c.message);
    // The load drops meanwhile, unseen: several decision intervals later the count still holds.
    reqwest::Client::new()
        .put(format!("{}/metrics/job/e2e-load/namespace/{}/app/web", pushgateway_url(), ns.name))
        .body("e2e_load 100\n")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    // Analysis without Prometheus: inconclusive, never failed; past the limit the canary pauses for
    // a person instead of rolling back (or promoting) blind.
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "10m"}}]},
        "analysis": {"interval": "2s", "metrics": [{"name": "errors", "max": 0.1, "inconclusiveLimit": 2,
            "query": "sum(rate(http_errors_total{app=\"{{app}}\"}[1m]))"}]}});
    create(&pay("2", canary));
    let paused = wait_release_phase(&api, "pay-2", ReleasePhase::Paused).await;
    let status = paused.status.unwrap();
    assert!(status.message.as_deref().unwrap_or_default().contains("inconclusive"), "{:?}", status.message);
    let errors = &status.analysis[0];
    assert_eq!((errors.failures, errors.last_result), (0, Some(phaseloop::api::Measurement::Inconclusive)));
    assert_eq!(api.get("pay-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));

    // Two more failed readings after the load dropped: the autoscaler decided twice, blind.
    let before = api.get("web-1").await.unwrap().status.unwrap().scaling.unwrap().consecutive_failures;
    eventually("two more failed readings", WAIT, || async {
        let s = api.get("web-1").await.ok()?.status?.scaling?;
        (s.consecutive_failures >= before + 2).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(deployments.get("web-1").await.unwrap().spec.replicas, Some(3), "never scaled down blind");

    component(&["start"]);
    scaling_reason_becomes(&api, "web-1", "ValidMetric").await;
    eventually("web-1 at 1 replica once the load is readable", WAIT, at(1)).await.unwrap();
    load.clear().await;
}
