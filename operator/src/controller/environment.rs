//! The Environment controller.
//!
//! This stage validates what admission cannot and records it in status; provisioning of the
//! namespace and its contents builds on the same shape: pure `desired_*` functions below, API I/O
//! in [`reconcile`].

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    runtime::{Controller, controller::Action, watcher},
};

use super::{Context, Error, conditions, publish_phase_change, status::apply_status};
use crate::api::{Environment, EnvironmentPhase, EnvironmentSpec, EnvironmentStatus, condition, reason};

/// Name of this controller in metrics and logs.
pub const NAME: &str = "environment";

/// Spec problems the API server cannot see: each message says what to change.
pub fn validate(name: &str, spec: &EnvironmentSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.from.as_deref() == Some(name) {
        problems.push("spec.from names this Environment itself; branch from another Environment".to_string());
    }
    if spec.promotion.as_ref().and_then(|p| p.from.as_deref()) == Some(name) {
        problems.push("spec.promotion.from names this Environment itself".to_string());
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &spec.infrastructure {
        if !seen.insert(&c.name) {
            problems.push(format!("infrastructure component {:?} is declared twice", c.name));
        }
    }
    problems
}

/// The namespace an Environment owns.
pub fn namespace_of(env: &Environment) -> String {
    env.spec.namespace.clone().unwrap_or_else(|| env.name_any())
}

/// The status the controller wants for `env` at `now`.
pub fn desired_status(env: &Environment, now: &Time) -> EnvironmentStatus {
    let mut status = env.status.clone().unwrap_or_default();
    let generation = env.metadata.generation;
    let problems = validate(&env.name_any(), &env.spec);
    status.observed_generation = generation;
    status.namespace = Some(namespace_of(env));
    status.expires_at = expires_at(env);
    status.phase = Some(if problems.is_empty() {
        status.phase.unwrap_or(EnvironmentPhase::Provisioning)
    } else {
        EnvironmentPhase::Failed
    });
    conditions::upsert(&mut status.conditions, degraded(problems), generation, now);
    status
}

fn degraded(problems: Vec<String>) -> conditions::Desired<'static> {
    if problems.is_empty() {
        conditions::Desired {
            type_: condition::DEGRADED,
            status: false,
            reason: reason::AS_EXPECTED,
            message: "spec is valid".into(),
        }
    } else {
        conditions::Desired {
            type_: condition::DEGRADED,
            status: true,
            reason: reason::INVALID_SPEC,
            message: problems.join("; "),
        }
    }
}

/// `creationTimestamp + ttl`, when the Environment has a ttl.
pub fn expires_at(env: &Environment) -> Option<Time> {
    let created = env.metadata.creation_timestamp.as_ref()?;
    let ttl: std::time::Duration = env.spec.ttl?.into();
    let ttl = jiff::SignedDuration::try_from(ttl).ok()?;
    created.0.checked_add(ttl).ok().map(Time)
}

async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Time(jiff::Timestamp::now());
    let desired = desired_status(&env, &now);
    let api: Api<Environment> = Api::all(ctx.client.clone());
    let old_phase = env.status.as_ref().and_then(|s| s.phase);
    if apply_status(&api, &*env, env.status.as_ref(), &desired).await? {
        let new_phase = desired.phase.map(EnvironmentPhase::as_str);
        let message = desired
            .conditions
            .iter()
            .find(|c| c.type_ == condition::DEGRADED)
            .map(|c| c.message.clone());
        publish_phase_change(&ctx, &*env, old_phase.map(EnvironmentPhase::as_str), new_phase, message).await;
    }
    Ok(Action::await_change())
}

/// The Environment controller, ready to run.
pub fn controller(ctx: Arc<Context>) -> Controller<Environment> {
    let api: Api<Environment> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default().page_size(ctx.config.page_size))
}

pub(super) async fn run(controller: Controller<Environment>, ctx: Arc<Context>) {
    super::drive(NAME, controller, reconcile, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Promotion, Tier};
    use kube::api::ObjectMeta;

    fn env(name: &str, spec: EnvironmentSpec) -> Environment {
        let mut e = Environment::new(name, spec);
        e.metadata = ObjectMeta {
            name: Some(name.into()),
            generation: Some(4),
            creation_timestamp: Some(Time("2026-11-26T10:00:00Z".parse().unwrap())),
            ..Default::default()
        };
        e
    }

    fn now() -> Time {
        Time("2026-11-26T10:05:00Z".parse().unwrap())
    }

    #[test]
    fn a_valid_environment_is_provisioning_with_its_namespace() {
        let s = desired_status(&env("shop-dev", EnvironmentSpec::default()), &now());
        assert_eq!(s.phase, Some(EnvironmentPhase::Provisioning));
        assert_eq!(s.namespace.as_deref(), Some("shop-dev"));
        assert_eq!(s.observed_generation, Some(4));
        assert!(!conditions::is_true(&s.conditions, condition::DEGRADED));
    }

    #[test]
    fn an_explicit_namespace_wins() {
        let spec = EnvironmentSpec {
            namespace: Some("elsewhere".into()),
            ..Default::default()
        };
        assert_eq!(
            desired_status(&env("a", spec), &now()).namespace.as_deref(),
            Some("elsewhere")
        );
    }

    #[test]
    fn expiry_is_creation_plus_ttl() {
        let spec = EnvironmentSpec {
            tier: Tier::Preview,
            ttl: Some("4h".parse().unwrap()),
            ..Default::default()
        };
        let s = desired_status(&env("pr-1", spec), &now());
        assert_eq!(s.expires_at, Some(Time("2026-11-26T14:00:00Z".parse().unwrap())));
    }

    #[test]
    fn self_references_are_reported_not_acted_on() {
        let spec = EnvironmentSpec {
            from: Some("loop".into()),
            promotion: Some(Promotion {
                from: Some("loop".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = desired_status(&env("loop", spec), &now());
        assert_eq!(s.phase, Some(EnvironmentPhase::Failed));
        let c = conditions::find(&s.conditions, condition::DEGRADED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", reason::INVALID_SPEC));
        assert!(
            c.message.contains("spec.from") && c.message.contains("promotion.from"),
            "{}",
            c.message
        );
    }

    #[test]
    fn desired_status_is_a_fixed_point() {
        let mut e = env("stable", EnvironmentSpec::default());
        let first = desired_status(&e, &now());
        e.status = Some(first.clone());
        let later = Time("2026-11-26T11:00:00Z".parse().unwrap());
        assert_eq!(
            desired_status(&e, &later),
            first,
            "a second reconcile must not change status"
        );
    }
}
