//! Prometheus stopped while an app is autoscaled: the replicas hold, the condition says why, and
//! scaling resumes when Prometheus is back. A test binary of its own, because it stops the
//! Prometheus every other test uses (test binaries run one after another).

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use phaseloop::api::{Release, condition};
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
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(deployments.get("web-1").await.unwrap().spec.replicas, Some(3), "never scaled down blind");
    let failures = api.get("web-1").await.unwrap().status.unwrap().scaling.unwrap().consecutive_failures;
    assert!(failures >= 2, "{failures} failed reads recorded");

    component(&["start"]);
    scaling_reason_becomes(&api, "web-1", "ValidMetric").await;
    eventually("web-1 at 1 replica once the load is readable", WAIT, at(1)).await.unwrap();
    load.clear().await;
}
