//! Protection: the finalizer first, deletion (the namespace first, never a foreign one, a
//! production one with its annotation), production never expiring nor sleeping, a foreign
//! namespace left alone, the Pod Security level bounded by the operator's.

use super::*;
use crate::api::PodSecurity;

fn deleted(e: Environment) -> Environment {
    let mut e = with_status(e, |s| s.phase = Some(EnvironmentPhase::Ready));
    e.metadata.deletion_timestamp = Some(fixtures::time(60));
    e
}

#[test]
fn protection_the_finalizer_goes_on_before_anything_else() {
    let mut e = env("pr-1", json!({"tier": "preview"}));
    e.metadata.finalizers = None;
    let out = Case::new(e).decide();
    assert_eq!(out.effects, [Effect::AddFinalizer]);
    assert_eq!(out.status, None, "no status either: the finalizer patch's watch event runs the next reconcile");
    assert!(out.then.is_empty());
}

#[test]
fn protection_deletion_deletes_the_namespace_first_and_waits_for_it() {
    let mut case = Case::new(deleted(env("pr-1", json!({"tier": "preview"}))));
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Terminating));
    assert_eq!(out.transitions, [Transition::Terminate]);
    assert_eq!(out.effects, [Effect::DeleteNamespace { production: false }]);
    assert!(out.waiting.as_deref().is_some_and(|w| w.contains("namespace pr-1")), "{:?}", out.waiting);
    assert!(out.then.is_empty(), "the finalizer stays");
    case.namespace = NamespaceSeen::Ours { deleting: true };
    let out = case.decide();
    assert!(out.effects.is_empty(), "no second delete");
    assert!(out.waiting.is_some());
    case.namespace = NamespaceSeen::Absent;
    let out = case.decide();
    assert_eq!(out.then, [Effect::RemoveFinalizer], "once it is gone, after the status");
    assert_eq!(out.waiting, None);
}

#[test]
fn protection_a_foreign_namespace_of_the_same_name_is_never_deleted() {
    let mut case = Case::new(deleted(env("pr-1", json!({}))));
    case.namespace = NamespaceSeen::Foreign;
    let out = case.decide();
    assert!(out.effects.is_empty());
    assert_eq!(out.then, [Effect::RemoveFinalizer]);
}

#[test]
fn protection_a_production_namespace_is_deleted_with_the_annotation_its_policy_asks_for() {
    let out = Case::new(deleted(env("prod", json!({"tier": "production"})))).decide();
    assert_eq!(out.effects, [Effect::DeleteNamespace { production: true }]);
}

#[test]
fn protection_a_production_environment_with_a_stored_ttl_never_expires() {
    // The CRD refuses it; one stored before it did must not delete production.
    let mut case = Case::new(env("prod", json!({"tier": "production", "ttl": "1h"})));
    case.now = 2 * HOUR;
    let out = case.decide();
    assert!(out.then.is_empty(), "{:?}", out.then);
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::InvalidSpec));
    assert!(condition(&out, condition::DEGRADED).message.contains("spec.ttl is not allowed on a production"));
    assert_eq!(cond(&out, condition::EXPIRING), is("False", Reason::InvalidSpec));
    assert!(!provisions(&out), "an invalid spec acts on nothing");
    assert_eq!(out.events(), [Reason::InvalidSpec]);
}

#[test]
fn protection_a_production_environment_with_a_stored_sleep_after_never_sleeps() {
    let mut case = Case::new(env("prod", json!({"tier": "production", "sleepAfter": "15s"})));
    case.now = HOUR;
    let out = case.decide();
    assert_eq!(status(&out).slept_at, None);
    assert!(condition(&out, condition::DEGRADED).message.contains("spec.sleepAfter is not allowed on a production"));
}

#[test]
fn protection_an_invalid_spec_is_not_deleted_at_its_ttl() {
    let mut case = Case::new(env("pr-1", json!({"tier": "preview", "ttl": "1h", "from": "pr-1"})));
    case.now = 2 * HOUR;
    let out = case.decide();
    assert!(out.then.is_empty());
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
    assert!(condition(&out, condition::DEGRADED).message.contains("spec.from names this Environment itself"));
}

#[test]
fn protection_a_foreign_namespace_is_left_untouched() {
    let mut case = Case::new(env("shop", json!({"infrastructure": [component("db", vec![configmap("db-config")])]})));
    case.namespace = NamespaceSeen::Foreign;
    let out = case.decide();
    assert!(out.effects.iter().all(|e| matches!(e, Effect::Event { .. })), "{:?}", out.effects);
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::NamespaceConflict));
    assert_eq!(out.events(), [Reason::NamespaceConflict]);
    assert_eq!(out.requeue, RECHECK);
}

#[test]
fn protection_a_pod_security_level_looser_than_the_operator_allows_is_refused() {
    let out = Case::new(env("loose", json!({"podSecurity": "privileged"}))).decide();
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::InvalidSpec));
    assert!(condition(&out, condition::DEGRADED).message.contains("podSecurity privileged"));
    assert!(!provisions(&out), "no namespace for a refused Environment");
}

#[test]
fn protection_an_inherited_pod_security_level_is_capped_at_the_operators() {
    let parent = env("parent", json!({"podSecurity": "privileged"}));
    let mut case = Case::branch(env("child", json!({"from": "parent"})), &[&parent]);
    case.config.max_pod_security = PodSecurity::Baseline;
    let out = case.decide();
    let level = out.effects.iter().find_map(|e| match e {
        Effect::Namespace(ns) => ns.metadata.labels.as_ref()?.get("pod-security.kubernetes.io/enforce").cloned(),
        _ => None,
    });
    assert_eq!(level.as_deref(), Some("baseline"));
}
