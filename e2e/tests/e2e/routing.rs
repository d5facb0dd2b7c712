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
use phaseloop_e2e::{traffic::Monitor, *};
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
    // The API server fills in the defaults of a backendRef (group, kind, weight): its name and port are the owner's.
    let target = |b: &Value| (b["name"].clone(), b["port"].clone());
    let backends = |r: &Value| r["backendRefs"].as_array().unwrap().iter().map(target).collect::<Vec<_>>();
    assert_eq!(backends(static_rule), backends(&original["spec"]["rules"][1]), "the rule it does not steer");
    let web = rules.iter().find(|r| r["name"] == "web").unwrap();
    assert_eq!(web["filters"], original["spec"]["rules"][0]["filters"], "the owner's filters");
}

/// A namespace with the user's route, a test playing its Gateway, and `shop-1` Live through it at
/// `replicas`, watched by a routed monitor.
async fn live_through_the_route(prefix: &str, replicas: i32) -> (Client, TestNamespace, Api<Release>, Monitor) {
    let client = client().await;
    let ns = TestNamespace::new(&client, prefix).await;
    // Detached: it ends with the test's runtime.
    drop(play_the_gateway(client.clone(), ns.name.clone()));
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&users_route(&ns.name));
    create(&release(&ns.name, "shop", "1", replicas, routed(json!([{"setWeight": 100}]))));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    eventually("the first version takes the route", WAIT, || async {
        (carried(&client, &ns.name).await == (100, 0, None)).then_some(())
    })
    .await
    .unwrap();
    let monitor = Monitor::start_routed(&client, &ns.name, "shop", "shop").await;
    (client, ns, api, monitor)
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_routed_canary_carries_exact_weights_and_a_header_route_at_each_step_whatever_the_pods() {
    let _shared = shared().await;
    let (client, ns, api, monitor) = live_through_the_route("e2e-route", 4).await;
    let steps = json!([{"setHeaderRoute": {"name": "x-canary", "exact": "tester"}}, {"pause": {}},
        {"setWeight": 1}, {"pause": {}}, {"setWeight": 5}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]);
    create(&release(&ns.name, "shop", "2", 4, routed(steps)));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    // (weight, the candidate's pods): its share of 4, at least one while anything reaches it.
    for (weight, pods) in [(0, 1), (1, 1), (5, 1), (50, 2)] {
        let r = wait_for(&api, "shop-2", WAIT, |r: Option<&Release>| {
            r.and_then(|r| r.status.as_ref())
                .is_some_and(|s| s.phase == Some(ReleasePhase::Paused) && s.weight == Some(weight))
        })
        .await
        .unwrap_or_else(|e| panic!("shop-2 never paused at {weight}%: {e}"));
        let (stable, canary, header) = carried(&client, &ns.name).await;
        assert_eq!(
            (stable, canary, header.as_deref()),
            (100 - weight as i64, weight as i64, Some("tester")),
            "at {weight}%"
        );
        let status = r.status.unwrap();
        assert_eq!(status.routing.as_ref().and_then(|r| r.weight), Some(weight), "the weight the route carries");
        assert!(status.ready_share.is_some(), "the Ready share beside the weight");
        assert_eq!(deployments.get("shop-2").await.unwrap().spec.replicas, Some(pods), "at {weight}%");
        assert_eq!(deployments.get("shop-1").await.unwrap().spec.replicas, Some(4), "the stable version keeps all");
        user_parts_intact(&client, &ns.name).await;
        let out = kubectl(&["phaseloop", "promote", "shop-2", "-n", &ns.name]);
        assert!(out.ok, "{}", out.stderr);
    }
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    eventually("the route back to the stable Service, the header rule gone", WAIT, || async {
        (carried(&client, &ns.name).await == (100, 0, None)).then_some(())
    })
    .await
    .unwrap();
    user_parts_intact(&client, &ns.name).await;
    let t = monitor.stop().await;
    t.assert_routes_reach_ready_pods();
    // Whatever the pods (1 of 5 at 1% and at 5%), the route said exactly the step's weight.
    for weight in [1, 5] {
        t.assert_while(
            &format!("{weight}% through the route"),
            |s| {
                s.releases
                    .get("shop-2")
                    .is_some_and(|r| r.weight == Some(weight) && r.phase == Some(ReleasePhase::Paused))
            },
            |s| s.weight_of("shop-canary") == weight as i64 || s.weight_of("shop-canary") == 0,
        );
    }
}

/// Starts `shop-2` as a canary paused at 50% through the route; returns once the route carries it.
async fn canary_at_half(client: &Client, ns: &str, api: &Api<Release>) {
    create(&release(ns, "shop", "2", 2, routed(json!([{"setWeight": 50}, {"pause": {}}]))));
    wait_release_phase(api, "shop-2", ReleasePhase::Paused).await;
    eventually("the route at 50/50", WAIT, || async { (carried(client, ns).await.1 == 50).then_some(()) })
        .await
        .unwrap();
}

/// After a way back: the route at 100/0 on version 1, and the monitor's timeline shows the route
/// left version 2 before its pods went.
async fn moved_back_route_first(client: &Client, ns: &str, monitor: Monitor, from: &str) {
    eventually("version 2 at zero pods, the route all on the stable version", WAIT, || async {
        let gone = replicas(client, ns, "shop-2").await.unwrap_or(0) == 0;
        (gone && carried(client, ns).await == (100, 0, None)).then_some(())
    })
    .await
    .unwrap();
    // Scaled to zero is not gone: the timeline must reach the moment its pods go (slow under load).
    eventually("the monitor sees the pods of version 2 gone", WAIT, || {
        let t = monitor.now();
        async move { t.samples.last().is_some_and(|s| s.pods.get("2").copied().unwrap_or(0) == 0).then_some(()) }
    })
    .await
    .unwrap();
    let t = monitor.stop().await;
    t.assert_routes_reach_ready_pods();
    let at = t.mark(from);
    let dropped = t.assert_route_moved_before_pods_of("2", at);
    eprintln!(
        "FIGURE routing {from}: first pod of version 2 gone {:.2}s after the request",
        (dropped - at).as_secs_f64()
    );
}

/// Abort, rollback, revert and deletion move the route first and the pods second.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_abort_through_a_route_moves_the_route_before_the_candidates_pods_go() {
    let _shared = shared().await;
    let (client, ns, api, monitor) = live_through_the_route("e2e-routeabort", 2).await;
    canary_at_half(&client, &ns.name, &api).await;
    monitor.mark("abort");
    let out = kubectl(&["phaseloop", "abort", "shop-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "shop-2", ReleasePhase::RolledBack).await;
    moved_back_route_first(&client, &ns.name, monitor, "abort").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_failed_analysis_through_a_route_moves_the_route_before_the_candidates_pods_go() {
    let _shared = shared().await;
    let (client, ns, api, monitor) = live_through_the_route("e2e-routefail", 2).await;
    // The canary's error rate, as its Service's requests would show it, through the pushgateway.
    let body = format!("e2e_route_error_ratio{{namespace=\"{}\",service=\"shop-canary\"}} 0.5\n", ns.name);
    let url = format!("{}/metrics/job/e2e-route/instance/{}", pushgateway_url(), ns.name);
    reqwest::Client::new().put(url.clone()).body(body).send().await.unwrap().error_for_status().unwrap();
    let analysis = json!({"analysis": {"interval": "2s", "metrics": [{"name": "errors", "max": 0.1, "failureLimit": 0,
        "query": "max(e2e_route_error_ratio{namespace=\"{{namespace}}\",service=\"{{canaryService}}\"})"}]}});
    monitor.mark("analysis");
    let mut strategy = routed(json!([{"setWeight": 50}, {"pause": {"duration": "5m"}}]));
    strategy.as_object_mut().unwrap().extend(analysis.as_object().unwrap().clone());
    create(&release(&ns.name, "shop", "2", 2, strategy));
    let r = wait_release_phase(&api, "shop-2", ReleasePhase::RolledBack).await;
    let _ = reqwest::Client::new().delete(url).send().await;
    assert!(r.status.unwrap().message.unwrap_or_default().contains("errors = 0.5"));
    moved_back_route_first(&client, &ns.name, monitor, "analysis").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_candidate_deleted_through_a_route_moves_the_route_before_its_pods_go() {
    let _shared = shared().await;
    let (client, ns, api, monitor) = live_through_the_route("e2e-routedelete", 2).await;
    canary_at_half(&client, &ns.name, &api).await;
    monitor.mark("delete");
    let out = kubectl(&["delete", "release", "shop-2", "-n", &ns.name, "--wait=false"]);
    assert!(out.ok, "{}", out.stderr);
    moved_back_route_first(&client, &ns.name, monitor, "delete").await;
    eventually("shop-2 gone once the stable version serves alone", WAIT, || async {
        api.get_opt("shop-2").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_revert_through_a_route_moves_the_route_before_the_current_versions_pods_go() {
    let _shared = shared().await;
    let (client, ns, api, monitor) = live_through_the_route("e2e-routerevert", 2).await;
    create(&release(&ns.name, "shop", "2", 2, routed(json!([{"setWeight": 50}]))));
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    eventually("the route all on the stable Service, now version 2", WAIT, || async {
        (carried(&client, &ns.name).await == (100, 0, None)).then_some(())
    })
    .await
    .unwrap();
    monitor.mark("revert");
    let out = kubectl(&["phaseloop", "revert", "shop-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "shop-2", ReleasePhase::Reverted).await;
    moved_back_route_first(&client, &ns.name, monitor, "revert").await;
    assert_eq!(service_selects(&client, &ns.name, "shop-stable").await.as_deref(), Some("1"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_missing_route_and_a_writer_fighting_over_it_are_reported_and_never_looped() {
    let _shared = shared().await;
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

/// The shell block of docs/traffic-routing.md's complete example.
fn documented_example() -> String {
    let doc = std::fs::read_to_string(repo_root().join("docs/traffic-routing.md")).unwrap();
    let section = &doc[doc.find("## A complete example").expect("the page has its example")..];
    let start = section.find("```bash\n").expect("a bash block") + "```bash\n".len();
    let len = section[start..].find("\n```").expect("the block ends");
    section[start..start + len].to_string() + "\n"
}

/// Deletes namespace `shop` (the example's), waiting until it is gone.
async fn no_shop_namespace(client: &Client) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = namespaces.delete("shop", &Default::default()).await;
    eventually("namespace shop gone", WAIT, || async {
        namespaces.get_opt("shop").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_traffic_routing_pages_example_plays_as_printed() {
    let _shared = shared().await;
    let client = client().await;
    no_shop_namespace(&client).await;
    drop(play_the_gateway(client.clone(), "shop".into()));
    let path = format!("{}:{}", repo_root().join("target/debug").display(), std::env::var("PATH").unwrap_or_default());
    let out = tokio::process::Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &documented_example()])
        .env("PATH", path)
        .current_dir(repo_root())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        no_shop_namespace(&client).await;
        panic!("the example failed:\n{stdout}\n{stderr}");
    }
    // What the route said at each `route` of the example, in order.
    let said: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("web:") || l.starts_with("phaseloop-header")).collect();
    let expected = [
        "web: shop-stable=100 shop-canary=0",
        "web: shop-stable=100 shop-canary=0",
        "phaseloop-header-0: shop-stable=0 shop-canary=1",
        "web: shop-stable=99 shop-canary=1",
        "phaseloop-header-0: shop-stable=0 shop-canary=1",
        "web: shop-stable=50 shop-canary=50",
        "phaseloop-header-0: shop-stable=0 shop-canary=1",
        "web: shop-stable=100 shop-canary=0",
    ];
    assert_eq!(said, expected, "{stdout}");
    assert_eq!(stdout.matches("static: cdn=1").count(), 5, "the owner's rule, untouched: {stdout}");
}
