use super::*;
use crate::controller::release::traffic::Exposure;

fn route(rules: Value) -> RouteSeen {
    RouteSeen {
        resource_version: "7".into(),
        generation: 3,
        rules: rules.as_array().cloned().unwrap(),
        accepted: Some(3),
        rules_writer: Some("kubectl".into()),
    }
}

/// The user's route: a rule phaseloop steers (with a filter), one it leaves alone.
fn users() -> RouteSeen {
    route(json!([
        {"name": "web", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
         "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x-from", "value": "gw"}]}}],
         "backendRefs": [{"name": "shop", "port": 80}]},
        {"name": "static", "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
         "backendRefs": [{"name": "cdn", "port": 8080}]},
    ]))
}

fn steer(rules: &[&str]) -> RouteRef {
    RouteRef { name: "shop".into(), rules: rules.iter().map(|r| r.to_string()).collect() }
}

fn weights(rules: &[Value], i: usize) -> Vec<(String, i64)> {
    rules[i]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_string(), b["weight"].as_i64().unwrap()))
        .collect()
}

#[test]
fn exact_weights_go_to_the_stable_and_canary_services_of_the_named_rules_only() {
    for w in [1, 5, 50] {
        let rules =
            desired_rules(&users(), &steer(&["web"]), &Exposure::split("shop-1", "shop-2", w), "shop", 80).unwrap();
        assert_eq!(weights(&rules, 0), [("shop-stable".into(), 100 - w as i64), ("shop-canary".into(), w as i64)]);
        assert_eq!(rules[1], users().rules[1], "the rule it does not steer is the user's, untouched");
        assert_eq!(rules[0]["filters"], users().rules[0]["filters"], "the user's filters stay");
        assert_eq!(carried_weight(&rules, "shop"), Some(w));
    }
}

#[test]
fn a_header_route_sends_matching_requests_to_the_candidate_at_any_weight_and_goes_with_it() {
    let header = HeaderRoute { name: "x-canary".into(), exact: Some("1".into()), regex: None };
    let at_zero = Exposure { header: Some(header), ..Exposure::split("shop-1", "shop-2", 0) };
    let rules = desired_rules(&users(), &steer(&["web"]), &at_zero, "shop", 80).unwrap();
    assert_eq!(rules.len(), 3);
    let ours = &rules[2];
    assert_eq!(ours["name"], "phaseloop-header-0");
    assert_eq!(
        ours["matches"][0]["headers"][0],
        json!({"type": "Exact", "name": "x-canary", "value": "1"}),
        "the rule's own match with the header added"
    );
    assert_eq!(ours["matches"][0]["path"], json!({"type": "PathPrefix", "value": "/"}));
    assert_eq!(weights(&rules, 2), [("shop-stable".into(), 0), ("shop-canary".into(), 1)]);
    assert_eq!(ours["filters"], users().rules[0]["filters"]);
    // Read back and written again: the same rules (phaseloop's own rule is replaced, not doubled).
    let again = desired_rules(&route(Value::Array(rules.clone())), &steer(&["web"]), &at_zero, "shop", 80).unwrap();
    assert_eq!(again, rules);
    // The rollout over, the header rule goes.
    let done =
        desired_rules(&route(Value::Array(rules)), &steer(&["web"]), &Exposure::only("shop-2"), "shop", 80).unwrap();
    assert_eq!(done.len(), 2);
    assert_eq!(weights(&done, 0), [("shop-stable".into(), 100), ("shop-canary".into(), 0)]);
}

#[test]
fn the_switch_sends_everything_to_the_candidate_in_one_write() {
    let rules = desired_rules(&users(), &steer(&[]), &Exposure::switched("shop-1", "shop-2"), "shop", 80).unwrap();
    assert_eq!(weights(&rules, 0), [("shop-stable".into(), 0), ("shop-canary".into(), 100)]);
    assert_eq!(weights(&rules, 1), [("shop-stable".into(), 0), ("shop-canary".into(), 100)], "no names: every rule");
}

#[test]
fn a_rule_that_is_not_there_is_said_and_nothing_is_written() {
    let missing = desired_rules(&users(), &steer(&["api"]), &Exposure::only("shop-1"), "shop", 80).unwrap_err();
    assert!(missing.contains("no rule named api"), "{missing}");
}

#[test]
fn acceptance_is_the_oldest_generation_every_gateway_accepted() {
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop", "namespace": "prod", "generation": 4, "resourceVersion": "9",
            "managedFields": [
                {"manager": "kubectl", "operation": "Update", "time": "2026-12-06T10:00:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:rules": {}}}},
                {"manager": "phaseloop", "operation": "Update", "time": "2026-12-06T10:05:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:rules": {}}}},
                {"manager": "traefik", "operation": "Update", "time": "2026-12-06T10:06:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}, "subresource": "status"}]},
        "spec": {"rules": []},
        "status": {"parents": [
            {"parentRef": {"name": "a"}, "controllerName": "x", "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 4, "reason": "Accepted", "message": "", "lastTransitionTime": "2026-12-06T10:06:00Z"}]},
            {"parentRef": {"name": "b"}, "controllerName": "x", "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 3, "reason": "Accepted", "message": "", "lastTransitionTime": "2026-12-06T10:06:00Z"}]}]}
    }))
    .unwrap();
    let seen = RouteSeen::of(&route);
    assert_eq!((seen.generation, seen.accepted), (4, Some(3)));
    assert_eq!(seen.rules_writer.as_deref(), Some("phaseloop"), "the last writer of spec.rules");
}

#[test]
fn the_cached_route_still_says_who_rewrote_its_rules() {
    // What the routes cache keeps must tell another writer's rewrite from phaseloop's own write:
    // the general lean drops every managed field of an object phaseloop did not stamp.
    let route = |managers: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "shop", "namespace": "prod", "managedFields": managers,
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"rules": []}
        }))
        .unwrap()
    };
    let entry = |manager: &str, fields: serde_json::Value| {
        json!({"manager": manager, "operation": "Update", "time": "2026-12-06T10:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": fields})
    };
    let mut rewritten = route(json!([
        entry("kubectl-client-side-apply", json!({"f:spec": {"f:parentRefs": {}}})),
        entry("other-controller", json!({"f:spec": {"f:rules": {}}}))
    ]));
    lean_route(&mut rewritten);
    assert_eq!(RouteSeen::of(&rewritten).rules_writer.as_deref(), Some("other-controller"));
    assert!(rewritten.metadata.annotations.unwrap().is_empty(), "lean otherwise");
    // Both wrote the same rules (same second): phaseloop's, not a rewrite.
    let mut shared = route(json!([
        entry("other-controller", json!({"f:spec": {"f:rules": {}}})),
        entry("phaseloop", json!({"f:spec": {"f:rules": {}}}))
    ]));
    lean_route(&mut shared);
    assert_eq!(RouteSeen::of(&shared).rules_writer.as_deref(), Some("phaseloop"));
}
