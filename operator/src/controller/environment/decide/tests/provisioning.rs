//! Provisioning: the namespace and what phaseloop keeps in it, the seed, the phase and the
//! conditions, `status.apps`, and a decision that changes nothing the second time.

use super::*;
use k8s_openapi::api::batch::v1::Job;

fn seeded(extra: Value) -> Environment {
    let mut spec = json!({"seed": {"template": {"spec": {"containers": [{"name": "s", "image": "s"}]}}},
        "infrastructure": [component("db", vec![configmap("db-config")])]});
    crate::controller::mock_api::merge(&mut spec, extra);
    env("shop-dev", spec)
}

fn job(condition: &str) -> Job {
    serde_json::from_value(json!({"metadata": {"name": "phaseloop-seed"},
        "status": {"conditions": [{"type": condition, "status": "True"}]}}))
    .unwrap()
}

#[test]
fn provisioning_applies_the_namespace_quota_defaults_and_isolation() {
    let e = env(
        "shop-dev",
        json!({"quota": {"pods": 20}, "defaults": {"requests": {"cpu": "100m"}}, "isolation": "Namespace"}),
    );
    let out = Case::new(e).decide();
    let kinds: Vec<&str> = out
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Namespace(_) => Some("Namespace"),
            Effect::Quota(Some(_)) => Some("ResourceQuota"),
            Effect::Defaults(Some(_)) => Some("LimitRange"),
            Effect::Isolation(Some(_)) => Some("NetworkPolicy"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy"]);
    let bare = Case::new(env("shop-dev", json!({}))).decide();
    assert!(bare.effects.contains(&Effect::Quota(None)), "none asked: deleted where one was made");
    assert_eq!(status(&bare).namespace.as_deref(), Some("shop-dev"));
}

#[test]
fn provisioning_lasts_until_the_components_and_the_seed_are_done() {
    let case = Case::new(seeded(json!({"infrastructure": [component("db", vec![deployment("postgres")])]})));
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Provisioning));
    assert_eq!(out.transitions, [Transition::Provision]);
    assert!(!out.effects.iter().any(|e| matches!(e, Effect::Seed(_))), "the seed waits for the infrastructure");
    assert_eq!(cond(&out, condition::SEEDED), is("False", Reason::Waiting));
    assert_eq!(out.requeue, Some(Duration::from_secs(10)));
}

#[test]
fn provisioning_runs_the_seed_once_the_infrastructure_is_ready_and_is_ready_when_it_succeeded() {
    let mut case = Case::new(seeded(json!({})));
    let out = case.decide();
    let Some(Effect::Seed(seed)) = out.effects.iter().find(|e| matches!(e, Effect::Seed(_))) else { panic!("no seed") };
    assert_eq!(seed.spec.as_ref().unwrap().backoff_limit, Some(2));
    assert_eq!(cond(&out, condition::INFRASTRUCTURE_READY), is("True", Reason::AllReady));
    assert_eq!(cond(&out, condition::SEEDED), is("False", Reason::Running));
    case.after(&out);
    case.seed_job = Some(job("Complete"));
    let out = case.decide();
    assert!(!out.effects.iter().any(|e| matches!(e, Effect::Seed(_))), "created once");
    assert_eq!(phase(&out), Some(EnvironmentPhase::Ready));
    assert_eq!(out.transitions, [Transition::BecomeReady]);
    assert!(status(&out).seeded);
    assert_eq!(cond(&out, condition::READY), is("True", Reason::Ready));
    assert_eq!(out.requeue, None, "nothing left to wait for");
    case.after(&out);
    case.seed_job = None;
    assert!(status(&case.decide()).seeded, "seeded for good");
}

#[test]
fn provisioning_a_failed_seed_fails_the_environment() {
    let mut case = Case::new(seeded(json!({})));
    case.seed_job = Some(job("Failed"));
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::SeedFailed));
    assert!(condition(&out, condition::SEEDED).message.contains("failed after 2 retries"));
}

#[test]
fn provisioning_without_seed_or_components_is_ready_at_once() {
    let out = Case::new(env("a", json!({}))).decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Ready));
    assert_eq!(cond(&out, condition::SEEDED), is("True", Reason::NoSeed));
    assert_eq!(cond(&out, condition::DEGRADED), is("False", Reason::AsExpected));
    assert_eq!(status(&out).observed_generation, Some(1));
}

#[test]
fn provisioning_a_blocked_environment_keeps_its_last_components() {
    let e = with_status(env("loop", json!({"from": "loop"})), |s| {
        s.components = vec![ComponentStatus { name: "db".into(), ready: true, ..Default::default() }];
    });
    let out = Case::new(e).decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
    assert_eq!(status(&out).components.len(), 1);
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::InvalidSpec));
    assert!(condition(&out, condition::DEGRADED).message.contains("spec.from"));
}

#[test]
fn provisioning_the_status_lists_one_live_version_per_app() {
    use crate::api::ReleasePhase::*;
    let rel = |name: &str, app: &str, phase| {
        let mut r = fixtures::release(name, json!({"app": app, "version": name}));
        r.status = Some(crate::api::ReleaseStatus { phase: Some(phase), ..Default::default() });
        r
    };
    let mut case = Case::new(env("shop", json!({})));
    case.releases = vec![rel("2", "shop", Live), rel("1", "shop", Superseded), rel("9", "cart", Progressing)];
    let apps = status(&case.decide()).apps.clone();
    assert_eq!(apps.len(), 1);
    assert_eq!((apps[0].app.as_str(), apps[0].version.as_str(), apps[0].release.as_str()), ("shop", "2", "2"));
}

#[test]
fn provisioning_the_decision_is_a_fixed_point() {
    let mut case = Case::new(env(
        "stable",
        json!({"tier": "preview", "ttl": "4h",
        "infrastructure": [component("db", vec![configmap("db-config")])]}),
    ));
    let first = case.decide();
    case.after(&first);
    case.now += 600;
    let second = case.decide();
    assert_eq!(second.status, first.status, "nothing to write");
    assert!(second.events().is_empty() && second.transitions.is_empty());
}
