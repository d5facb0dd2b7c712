//! Infrastructure components: applied, refused each on its own, pruned, judged ready.

use super::*;
use crate::api::AppliedObject;

fn with_components(components: Vec<Value>) -> Environment {
    env("mixed", json!({"infrastructure": components}))
}

fn cluster_role() -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "mixed-role"}})
}

fn refusal(out: &Outcome, name: &str) -> String {
    let c = status(out).components.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name}"));
    assert!(!c.ready, "{name} refused but ready");
    c.message.clone().unwrap_or_default()
}

#[test]
fn infrastructure_a_refused_component_fails_the_environment_and_the_good_one_is_still_applied() {
    let mut case = Case::new(with_components(vec![
        component("db", vec![configmap("db-config")]),
        component("rbac", vec![cluster_role()]),
    ]));
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::ComponentRefused));
    assert!(condition(&out, condition::DEGRADED).message.contains("component rbac: ClusterRole is cluster-scoped"));
    assert_eq!(cond(&out, condition::INFRASTRUCTURE_READY), is("False", Reason::ComponentRefused));
    assert_eq!(applied(&out), ["ConfigMap/db-config"], "nothing of the refused one");
    assert!(status(&out).components.iter().any(|c| c.name == "db" && c.ready), "the good one's readiness reported");
    assert_eq!(out.events(), [Reason::ComponentRefused]);
    case.after(&out);
    assert!(case.decide().events().is_empty(), "the same refusal is not said again");
}

#[test]
fn infrastructure_access_kinds_are_refused_even_when_the_allow_list_has_them() {
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}});
    let mut case = Case::new(with_components(vec![component("hostile", vec![binding])]));
    case.config.infrastructure_kinds.push("rolebindings.rbac.authorization.k8s.io".into());
    let out = case.decide();
    assert!(refusal(&out, "hostile").contains("never allowed in infrastructure"));
    assert!(applied(&out).is_empty());
}

#[test]
fn infrastructure_a_kind_outside_the_allow_list_or_unknown_is_refused() {
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"}});
    let unknown = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
    let out =
        Case::new(with_components(vec![component("web", vec![ingress]), component("odd", vec![unknown])])).decide();
    assert!(refusal(&out, "web").contains("not in the operator's infrastructure allow-list"));
    assert!(refusal(&out, "odd").contains("unknown kind example.com/v1 Widget"));
}

#[test]
fn infrastructure_an_object_of_someone_else_is_never_taken_over() {
    let mut case = Case::new(with_components(vec![component("db", vec![configmap("shared")])]));
    case.exists(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "namespace": "mixed",
        "ownerReferences": [{"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release", "name": "shop-1", "uid": "u", "controller": true}]}}));
    let out = case.decide();
    assert!(refusal(&out, "db").contains("belongs to Release shop-1"));
    assert!(applied(&out).is_empty());
}

#[test]
fn infrastructure_a_name_an_app_uses_is_refused() {
    let service =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"}, "spec": {"ports": [{"port": 80}]}});
    let mut case = Case::new(with_components(vec![component("front", vec![service])]));
    case.releases = vec![fixtures::release("shop-1", json!({}))];
    assert!(refusal(&case.decide(), "front").contains("app shop"));
}

#[test]
fn infrastructure_objects_no_longer_declared_are_pruned_and_removed_components_too() {
    let was = |names: &[&str]| -> Vec<AppliedObject> {
        names
            .iter()
            .map(|n| AppliedObject { api_version: "v1".into(), kind: "ConfigMap".into(), name: n.to_string() })
            .collect()
    };
    let e = with_status(with_components(vec![component("db", vec![configmap("db-config")])]), |s| {
        s.components = vec![
            ComponentStatus {
                name: "db".into(),
                ready: true,
                objects: was(&["db-config", "db-old"]),
                ..Default::default()
            },
            ComponentStatus {
                name: "cache".into(),
                ready: true,
                objects: was(&["cache-config"]),
                ..Default::default()
            },
        ];
    });
    let out = Case::new(e).decide();
    assert_eq!(pruned(&out), ["ConfigMap/db-old", "ConfigMap/cache-config"]);
    assert_eq!(status(&out).components.len(), 1);
}

#[test]
fn infrastructure_a_refused_component_keeps_what_it_had_and_nothing_of_it_is_pruned() {
    let had = vec![AppliedObject { api_version: "v1".into(), kind: "ConfigMap".into(), name: "rbac-config".into() }];
    let e = with_status(with_components(vec![component("rbac", vec![cluster_role()])]), |s| {
        s.components =
            vec![ComponentStatus { name: "rbac".into(), ready: true, objects: had.clone(), ..Default::default() }];
    });
    let out = Case::new(e).decide();
    assert_eq!(status(&out).components[0].objects, had, "it may be serving");
    assert!(pruned(&out).is_empty());
}

#[test]
fn infrastructure_readiness_is_judged_on_the_objects_as_they_are() {
    let mut case =
        Case::new(with_components(vec![component("db", vec![deployment("postgres"), configmap("db-config")])]));
    let out = case.decide();
    let db = &status(&out).components[0];
    assert!(!db.ready && db.message.as_deref() == Some("waiting for Deployment postgres"), "{db:?}");
    assert_eq!(cond(&out, condition::INFRASTRUCTURE_READY), is("False", Reason::NotReady));
    // The Deployment as declared (its fingerprint) and available.
    let Effect::Apply { object, .. } = &out.effects.iter().find(|e| matches!(e, Effect::Apply { .. })).unwrap() else {
        unreachable!()
    };
    let mut live = serde_json::to_value(&**object).unwrap();
    live["metadata"]["generation"] = json!(1);
    live["status"] = json!({"observedGeneration": 1, "availableReplicas": 1, "updatedReplicas": 1});
    case.exists(live.clone());
    let out = case.decide();
    assert!(status(&out).components[0].ready);
    assert_eq!(phase(&out), Some(EnvironmentPhase::Ready));
    // Another spec of it (not yet rolled out) is not ready, however available the old one is.
    live["metadata"]["annotations"]["phaseloop.dev/fingerprint"] = json!("another");
    case.exists(live);
    assert!(!status(&case.decide()).components[0].ready);
}

#[test]
fn infrastructure_a_failed_job_refuses_its_component() {
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "m"}]}}}});
    let mut case = Case::new(with_components(vec![component("schema", vec![job])]));
    let first = case.decide();
    let Some(Effect::Apply { object, .. }) = first.effects.iter().find(|e| matches!(e, Effect::Apply { .. })) else {
        panic!("applied")
    };
    let mut live = serde_json::to_value(&**object).unwrap();
    live["status"] = json!({"conditions": [{"type": "Failed", "status": "True"}]});
    case.exists(live);
    let out = case.decide();
    assert!(refusal(&out, "schema").contains("Job migrate failed"));
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
}

#[test]
fn infrastructure_a_refusal_learnt_while_applying_refuses_the_component_and_holds_the_seed() {
    let e = env(
        "mixed",
        json!({
        "infrastructure": [component("db", vec![configmap("db-config")]),
                           component("bad", vec![configmap("bad-config"), configmap("bad-other")])],
        "seed": {"template": {"spec": {"containers": [{"name": "s", "image": "s"}]}}}}),
    );
    let case = Case::new(e);
    let o = Observation {
        env: &case.env,
        now: fixtures::time(case.now),
        skew: Some(jiff::SignedDuration::ZERO),
        config: &case.config,
        chain: Chain::default(),
        namespace: case.namespace,
        releases: &[],
        parent_releases: &[],
        upstream_releases: None,
        kinds: &case.kinds,
        objects: &case.objects,
        seed_job: None,
    };
    let mut out = decide(&o);
    assert!(out.effects.iter().any(|e| matches!(e, Effect::Seed(_))), "everything looked ready");
    // The API server refuses bad-config: what is left of the effects is after it.
    let at = out
        .effects
        .iter()
        .position(
            |e| matches!(e, Effect::Apply { object, .. } if object.metadata.name.as_deref() == Some("bad-config")),
        )
        .unwrap();
    out.effects.drain(..=at);
    refused_at_apply(&o, &mut out, "bad", "ConfigMap bad-config rejected by the API server: no".into());
    assert!(applied(&out).is_empty(), "the rest of the component is not applied: {:?}", out.effects);
    assert!(!out.effects.iter().any(|e| matches!(e, Effect::Seed(_))), "the seed waits for the whole infrastructure");
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::ComponentRefused));
    assert_eq!(cond(&out, condition::SEEDED), is("False", Reason::Waiting));
    assert!(refusal(&out, "bad").contains("rejected by the API server"));
    assert!(status(&out).components.iter().any(|c| c.name == "db" && c.ready));
    assert_eq!(out.events(), [Reason::ComponentRefused]);
    assert_eq!(out.transitions, [Transition::Fail]);
}
