//! The Operate phase against a real API server, Prometheus and pushgateway: load pushed to the
//! pushgateway scales the app up and (after the stabilization window) down, an empty read holds
//! and falls back, a canary splits the autoscaled total by weight, scale to zero and back, a
//! foreign HPA is reported and left alone, and a sleeping Environment holds the app at zero.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Event};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase, condition};
use phaseloop_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// A Release of `app` autoscaled on its `e2e_load` at 100 per replica, deciding every 2s.
fn scaled_release(ns: &str, app: &str, version: &str, scaling: Value, strategy: Value) -> Value {
    let mut spec_scaling = json!({"minReplicas": 1, "maxReplicas": 10, "interval": "2s",
        "metric": {"query": Load::QUERY, "targetPerReplica": 100.0}});
    spec_scaling.as_object_mut().unwrap().extend(scaling.as_object().unwrap().clone());
    with_spec(ready_at_once(release(ns, app, version, 1, strategy)), json!({"scaling": spec_scaling}))
}

/// Waits until Deployment `name` asks for `want` replicas; returns when it did.
async fn replicas_become(client: &kube::Client, ns: &str, name: &str, want: i32) -> tokio::time::Instant {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{ns}/{name} at {want} replicas"), WAIT, || async {
        (api.get_opt(name).await.ok()??.spec.replicas == Some(want)).then(tokio::time::Instant::now)
    })
    .await
    .unwrap()
}

/// The `ScalingActive` condition's (status, reason) once it has `reason`.
async fn scaling_active_becomes(api: &Api<Release>, name: &str, reason: &'static str) -> Release {
    wait_for(api, name, WAIT, move |r: Option<&Release>| {
        let conditions = r.and_then(|r| r.status.as_ref()).map(|s| s.conditions.as_slice()).unwrap_or_default();
        conditions.iter().any(|c| c.type_ == condition::SCALING_ACTIVE && c.reason == reason)
    })
    .await
    .unwrap()
}

async fn event_reasons(client: &kube::Client, ns: &str, object: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default().fields(&format!("involvedObject.name={object}"))).await.unwrap();
    list.items.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_load_step_scales_up_at_once_and_a_drop_scales_down_only_after_the_window() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-scale").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let load = Load::new(&ns.name, "web");
    load.set(100.0).await;
    let window = Duration::from_secs(20);
    let scaling = json!({"behavior": {"scaleDown": {"stabilizationWindow": "20s"}}});
    create(&scaled_release(&ns.name, "web", "1", scaling, json!({})));
    wait_release_phase(&api, "web-1", ReleasePhase::Live).await;
    replicas_become(&client, &ns.name, "web-1", 1).await;

    // A step to 4.5 replicas' worth: ceil(450 / 100) = 5, within the default scale-up rate (+4).
    load.set(450.0).await;
    replicas_become(&client, &ns.name, "web-1", 5).await;
    let r = api.get("web-1").await.unwrap();
    let status = r.status.unwrap();
    let scaling = status.scaling.unwrap();
    assert_eq!(scaling.observed_value, Some(450.0));
    assert_eq!(scaling.desired_replicas, Some(5));
    assert!(scaling.last_scale_time.is_some());
    assert!(scaling.reason.as_deref().unwrap().contains("1 → 5"), "{:?}", scaling.reason);
    assert_eq!(status.replicas, Some(5));
    assert!(event_reasons(&client, &ns.name, "web-1").await.contains(&"ScaledUp".to_string()));

    // A drop to 1.5 replicas' worth: held at 5 while the 20s window remembers 5, then 2.
    let dropped = load.set(150.0).await;
    let down = replicas_become(&client, &ns.name, "web-1", 2).await;
    let held = down - dropped;
    // The last recommendation of 5 is at most one interval (2s) plus one scrape (2s) older than
    // the moment the drop was visible, so the window ends no earlier than 16s after that.
    assert!(held >= window - Duration::from_secs(4), "scaled down after only {held:?}");
    assert!(event_reasons(&client, &ns.name, "web-1").await.contains(&"ScaledDown".to_string()));

    let metrics = reqwest::get(format!("{}/metrics", operator_url())).await.unwrap().text().await.unwrap();
    let labels = format!("app=\"web\",direction=\"down\",namespace=\"{}\"", ns.name);
    assert!(metrics.contains(&format!("phaseloop_scaling_events_total{{{labels}}} 1")), "{metrics}");
    load.clear().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_empty_read_holds_the_replicas_then_falls_back_and_never_scales_down() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-fallback").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let load = Load::new(&ns.name, "api");
    load.set(300.0).await;
    let scaling = json!({"fallback": {"afterFailures": 3, "replicas": 4},
        "behavior": {"scaleDown": {"stabilizationWindow": "0s"}}});
    create(&scaled_release(&ns.name, "api", "1", scaling, json!({})));
    replicas_become(&client, &ns.name, "api-1", 3).await;

    load.clear().await;
    let r = scaling_active_becomes(&api, "api-1", "MetricUnavailable").await;
    assert_eq!(replicas(&client, &ns.name, "api-1").await, Some(3), "an empty read never scales down");
    assert!(r.status.unwrap().scaling.unwrap().consecutive_failures >= 1);
    let r = scaling_active_becomes(&api, "api-1", "FallbackReplicas").await;
    let status = r.status.unwrap();
    assert!(status.scaling.unwrap().consecutive_failures >= 3);
    replicas_become(&client, &ns.name, "api-1", 4).await;
    assert!(event_reasons(&client, &ns.name, "api-1").await.contains(&"FallbackReplicas".to_string()));

    load.set(100.0).await;
    scaling_active_becomes(&api, "api-1", "ValidMetric").await;
    replicas_become(&client, &ns.name, "api-1", 1).await;
    load.clear().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn during_a_canary_the_total_follows_the_load_and_the_split_follows_the_weight() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-scale-canary").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let load = Load::new(&ns.name, "shop");
    load.set(400.0).await;
    create(&scaled_release(&ns.name, "shop", "1", json!({}), json!({})));
    replicas_become(&client, &ns.name, "shop-1", 4).await;
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;

    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}});
    create(&scaled_release(&ns.name, "shop", "2", json!({}), canary));
    wait_release_phase(&api, "shop-2", ReleasePhase::Paused).await;
    replicas_become(&client, &ns.name, "shop-2", 1).await;
    replicas_become(&client, &ns.name, "shop-1", 3).await;

    // The load doubles during the pause: the total follows it (8) and 25% of it is the canary.
    load.set(800.0).await;
    replicas_become(&client, &ns.name, "shop-2", 2).await;
    replicas_become(&client, &ns.name, "shop-1", 6).await;
    let status = api.get("shop-2").await.unwrap().status.unwrap();
    assert_eq!(status.scaling.unwrap().desired_replicas, Some(8));
    assert_eq!((status.step_weight, status.candidate_replicas, status.stable_replicas), (Some(25), Some(2), Some(6)));

    // Promoted, the new version carries the whole autoscaled total.
    let promote = json!({"metadata": {"annotations": {"phaseloop.dev/promote": ADMIN}}});
    api.patch("shop-2", &PatchParams::default(), &Patch::Merge(&promote)).await.unwrap();
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    replicas_become(&client, &ns.name, "shop-2", 8).await;
    load.clear().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn without_load_a_non_production_app_scales_to_zero_and_back() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-zero").await;
    let load = Load::new(&ns.name, "jobs");
    load.set(200.0).await;
    let scaling = json!({"minReplicas": 0, "behavior": {"scaleDown": {"stabilizationWindow": "0s"}}});
    create(&scaled_release(&ns.name, "jobs", "1", scaling, json!({})));
    replicas_become(&client, &ns.name, "jobs-1", 2).await;
    load.set(0.0).await;
    replicas_become(&client, &ns.name, "jobs-1", 0).await;
    load.set(250.0).await;
    replicas_become(&client, &ns.name, "jobs-1", 3).await;
    load.clear().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn scale_to_zero_in_production_is_refused_and_nothing_is_deployed() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("prod-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name}, "spec": {"tier": "production"}}));
    let envs: Api<Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    create(&scaled_release(&name, "web", "1", json!({"minReplicas": 0}), json!({})));
    let r = wait_for(&api, "web-1", WAIT, |r: Option<&Release>| {
        let conditions = r.and_then(|r| r.status.as_ref()).map(|s| s.conditions.as_slice()).unwrap_or_default();
        conditions.iter().any(|c| c.type_ == condition::DEGRADED && c.status == "True")
    })
    .await
    .unwrap();
    let message = r.status.unwrap().conditions.into_iter().find(|c| c.type_ == condition::DEGRADED).unwrap().message;
    assert!(message.contains("scaling.minReplicas"), "{message}");
    assert!(Api::<Deployment>::namespaced(client.clone(), &name).get_opt("web-1").await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_foreign_hpa_on_the_app_is_reported_and_its_replicas_are_left_alone() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-hpa").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let load = Load::new(&ns.name, "web");
    load.set(200.0).await;
    let scaling = json!({"behavior": {"scaleDown": {"stabilizationWindow": "0s"}}});
    create(&scaled_release(&ns.name, "web", "1", scaling, json!({})));
    replicas_become(&client, &ns.name, "web-1", 2).await;

    create(&json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": ns.name},
        "spec": {"minReplicas": 1, "maxReplicas": 10,
                 "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-1"},
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                     "target": {"type": "Utilization", "averageUtilization": 50}}}]}}));
    let r = scaling_active_becomes(&api, "web-1", "ConflictingAutoscaler").await;
    let c = r.status.unwrap().conditions.into_iter().find(|c| c.type_ == condition::SCALING_ACTIVE).unwrap();
    assert_eq!(c.status, "False");
    assert!(c.message.contains("HorizontalPodAutoscaler web targets Deployment web-1"), "{}", c.message);
    assert!(event_reasons(&client, &ns.name, "web-1").await.contains(&"ConflictingAutoscaler".to_string()));

    // The other autoscaler sets 7 while the load says 1: phaseloop leaves it at 7.
    let out = kubectl(&["scale", "deployment/web-1", "-n", &ns.name, "--replicas=7"]);
    assert!(out.ok, "{}", out.stderr);
    load.set(100.0).await;
    // Evidence the operator looked again, several times, after the change (not a fixed sleep).
    let since = reconcile_count("release", Some(&ns.name), "web-1").await;
    reconciled_again("release", Some(&ns.name), "web-1", since, 3).await;
    assert_eq!(replicas(&client, &ns.name, "web-1").await, Some(7));

    // Without the HPA, phaseloop takes the replicas back and follows the load.
    assert!(kubectl(&["delete", "hpa", "web", "-n", &ns.name]).ok);
    scaling_active_becomes(&api, "web-1", "ValidMetric").await;
    replicas_become(&client, &ns.name, "web-1", 1).await;
    load.clear().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_sleeping_environment_holds_the_app_at_zero_and_wakes_to_the_autoscaled_total() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("sleepy-scale-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name}, "spec": {"tier": "development", "sleepAfter": "20s"}}));
    let envs: Api<Environment> = Api::all(client.clone());
    let env_phase = |phase| {
        move |e: Option<&Environment>| e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phase))
    };
    wait_for(&envs, &name, WAIT, env_phase(EnvironmentPhase::Ready)).await.unwrap();
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    let load = Load::new(&name, "web");
    load.set(300.0).await;
    create(&scaled_release(&name, "web", "1", json!({}), json!({})));
    replicas_become(&client, &name, "web-1", 3).await;

    // Autoscaling is not Release activity: the Environment still falls asleep after 20s.
    wait_for(&envs, &name, WAIT, env_phase(EnvironmentPhase::Sleeping)).await.unwrap();
    replicas_become(&client, &name, "web-1", 0).await;
    let r = scaling_active_becomes(&api, "web-1", "EnvironmentAsleep").await;
    assert_eq!(r.status.unwrap().scaling.unwrap().desired_replicas, Some(3), "the total is remembered");
    // Once the operator has looked at the Release again, the app is still at zero.
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    let poked = api.patch("web-1", &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    reconciled("release", Some(&name), "web-1", &poked.metadata.resource_version.unwrap()).await;
    assert_eq!(replicas(&client, &name, "web-1").await, Some(0), "the autoscaler does not wake the app");

    let wake = json!({"metadata": {"annotations": {"phaseloop.dev/wake": "now"}}});
    envs.patch(&name, &PatchParams::default(), &Patch::Merge(&wake)).await.unwrap();
    wait_for(&envs, &name, WAIT, env_phase(EnvironmentPhase::Ready)).await.unwrap();
    replicas_become(&client, &name, "web-1", 3).await;
    scaling_active_becomes(&api, "web-1", "ValidMetric").await;
    load.clear().await;
}
