//! Traffic through a Gateway API HTTPRoute (the kwok suite: the API server stores the routes, the
//! test plays the Gateway, accepting each generation as a Gateway would; the real node's scenarios
//! run a real Gateway). Exact weights and header routes at each step whatever the pods, the route
//! moved before the pods on the way back, the user's own rules and filters untouched, a missing
//! route and a fighting writer reported.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
};
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

fn routes(client: &Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, "httproutes"))
}

/// The app owner's route: a rule for the app (with a filter of theirs) and one for something else.
fn users_route(ns: &str) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": ["shop.example"],
            "rules": [
                {"name": "web", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-from", "value": "gw"}]}}],
                 "backendRefs": [{"name": "shop", "port": 80}]},
                {"name": "static", "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
                 "backendRefs": [{"name": "cdn", "port": 80}]}]}})
}

/// Plays the Gateway: accepts every generation of the namespace's routes, as a Gateway
/// controller reports it in `status.parents`.
fn play_the_gateway(client: Client, ns: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = routes(&client, &ns);
        loop {
            for r in api.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
                let generation = r.metadata.generation.unwrap_or_default();
                let accepted =
                    r.data.pointer("/status/parents/0/conditions/0/observedGeneration").and_then(Value::as_i64);
                if accepted != Some(generation) {
                    let status = json!({"status": {"parents": [{"parentRef": {"name": "gw"},
                        "controllerName": "e2e.phaseloop.dev/gateway",
                        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}});
                    let name = r.metadata.name.clone().unwrap_or_default();
                    let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn routed(steps: Value) -> Value {
    json!({"type": "Canary", "canary": {"steps": steps,
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "shop", "rules": ["web"]}]}}}})
}

/// (stable weight, canary weight) of the rule `web`, and the header rule's header value if any.
async fn carried(client: &Client, ns: &str) -> (i64, i64, Option<String>) {
    let r = routes(client, ns).get("shop").await.unwrap();
    let rules = r.data["spec"]["rules"].as_array().unwrap().clone();
    let web = rules.iter().find(|r| r["name"] == "web").unwrap();
    let weight = |name: &str| {
        web["backendRefs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .and_then(|b| b["weight"].as_i64())
            .unwrap_or(-1)
    };
    let header = rules
        .iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with("phaseloop-header")))
        .map(|r| r["matches"][0]["headers"][0]["value"].as_str().unwrap_or_default().to_string());
    (weight("shop-stable"), weight("shop-canary"), header)
}

async fn user_parts_intact(client: &Client, ns: &str) {
    let r = routes(client, ns).get("shop").await.unwrap();
    let original = users_route(ns);
    assert_eq!(r.data["spec"]["hostnames"], original["spec"]["hostnames"]);
    let rules = r.data["spec"]["rules"].as_array().unwrap();
    let static_rule = rules.iter().find(|r| r["name"] == "static").unwrap();
    assert_eq!(static_rule["backendRefs"], original["spec"]["rules"][1]["backendRefs"], "the rule it does not steer");
    let web = rules.iter().find(|r| r["name"] == "web").unwrap();
    assert_eq!(web["filters"], original["spec"]["rules"][0]["filters"], "the owner's filters");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_routed_canary_carries_exact_weights_and_a_header_route_at_each_step_whatever_the_pods() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-route").await;
    let _gateway = play_the_gateway(client.clone(), ns.name.clone());
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&users_route(&ns.name));
    create(&release(&ns.name, "shop", "1", 4, routed(json!([{"setWeight": 100}]))));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    assert_eq!(carried(&client, &ns.name).await.0, 100, "the first version takes the route");
    let steps = json!([{"setWeight": 1}, {"pause": {}}, {"setWeight": 5}, {"pause": {}},
        {"setHeaderRoute": {"name": "x-canary", "exact": "tester"}}, {"setWeight": 50}, {"pause": {}}]);
    create(&release(&ns.name, "shop", "2", 4, routed(steps)));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    for (weight, header) in [(1, None), (5, None), (50, Some("tester"))] {
        let r = wait_release_phase(&api, "shop-2", ReleasePhase::Paused).await;
        let (stable, canary, h) = carried(&client, &ns.name).await;
        assert_eq!((stable, canary, h.as_deref()), (100 - weight, weight, header), "at {weight}%");
        let status = r.status.unwrap();
        assert_eq!((status.weight, status.step_weight), (Some(weight as i32), Some(weight as i32)));
        let pods = deployments.get("shop-2").await.unwrap().spec.replicas;
        assert_eq!(pods, Some(((4 * weight as i32) + 99) / 100), "its share of 4 pods, at least one");
        assert_eq!(deployments.get("shop-1").await.unwrap().spec.replicas, Some(4), "the stable version keeps all");
        user_parts_intact(&client, &ns.name).await;
        let out = kubectl(&["phaseloop", "promote", "shop-2", "-n", &ns.name]);
        assert!(out.ok, "{}", out.stderr);
        eventually("promoted", WAIT, || async {
            let s = api.get("shop-2").await.ok()?.status?;
            (s.phase != Some(ReleasePhase::Paused) || s.step_weight != Some(weight as i32)).then_some(())
        })
        .await
        .unwrap();
    }
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    eventually("the route back to the stable Service, the header rule gone", WAIT, || async {
        (carried(&client, &ns.name).await == (100, 0, None)).then_some(())
    })
    .await
    .unwrap();
    user_parts_intact(&client, &ns.name).await;
}

/// Abort, rollback, revert and deletion move the route first and the pods second.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_abort_through_a_route_moves_the_route_before_the_candidates_pods_go() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-routeabort").await;
    let _gateway = play_the_gateway(client.clone(), ns.name.clone());
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&users_route(&ns.name));
    create(&release(&ns.name, "shop", "1", 2, routed(json!([{"setWeight": 100}]))));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    create(&release(&ns.name, "shop", "2", 2, routed(json!([{"setWeight": 50}, {"pause": {}}]))));
    wait_release_phase(&api, "shop-2", ReleasePhase::Paused).await;
    // Watch both: when the candidate's replicas first drop, the route must already be at 0.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let out = kubectl(&["phaseloop", "abort", "shop-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    // Replicas first, then the route: if the pods have started to go, the route already moved
    // (and never moves back).
    let deadline = tokio::time::Instant::now() + WAIT;
    let route_first = loop {
        let replicas = deployments.get("shop-2").await.unwrap().spec.replicas.unwrap_or(0);
        if replicas < 2 {
            break carried(&client, &ns.name).await.1 == 0;
        }
        assert!(tokio::time::Instant::now() < deadline, "the candidate never scaled down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(route_first, "the candidate's pods went before the route left it");
    wait_release_phase(&api, "shop-2", ReleasePhase::RolledBack).await;
    assert_eq!(carried(&client, &ns.name).await, (100, 0, None));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_missing_route_and_a_writer_fighting_over_it_are_reported_and_never_looped() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-routefight").await;
    let _gateway = play_the_gateway(client.clone(), ns.name.clone());
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "shop", "1", 1, routed(json!([{"setWeight": 100}]))));
    let r = wait_for(&api, "shop-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "TrafficRouted")).is_some_and(|c| c.reason == "RouteNotFound")
    })
    .await
    .unwrap();
    assert!(condition(&r, "TrafficRouted").unwrap().message.contains("shop"));
    event_about(&client, &ns.name, "shop-1", "RouteNotFound").await;
    assert_ne!(r.status.unwrap().phase, Some(ReleasePhase::Live), "it waits for its route");
    create(&users_route(&ns.name));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    // Another controller keeps writing the rule back to its own backend.
    let theirs = json!({"spec": {"rules": users_route(&ns.name)["spec"]["rules"]}});
    let params = PatchParams { field_manager: Some("other-controller".into()), ..Default::default() };
    for _ in 0..3 {
        routes(&client, &ns.name).patch("shop", &params, &Patch::Merge(&theirs)).await.unwrap();
        eventually("written back", WAIT, || async { (carried(&client, &ns.name).await.0 == 100).then_some(()) })
            .await
            .unwrap();
    }
    let r = api.get("shop-1").await.unwrap();
    let rewrites = r.status.as_ref().and_then(|s| s.routing.as_ref()).map(|r| r.rewrites).unwrap_or(0);
    assert!(rewrites >= 2, "each rewrite counted: {rewrites}");
    event_about(&client, &ns.name, "shop-1", "RouteConflict").await;
}
