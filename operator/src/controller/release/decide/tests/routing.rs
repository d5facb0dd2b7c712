//! Traffic through a Gateway API route: exact weights whatever the pods, header routes, the route
//! before the pods on the way back, missing routes and fights said and never looped.

use serde_json::Value;

use super::*;
use crate::controller::release::traffic::gateway::{RoutePatch, RouteSeen};

fn routed(steps: Value) -> Value {
    json!({"type": "Canary", "canary": {"steps": steps,
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "shop", "rules": ["web"]}]}}}})
}

/// The user's route, as phaseloop finds it: its rule `web` to the app's Service, one more rule.
fn users_route() -> RouteSeen {
    RouteSeen {
        resource_version: "10".into(),
        generation: 1,
        rules: vec![
            json!({"name": "web", "backendRefs": [{"name": "shop", "port": 80}]}),
            json!({"name": "static", "backendRefs": [{"name": "cdn", "port": 80}]}),
        ],
        accepted: Some(1),
        rules_writer: Some("kubectl".into()),
    }
}

fn route_patches(out: &Outcome) -> Vec<RoutePatch> {
    out.effects.iter().filter_map(|e| if let Effect::Route(p) = e { Some(p.clone()) } else { None }).collect()
}

/// The route as written by `patch` and accepted by its Gateway.
fn written(patch: &RoutePatch, writer: &str) -> RouteSeen {
    RouteSeen {
        resource_version: "11".into(),
        generation: 2,
        rules: patch.rules.clone(),
        accepted: Some(2),
        rules_writer: Some(writer.into()),
    }
}

fn canary_weight(rules: &[Value]) -> i64 {
    rules[0]["backendRefs"][1]["weight"].as_i64().unwrap()
}

fn case(steps: Value, step: i32) -> Case {
    let candidate = rolling_out(rel("shop-2", "2", routed(steps), None), step);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.routes = vec![(crate::api::RouteRef { name: "shop".into(), rules: vec!["web".into()] }, Some(users_route()))];
    case
}

#[test]
fn through_a_route_each_step_sets_its_exact_weight_whatever_the_pods_and_waits_until_the_gateway_has_it() {
    for w in [1, 5, 50] {
        let mut case = case(json!([{"setWeight": w}, {"pause": {}}]), 0);
        case.own = deployed(0, 0);
        let out = case.decide();
        let candidate_pods = scales(&out)["shop-2"];
        assert_eq!((candidate_pods, scales(&out)["shop-1"]), (((4 * w + 99) / 100).max(1), 4), "{w}%");
        // The route is taken over (all to the stable version) but gives the candidate nothing
        // before its pods are Ready behind its Service: a Gateway would send them requests anyway.
        let patches = route_patches(&out);
        assert_eq!(canary_weight(&patches[0].rules), 0, "{w}%: nothing before the candidate is Ready");
        assert_eq!(out.status.current_step, Some(0));
        case.routes[0].1 = Some(written(&patches[0], "phaseloop"));
        case.own = deployed(candidate_pods, candidate_pods);
        let out = case.decide();
        assert!(route_patches(&out).is_empty(), "{w}%: Ready, but not behind the canary Service yet");
        case.canary_endpoints = candidate_pods;
        let out = case.decide();
        let patches = route_patches(&out);
        assert_eq!(patches.len(), 1, "{w}%: one route write");
        assert_eq!(canary_weight(&patches[0].rules), w as i64, "exactly {w}%, whatever the 4 pods");
        assert_eq!(patches[0].resource_version, "11", "guarded by the route's version");
        assert_eq!(out.status.current_step, Some(0), "not before the route carries it");
        assert_eq!(condition(&out, TRAFFIC_ROUTED).reason, "RouteUpdating");
        // The route written and accepted: on to the pause.
        case.routes[0].1 = Some(RouteSeen {
            resource_version: "12".into(),
            generation: 3,
            accepted: Some(3),
            ..written(&patches[0], "phaseloop")
        });
        let out = case.decide();
        assert!(route_patches(&out).is_empty(), "nothing to write again");
        assert_eq!(condition(&out, TRAFFIC_ROUTED).status, "True");
        assert_eq!((out.status.current_step, out.status.phase), (Some(1), Some(ReleasePhase::Paused)));
        assert_eq!(out.status.weight, Some(w), "the weight the route carries");
    }
}

#[test]
fn through_a_route_a_higher_weight_waits_for_the_pods_it_needs_and_a_lower_one_does_not() {
    // At 5% (one pod Ready), 50% asks for two: the route stays at 5 until the second is Ready.
    let mut case = case(json!([{"setWeight": 5}, {"setWeight": 50}, {"pause": {}}]), 1);
    let at = |w: i64| {
        json!({"name": "web", "backendRefs": [
        {"group": "", "kind": "Service", "name": "shop-stable", "port": 80, "weight": 100 - w},
        {"group": "", "kind": "Service", "name": "shop-canary", "port": 80, "weight": w}]})
    };
    case.routes[0].1 = Some(RouteSeen { rules: vec![at(5), users_route().rules[1].clone()], ..users_route() });
    case.rel = with_status(case.rel.clone(), |s| {
        s.routing = Some(crate::api::RoutingStatus { weight: Some(5), ..Default::default() })
    });
    (case.own, case.canary_endpoints) = (deployed(2, 1), 1);
    let out = case.decide();
    assert!(route_patches(&out).is_empty(), "still 5%: one of the two pods is Ready");
    assert_eq!(out.status.current_step, Some(1));
    (case.own, case.canary_endpoints) = (deployed(2, 2), 2);
    assert_eq!(canary_weight(&route_patches(&case.decide())[0].rules), 50);
    // Going down needs nothing: 50% to 5% is written whatever the pods.
    let mut case = case_down();
    (case.own, case.canary_endpoints) = (deployed(1, 0), 0);
    assert_eq!(
        canary_weight(&route_patches(&case.decide())[0].rules),
        0,
        "no pod behind the canary: nothing reaches it"
    );
}

#[test]
fn pods_ready_but_not_yet_behind_the_canary_service_hold_the_step_and_its_traffic() {
    // The EndpointSlices lag the pods: neither the header rule nor a weight goes out, and the step
    // is not done although the route carries what was admitted.
    let header = json!([{"setHeaderRoute": {"name": "x-canary", "exact": "tester"}}, {"pause": {}}]);
    let weight = json!([{"setWeight": 5}, {"pause": {}}]);
    for steps in [header, weight] {
        let mut case = case(steps.clone(), 0);
        (case.own, case.canary_endpoints) = (deployed(1, 1), 0);
        let out = case.decide();
        let rules = route_patches(&out).first().map(|p| p.rules.clone()).unwrap_or_default();
        assert!(
            rules.iter().all(|r| !r["name"].as_str().unwrap_or_default().starts_with("phaseloop-header")),
            "{steps}: no header rule yet"
        );
        assert!(rules.is_empty() || canary_weight(&rules) == 0, "{steps}: no weight yet");
        assert_eq!(out.status.current_step, Some(0), "{steps}: the step waits");
        case.canary_endpoints = 1;
        assert_eq!(case.decide().status.current_step, Some(0), "{steps}: written first, then done");
    }
}

/// A rollout at its step `setWeight: 5` after 50%, the route still at 50.
fn case_down() -> Case {
    let mut case = case(json!([{"setWeight": 50}, {"setWeight": 5}, {"pause": {}}]), 1);
    let rule = json!({"name": "web", "backendRefs": [
        {"group": "", "kind": "Service", "name": "shop-stable", "port": 80, "weight": 50},
        {"group": "", "kind": "Service", "name": "shop-canary", "port": 80, "weight": 50}]});
    case.routes[0].1 = Some(RouteSeen { rules: vec![rule, users_route().rules[1].clone()], ..users_route() });
    case
}

#[test]
fn a_header_route_reaches_the_candidate_at_weight_zero_and_is_removed_when_the_rollout_ends() {
    let steps = json!([{"setHeaderRoute": {"name": "x-canary", "exact": "tester"}}, {"pause": {}}]);
    let mut case = case(steps, 1);
    (case.own, case.canary_endpoints) = (deployed(1, 1), 1);
    let out = case.decide();
    let rules = &route_patches(&out)[0].rules;
    assert_eq!(canary_weight(rules), 0, "no user traffic");
    let header = rules.iter().find(|r| r["name"] == "phaseloop-header-0").expect("the header rule");
    assert_eq!(header["matches"][0]["headers"][0]["value"], "tester");
    assert_eq!(scales(&out)["shop-2"], 1, "one pod for the testers");
    // Rolled back: the header rule goes with the weight.
    case.rel = annotate(case.rel.clone(), ABORT, "bob");
    case.routes[0].1 = Some(written(&route_patches(&out)[0], "phaseloop"));
    let out = case.decide();
    let rules = &route_patches(&out)[0].rules;
    assert_eq!(rules.len(), 2, "only the user's rules");
    assert_eq!(canary_weight(rules), 0);
}

/// Abort, rollback, revert and deletion move the route first and the pods second.
#[test]
fn a_rollback_through_a_route_moves_the_route_before_any_pod_goes() {
    let mut case = case(json!([{"setWeight": 50}, {"pause": {}}]), 1);
    case.rel = annotate(case.rel.clone(), ABORT, "bob");
    case.own = deployed(2, 2);
    case.routes[0].1 = Some(RouteSeen {
        rules: vec![
            json!({"name": "web", "backendRefs": [
                {"group": "", "kind": "Service", "name": "shop-stable", "port": 80, "weight": 50},
                {"group": "", "kind": "Service", "name": "shop-canary", "port": 80, "weight": 50}]}),
            users_route().rules[1].clone(),
        ],
        ..users_route()
    });
    let out = case.decide();
    assert_eq!(canary_weight(&route_patches(&out)[0].rules), 0, "the route to the stable version");
    assert_ne!(scales(&out).get("shop-2"), Some(&0), "the candidate's pods stay meanwhile");
    assert_ne!(out.status.phase, Some(ReleasePhase::RolledBack));
    // The Gateway has it: the pods go, the rollback is done.
    case.routes[0].1 = Some(written(&route_patches(&out)[0], "phaseloop"));
    case.rel = with_status(case.rel.clone(), |s| *s = out.status.clone());
    let out = case.decide();
    assert_eq!(scales(&out)["shop-2"], 0);
    assert_eq!(out.transitions, [Transition::RolledBack]);
}

#[test]
fn a_missing_route_or_rule_is_said_once_and_the_rollout_waits_at_its_step() {
    let mut case = case(json!([{"setWeight": 10}]), 0);
    case.routes[0].1 = None;
    let out = case.decide();
    let c = condition(&out, TRAFFIC_ROUTED);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "RouteNotFound"));
    assert_eq!(events(&out), [Reason::RouteNotFound]);
    assert!(route_patches(&out).is_empty());
    assert_eq!(out.status.current_step, Some(0));
    // Said once: the next decision, with the condition already there, publishes nothing.
    case.rel = with_status(case.rel.clone(), |s| *s = out.status.clone());
    assert!(events(&case.decide()).is_empty());
    case.routes[0].0.rules = vec!["api".into()];
    case.routes[0].1 = Some(users_route());
    let out = case.decide();
    assert_eq!(condition(&out, TRAFFIC_ROUTED).reason, "RuleNotFound");
}

#[test]
fn a_route_its_owner_keeps_rewriting_is_written_back_after_a_growing_backoff_and_said() {
    let mut case = case(json!([{"setWeight": 10}]), 0);
    // phaseloop wrote the route at t(5); its owner re-applied its own rules since.
    case.rel = with_status(case.rel.clone(), |s| {
        s.routing = Some(crate::api::RoutingStatus { written_at: Some(t(5)), ..Default::default() })
    });
    case.now = 5;
    let out = case.decide();
    assert_eq!(route_patches(&out).len(), 1, "the first rewrite is written back at once");
    assert_eq!(out.status.routing.as_ref().unwrap().rewrites, 1);
    assert_eq!(condition(&out, TRAFFIC_ROUTED).reason, "RouteConflict");
    assert_eq!(events(&out), [Reason::RouteConflict]);
    // Rewritten again right away: the next write waits (2s), the rollout with it.
    case.rel = with_status(case.rel.clone(), |s| *s = out.status.clone());
    let out = case.decide();
    assert!(route_patches(&out).is_empty(), "no write within the backoff");
    assert!(out.requeue.is_some_and(|r| r <= Duration::from_secs(3)), "{:?}", out.requeue);
    case.now = 8;
    let out = case.decide();
    assert_eq!(route_patches(&out).len(), 1, "after it");
    assert_eq!(out.status.routing.as_ref().unwrap().rewrites, 2);
}

#[test]
fn blue_green_through_a_route_previews_by_header_only_and_switches_in_one_write() {
    let bg = json!({"type": "BlueGreen", "blueGreen": {
        "trafficRouting": {"gatewayAPI": {"httpRoutes": [{"name": "shop"}]}},
        "previewHeader": {"name": "x-preview", "exact": "1"}}});
    let candidate = rolling_out(rel("shop-2", "2", bg, None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.routes = vec![(crate::api::RouteRef { name: "shop".into(), rules: vec![] }, Some(users_route()))];
    (case.own, case.canary_endpoints) = (deployed(4, 2), 2);
    let out = case.decide();
    let rules = &route_patches(&out)[0].rules;
    assert_eq!(canary_weight(rules), 0, "no production traffic during the preview");
    assert!(rules.iter().any(|r| r["matches"][0]["headers"][0]["name"] == "x-preview"), "{rules:?}");
    // At the switch: one route write gives the candidate everything, the header rule goes.
    case.rel = rolling_out(case.rel.clone(), 1);
    case.own = deployed(4, 4);
    let out = case.decide();
    let patches = route_patches(&out);
    assert_eq!(patches.len(), 1);
    assert!(patches[0].rules.iter().filter(|r| r["name"] != "static").all(|r| r["backendRefs"][1]["weight"] == 100));
    assert!(!patches[0].rules.iter().any(|r| r["name"].as_str().is_some_and(|n| n.starts_with("phaseloop-header"))));
}
