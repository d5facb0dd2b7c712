//! The Operate phase of a Release: the app's total replicas.
//!
//! One Release of an app owns the total at a time: the one rolling out, else the Live one. Its
//! autoscaler reads the load from Prometheus every `interval` and decides with
//! [`crate::scaling::decide`]; the rollout then splits that total by weight. The autoscaler's
//! memory travels with the app: the owner starts from the most recent `status.scaling` among the
//! app's Releases, so a new rollout, a rollback or a revert continues where the last decision was.
//!
//! A sleeping Environment wins: the app is held at zero and no load is read; on wake it returns to
//! the total held before, and the autoscaler goes on from there. Autoscaling decisions are not
//! Release activity, so they do not postpone `sleepAfter`.

use std::time::Duration;

use k8s_openapi::{api::autoscaling::v2::HorizontalPodAutoscaler, apimachinery::pkg::apis::meta::v1::Time};
use kube::{ResourceExt, runtime::events::EventType};

use super::workload;
use crate::{
    api::{Release, ReleaseStatus, Scaling, ScalingStatus, condition},
    controller::{Context, conditions, publish},
    scaling::{self, Why},
};

/// The most recent autoscaler memory among the app's Releases (`rel` itself on a tie).
pub fn memory(rel: &Release, siblings: &[Release]) -> ScalingStatus {
    let own = rel.status.as_ref().and_then(|s| s.scaling.as_ref());
    let others =
        siblings.iter().filter(|s| s.name_any() != rel.name_any()).filter_map(|s| s.status.as_ref()?.scaling.as_ref());
    let mut best = own;
    for candidate in others {
        let newer = match (best.and_then(|b| b.measured_at.as_ref()), candidate.measured_at.as_ref()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(b), Some(c)) => c.0 > b.0,
        };
        if newer {
            best = Some(candidate);
        }
    }
    best.cloned().unwrap_or_default()
}

/// The total an autoscaled app starts from before any decision: `replicas`, within the bounds.
fn seed(rel: &Release, scaling: &Scaling) -> i32 {
    rel.spec.replicas.clamp(scaling.min_replicas, scaling.max_replicas.max(scaling.min_replicas))
}

/// The app's total as last decided, without reading any load (rollbacks and reverts hand this
/// total to the Release that takes over).
pub fn held_total(rel: &Release, siblings: &[Release], sleeping: bool) -> i32 {
    if sleeping {
        return 0;
    }
    match &rel.spec.scaling {
        None => rel.spec.replicas,
        Some(s) => memory(rel, siblings).desired_replicas.unwrap_or_else(|| seed(rel, s)),
    }
}

/// The autoscaler, if any, of another controller that targets one of the app's Deployments.
pub fn conflicting<'a>(
    autoscalers: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
    namespace: &str,
    deployments: &[String],
) -> Option<String> {
    autoscalers.into_iter().find_map(|h| {
        let target = &h.spec.scale_target_ref;
        let hit = h.namespace().as_deref() == Some(namespace)
            && target.kind == "Deployment"
            && deployments.contains(&target.name);
        hit.then(|| format!("HorizontalPodAutoscaler {} targets Deployment {}", h.name_any(), target.name))
    })
}

/// The HPA (or KEDA's HPA) targeting Deployment `name` in `namespace`, if any.
pub fn autoscaler_of(ctx: &Context, namespace: &str, name: &str) -> Option<String> {
    conflicting(ctx.caches.autoscalers.state().iter().map(|h| &**h), namespace, &[name.to_string()])
}

/// Decides the app's total for this reconcile of its owner, reading the load when a reading is
/// due. Returns the total and when to look again.
pub async fn total(
    ctx: &Context,
    rel: &Release,
    siblings: &[Release],
    stable_version: &str,
    sleeping: bool,
    status: &mut ReleaseStatus,
    now: &Time,
) -> (i32, Option<Duration>) {
    let Some(spec) = &rel.spec.scaling else { return (held_total(rel, siblings, sleeping), None) };
    let memory = memory(rel, siblings);
    let current = held_total(rel, siblings, false);
    let interval: Duration = spec.interval.into();
    let ns = rel.ns().to_string();

    if sleeping {
        let mut held = memory;
        held.reason = Some(format!("the Environment is asleep: held at zero, {current} on wake"));
        status.scaling = Some(held);
        set(status, false, "EnvironmentAsleep", "the Environment is asleep; no load is read", rel, now);
        return (0, None);
    }
    let deployments: Vec<String> =
        siblings.iter().map(|s| workload::deployment_name(&s.spec.app, &s.spec.version)).collect();
    if let Some(conflict) = conflicting(ctx.caches.autoscalers.state().iter().map(|h| &**h), &ns, &deployments) {
        let why = format!("{conflict}: phaseloop leaves the replicas to it; remove it or spec.scaling");
        if !reported(status, "ConflictingAutoscaler") {
            publish(ctx, rel, EventType::Warning, "ConflictingAutoscaler", why.clone()).await;
        }
        status.scaling = Some(memory);
        set(status, false, "ConflictingAutoscaler", &why, rel, now);
        return (current, Some(interval));
    }
    let wait = scaling::next_due(spec, Some(&memory), now.0);
    let own = status.scaling.as_ref() == Some(&memory);
    if !wait.is_zero() && own {
        return (current, Some(wait));
    }

    let reading = read_load(ctx, rel, spec, stable_version).await;
    let (next, why) = scaling::decide(spec, &memory, current, reading, now.0);
    let desired = next.desired_replicas.unwrap_or(current);
    ctx.metrics.observe_scaling(
        &ns,
        &rel.spec.app,
        next.observed_value.filter(|_| next.consecutive_failures == 0),
        current,
        desired,
    );
    let message = next.reason.clone().unwrap_or_default();
    if desired != current {
        let reason = if desired > current { "ScaledUp" } else { "ScaledDown" };
        publish(ctx, rel, EventType::Normal, reason, message.clone()).await;
    }
    match &why {
        Why::MetricUnavailable(_) | Why::Fallback(_) => {
            if !reported(status, why.reason()) {
                publish(ctx, rel, EventType::Warning, why.reason(), message.clone()).await;
            }
            set(status, false, why.reason(), &message, rel, now)
        }
        _ => set(status, true, "ValidMetric", "the load is read and the autoscaler owns the replicas", rel, now),
    }
    let limited = conditions::Desired {
        type_: condition::SCALING_LIMITED,
        status: why.limited(),
        reason: if why.limited() { why.reason() } else { "DesiredWithinRange" },
        message: message.clone(),
    };
    conditions::upsert(&mut status.conditions, limited, rel.metadata.generation, now);
    status.scaling = Some(next);
    (desired, Some(interval))
}

async fn read_load(ctx: &Context, rel: &Release, spec: &Scaling, stable_version: &str) -> scaling::Reading {
    let Some(prometheus) = &ctx.prometheus else {
        return Err("no Prometheus is configured (--prometheus-url)".into());
    };
    let ns = rel.ns().to_string();
    let vars = crate::promql::Vars { app: &rel.spec.app, version: &rel.spec.version, namespace: &ns, stable_version };
    let query = crate::promql::render(&spec.metric.query, &vars).map_err(|e| e.to_string())?;
    let result = prometheus.query_scalar(&query).await;
    ctx.metrics.observe_query("scaling", &result);
    result.map_err(|e| e.to_string())
}

/// Whether `ScalingActive` already says False for `reason` (its Event was published then).
fn reported(status: &ReleaseStatus, reason: &str) -> bool {
    conditions::find(&status.conditions, condition::SCALING_ACTIVE)
        .is_some_and(|c| c.status == "False" && c.reason == reason)
}

fn set(status: &mut ReleaseStatus, ok: bool, reason: &'static str, message: &str, rel: &Release, now: &Time) {
    let desired =
        conditions::Desired { type_: condition::SCALING_ACTIVE, status: ok, reason, message: message.to_string() };
    conditions::upsert(&mut status.conditions, desired, rel.metadata.generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn release(name: &str, version: &str, scaling: Option<ScalingStatus>) -> Release {
        let mut r = crate::fixtures::release(
            name,
            json!({"app": "web", "version": version, "replicas": 2,
            "scaling": {"minReplicas": 3, "maxReplicas": 9, "metric": {"query": "q", "targetPerReplica": 10.0}}}),
        );
        r.metadata.namespace = Some("shop".into());
        r.status = Some(ReleaseStatus { scaling, ..Default::default() });
        r
    }

    fn decided(at: i64, replicas: i32) -> ScalingStatus {
        ScalingStatus {
            measured_at: Some(Time(jiff::Timestamp::from_second(1_800_000_000 + at).unwrap())),
            desired_replicas: Some(replicas),
            ..Default::default()
        }
    }

    #[test]
    fn the_owner_continues_from_the_latest_decision_among_the_apps_releases() {
        let stable = release("web-1", "1", Some(decided(0, 6)));
        let candidate = release("web-2", "2", None);
        let all = [stable.clone(), candidate.clone()];
        assert_eq!(held_total(&candidate, &all, false), 6, "a new rollout starts from the stable total");
        // After a rollback the stable Release takes the candidate's later memory.
        let rolled_back = release("web-2", "2", Some(decided(60, 8)));
        assert_eq!(held_total(&stable, &[stable.clone(), rolled_back], false), 8);
        assert_eq!(held_total(&stable, &all, true), 0, "asleep");
    }

    #[test]
    fn without_any_decision_the_total_is_replicas_within_the_bounds() {
        let r = release("web-1", "1", None);
        assert_eq!(held_total(&r, std::slice::from_ref(&r), false), 3, "replicas 2 raised to minReplicas 3");
        let mut plain = r.clone();
        plain.spec.scaling = None;
        assert_eq!(held_total(&plain, &[], false), 2);
    }

    #[test]
    fn an_hpa_targeting_one_of_the_apps_deployments_is_a_conflict() {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-1"}}
        }))
        .unwrap();
        let found = conflicting([&hpa], "shop", &["web-1".into(), "web-2".into()]);
        assert_eq!(found.as_deref(), Some("HorizontalPodAutoscaler web targets Deployment web-1"));
        assert_eq!(conflicting([&hpa], "other", &["web-1".into()]), None);
        assert_eq!(conflicting([&hpa], "shop", &["web-3".into()]), None);
    }
}
