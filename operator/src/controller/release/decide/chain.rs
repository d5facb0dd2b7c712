//! Steps that end at once go on within one decision, so that one status write shows a state a
//! user sees for a while, never one overwritten a moment later: a step that ends goes into the
//! next (its replicas, its traffic, its message) for as long as steps end at once, and a Release
//! that goes Live goes on as the app's stable Release. What the next step sees is what the last
//! one left (its status, the annotations it removed, the replicas it asked for, not yet settled),
//! and no measurement or load reading twice. A step that changes what serves (the versions the
//! Services select, or what a route carries) waits for the next reconcile, so the status always
//! shows a step before the traffic moves to it.

use kube::ResourceExt;

use super::{AT_ONCE, Deployed, Draft, Effect, Observation, Outcome, ScalingObserved};
use crate::{
    api::{Release, ReleasePhase, ReleaseStatus},
    controller::release::{
        queue::Role,
        traffic::{Serving, gateway::RoutePatch},
    },
};

/// Steps one decision may go through (a plan of pauses of zero seconds, say).
const MAX_STEPS_AT_ONCE: usize = 16;

/// The decision of the Release's part in its app's queue, chained (see the module documentation).
pub(super) fn run(o: &Observation<'_>, status: ReleaseStatus, total: i32) -> Outcome {
    let mut outcome = step(o, status, total);
    let mut role = o.role.clone();
    for _ in 0..MAX_STEPS_AT_ONCE {
        let phase = outcome.status.phase;
        let went_live = role == Role::Active && phase == Some(ReleasePhase::Live);
        if outcome.requeue != Some(AT_ONCE) || !(phase == Some(ReleasePhase::Progressing) || went_live) {
            break;
        }
        let rel = as_left(o.rel, &outcome);
        let siblings: Vec<Release> =
            o.siblings.iter().map(|s| if s.name_any() == rel.name_any() { rel.clone() } else { s.clone() }).collect();
        let me = rel.name_any();
        // The other workload: the stable one while rolling out, then the previous version (the
        // same one, as `reconcile` picks it).
        let other = match role {
            Role::Active => o.stable.map(|s| s.name_any()),
            _ => outcome.status.stable_release.clone(),
        };
        if went_live {
            role = Role::Stable;
        }
        let next = Observation {
            rel: &rel,
            role: role.clone(),
            siblings: &siblings,
            own: scaled_by(o.own, &outcome.effects, &me),
            other: other.map_or(o.other, |n| scaled_by(o.other, &outcome.effects, &n)),
            measurements: None,
            scaling: ScalingObserved { reading: None, ..o.scaling.clone() },
            ..o.clone()
        };
        let then = step(&next, outcome.status.clone(), total);
        let versions = |effects: &[Effect]| {
            serving_of(effects).map(Serving::versions).map(|(a, b)| (a.to_string(), b.map(str::to_string)))
        };
        // Through a route, a step that writes the route waits likewise: the status says the
        // step first, and the route carries it from the next reconcile on.
        let next_routes = routes_of(&then.effects);
        let rerouted = !next_routes.is_empty() && next_routes != routes_of(&outcome.effects);
        if versions(&then.effects) != versions(&outcome.effects) || rerouted {
            break;
        }
        let mut transitions = outcome.transitions;
        transitions.extend(then.transitions);
        outcome = Outcome {
            status: then.status,
            effects: merged(outcome.effects, then.effects),
            restored: then.restored.or(outcome.restored),
            requeue: then.requeue,
            transitions,
        };
    }
    outcome
}

/// One step: the part the Release plays in its app's queue decides.
fn step(o: &Observation<'_>, status: ReleaseStatus, total: i32) -> Outcome {
    let mut d = Draft::new(o, status, total);
    match o.role {
        Role::Done => d.done(),
        Role::Superseded => d.superseded(),
        Role::Queued(position) => d.queued(position),
        Role::Stable => d.stable(),
        Role::Active => d.active(),
    }
    d.into_outcome()
}

/// The route writes among `effects`.
fn routes_of(effects: &[Effect]) -> Vec<&RoutePatch> {
    effects.iter().filter_map(|e| if let Effect::Route(p) = e { Some(p) } else { None }).collect()
}

/// What the last `Expose` effect of `effects` serves.
fn serving_of(effects: &[Effect]) -> Option<&Serving> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Expose(x) => Some(&x.serving),
        _ => None,
    })
}

/// `rel` as a decision leaves it: its annotations removed, its finalizer added or removed.
pub(super) fn as_left(rel: &Release, outcome: &Outcome) -> Release {
    let mut rel = rel.clone();
    for effect in &outcome.effects {
        match effect {
            Effect::Consume(key) => {
                rel.annotations_mut().remove(*key);
            }
            Effect::Finalizer(add) => {
                let finalizers = super::with_serving_finalizer(rel.finalizers(), *add);
                *rel.finalizers_mut() = finalizers;
            }
            _ => {}
        }
    }
    rel.status = Some(outcome.status.clone());
    rel
}

/// A workload after `effects` scale Release `release`: a changed spec is not settled yet.
pub(super) fn scaled_by(d: Deployed, effects: &[Effect], release: &str) -> Deployed {
    let asked = effects.iter().rev().find_map(|e| match e {
        Effect::Scale { release: r, replicas } if r == release => Some(*replicas),
        _ => None,
    });
    match asked {
        Some(replicas) if replicas != d.replicas => Deployed { replicas, settled: false, ..d },
        _ => d,
    }
}

/// The effects of two steps in a row: where the second asks for the same thing (a workload's
/// replicas, the traffic, the finalizer, what is retired), its answer replaces the first's.
fn merged(mut first: Vec<Effect>, then: Vec<Effect>) -> Vec<Effect> {
    for effect in then {
        let same = |e: &Effect| match (e, &effect) {
            (Effect::Scale { release: a, .. }, Effect::Scale { release: b, .. }) => a == b,
            (Effect::Route(a), Effect::Route(b)) => a.route == b.route,
            (Effect::Expose(_), Effect::Expose(_))
            | (Effect::Finalizer(_), Effect::Finalizer(_))
            | (Effect::Retire { .. }, Effect::Retire { .. }) => true,
            (a, b) => a == b,
        };
        first.retain(|e| !same(e));
        first.push(effect);
    }
    first
}

/// The effects with every scale-down after the traffic changes: a version that stops serving
/// keeps its pods until the traffic no longer reaches them. Scaled down first, its pods could be
/// terminating while the Service still selects only them, and the app would have no endpoint
/// (seen in a revert: an empty Service for one 100 ms sample). Scale-ups keep their place: a first
/// workload is applied before its Service, so a refused one leaves nothing behind.
pub(super) fn selector_first(o: &Observation<'_>, effects: Vec<Effect>) -> Vec<Effect> {
    let me = o.rel.name_any();
    let others: Vec<&(String, Deployed)> = o.others_up.iter().collect();
    let now = |release: &str| {
        if *release == me {
            o.own.replicas
        } else if let Some((_, d)) = others.iter().find(|(n, _)| n == release) {
            d.replicas
        } else {
            o.other.replicas
        }
    };
    let (downs, mut rest): (Vec<_>, Vec<_>) =
        effects.into_iter().partition(|e| matches!(e, Effect::Scale { release, replicas } if *replicas < now(release)));
    rest.extend(downs);
    rest
}
