//! The app's total replicas, decided inside the decision.
//!
//! One Release of an app owns the total at a time: the one rolling out, else the Live one. Its
//! autoscaler decides from the load read this reconcile (`reconcile/observe.rs` reads it when
//! [`reading_due`]) with [`crate::scaling::decide`]; the rollout then splits that total by weight.
//! The autoscaler's memory travels with the app: the owner starts from the most recent
//! `status.scaling` among the app's Releases, so a new rollout, a rollback or a revert continues
//! where the last decision was. A sleeping Environment wins: the app is held at zero and no load
//! is read; on wake it returns to the total held before. Another autoscaler targeting one of the
//! app's workloads wins too: phaseloop stops writing replicas and says so.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Effect, Observation};
use crate::{
    api::{Reason, Release, ReleasePhase, ReleaseStatus, Scaling, ScalingStatus, condition},
    controller::{conditions, release::queue::Role},
    scaling::{self, Why},
};

/// What the scaling part of a decision adds: effects (Events, the metrics) and when to look again.
#[derive(Default)]
pub(super) struct Scaled {
    pub effects: Vec<Effect>,
    pub requeue: Option<Duration>,
}

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

/// The app's total as last decided, without reading any load.
pub fn held_total(rel: &Release, siblings: &[Release], sleeping: bool) -> i32 {
    if sleeping {
        return 0;
    }
    match &rel.spec.scaling {
        None => rel.spec.replicas,
        Some(s) => memory(rel, siblings).desired_replicas.unwrap_or_else(|| seed(rel, s)),
    }
}

/// Whether `rel` decides the app's total: it is rolling out, or it is Live and nothing else is.
pub fn owns_total(rel: &Release, role: &Role, siblings: &[Release]) -> bool {
    let rolling = |p: Option<ReleasePhase>| matches!(p, Some(ReleasePhase::Progressing | ReleasePhase::Paused));
    let phase = rel.status.as_ref().and_then(|s| s.phase);
    let sibling_rolling =
        siblings.iter().any(|s| s.name_any() != rel.name_any() && rolling(s.status.as_ref().and_then(|s| s.phase)));
    (*role == Role::Active && rolling(phase)) || (*role == Role::Stable && !sibling_rolling)
}

/// Whether the owner of the total should read the load now: `interval` after the last reading, or
/// at once when it takes over the total from another Release's memory.
pub fn reading_due(rel: &Release, siblings: &[Release], now: &Time) -> bool {
    let Some(spec) = &rel.spec.scaling else { return false };
    let memory = memory(rel, siblings);
    let own = rel.status.as_ref().and_then(|s| s.scaling.as_ref()) == Some(&memory);
    !own || scaling::next_due(spec, Some(&memory), now.0).is_zero()
}

/// The app's total for this decision, the autoscaler's record in `status`, and its effects.
pub(super) fn decide(o: &Observation<'_>, status: &mut ReleaseStatus) -> (i32, Scaled) {
    let (rel, siblings, sleeping) = (o.rel, o.siblings, o.scaling.sleeping);
    let mut out = Scaled::default();
    if !owns_total(rel, &o.role, siblings) {
        return (held_total(rel, siblings, sleeping), out);
    }
    let Some(spec) = &rel.spec.scaling else { return (held_total(rel, siblings, sleeping), out) };
    let memory = memory(rel, siblings);
    let current = held_total(rel, siblings, false);
    let interval: Duration = spec.interval.into();
    // Sets ScalingActive; whether it changed (a problem newly reported gets its Event).
    let set = |status: &mut ReleaseStatus, ok: bool, reason: Reason, message: &str| {
        let desired = conditions::Desired {
            type_: condition::SCALING_ACTIVE,
            status: ok,
            reason: reason.as_str(),
            message: message.to_string(),
        };
        let changed = conditions::differs(&status.conditions, &desired);
        conditions::upsert(&mut status.conditions, desired, rel.metadata.generation, &o.now);
        changed
    };
    if sleeping {
        let mut held = memory;
        held.reason = Some(format!("the Environment is asleep: held at zero, {current} on wake"));
        status.scaling = Some(held);
        let msg = "the Environment is asleep; no load is read";
        set(status, false, Reason::EnvironmentAsleep, msg);
        return (0, out);
    }
    if let Some(conflict) = &o.scaling.conflict {
        let why = format!("{conflict}: phaseloop leaves the replicas to it; remove it or spec.scaling");
        status.scaling = Some(memory);
        if set(status, false, Reason::ConflictingAutoscaler, &why) {
            out.effects.push(Effect::Event { warning: true, reason: Reason::ConflictingAutoscaler, note: why });
        }
        out.requeue = Some(interval);
        return (current, out);
    }
    let wait = scaling::next_due(spec, Some(&memory), o.now.0);
    let reading = match &o.scaling.reading {
        Some(reading) => reading.clone(),
        None => {
            // No reading was taken (not due): the last decision holds until the next one.
            out.requeue = Some(if wait.is_zero() { interval } else { wait });
            return (current, out);
        }
    };
    let (next, why) = scaling::decide(spec, &memory, current, reading, o.now.0);
    let desired = next.desired_replicas.unwrap_or(current);
    let observed = next.observed_value.filter(|_| next.consecutive_failures == 0);
    out.effects.push(Effect::Scaled { observed, from: current, to: desired });
    let message = next.reason.clone().unwrap_or_default();
    if desired != current {
        let reason = if desired > current { Reason::ScaledUp } else { Reason::ScaledDown };
        out.effects.push(Effect::Event { warning: false, reason, note: message.clone() });
    }
    match &why {
        Why::MetricUnavailable(_) | Why::Fallback(_) => {
            if set(status, false, why.reason(), &message) {
                out.effects.push(Effect::Event { warning: true, reason: why.reason(), note: message.clone() });
            }
        }
        _ => {
            set(status, true, Reason::ValidMetric, "the load is read and the autoscaler owns the replicas");
        }
    }
    let limited = conditions::Desired {
        type_: condition::SCALING_LIMITED,
        status: why.limited(),
        reason: if why.limited() { why.reason() } else { Reason::DesiredWithinRange }.as_str(),
        message,
    };
    conditions::upsert(&mut status.conditions, limited, rel.metadata.generation, &o.now);
    status.scaling = Some(next);
    out.requeue = Some(interval);
    (desired, out)
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
    fn a_reading_is_due_at_the_interval_or_when_taking_over_anothers_memory() {
        let now = Time(jiff::Timestamp::from_second(1_800_000_010).unwrap());
        let own = release("web-1", "1", Some(decided(0, 6)));
        assert!(!reading_due(&own, std::slice::from_ref(&own), &now), "10s after the last, interval 15s");
        let later = Time(jiff::Timestamp::from_second(1_800_000_020).unwrap());
        assert!(reading_due(&own, std::slice::from_ref(&own), &later));
        let newcomer = release("web-2", "2", None);
        assert!(reading_due(&newcomer, &[own, newcomer.clone()], &now), "the memory is another Release's");
    }
}
