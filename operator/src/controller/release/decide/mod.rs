//! The Release's decision, one pure function: what a reconcile observed goes into [`decide`]; the
//! next status, the effects that carry it out and the transitions made come out. Nothing here
//! reads a cache, the API or Prometheus (`reconcile/` does, before; and acts, after).
//!
//! The decision, in order:
//! 1. validation: an invalid spec acts on nothing (`Degraded`/`InvalidSpec`);
//! 2. a name clash: a generated name held by something else acts on nothing (`NameClash`);
//! 3. the app's total ([`scaling`]): the owner of the total (the Release rolling out, else the
//!    Live one) decides it from the load; everyone else holds the last decision;
//! 4. the Release's part in its app's queue (`queue::Role`) picks the file that decides:
//!    [`waiting`] (tests, the gate), [`rollout`] and [`rollback`] (forward, paused, back),
//!    [`live`] (the revert window, reverts), [`finished`] (queued, superseded, done);
//!    [`requests`] handles the one-shot annotations in every phase;
//! 5. [`chain`]: a step that ends goes on into the next within the same decision;
//! 6. [`serving`]: the serving finalizer of whatever serves; [`conditions`]: the standard ones.
//!
//! The traffic rules every rollout keeps (and the e2e tests watch from the Service's side):
//! - the app's Service never loses its last Ready endpoint: a version gives up pods only as the
//!   other's become Ready (rolling handovers, rollbacks, reverts alike);
//! - only the stable version and the candidate serve: a new rollout first takes the version before
//!   last out and closes the old revert window;
//! - the candidate gets production traffic only by its step, never during a blue-green preview;
//! - the last step of every plan ([`Step::Switch`]) gives the candidate all traffic and keeps the
//!   previous version warm (Ready, not serving) for the revert window; the Release goes Live once
//!   it is;
//! - `status.weight` is what serves, `status.stepWeight` what the step asks for.

mod chain;
mod conditions;
mod finished;
mod live;
mod observation;
mod outcome;
mod requests;
mod rollback;
mod rollout;
mod routing;
mod scaling;
mod serving;
mod waiting;

#[cfg(test)]
mod tests;

use std::time::Duration;

use kube::ResourceExt;

pub use observation::*;
pub use outcome::*;
pub use routing::TRAFFIC_ROUTED;
pub use scaling::{held_total, memory, owns_total, reading_due};
pub use serving::{history, serves, window_open, with_serving_finalizer};

pub use super::steps::Step;
use super::{enter, queue::Role, traffic::Exposure};
use crate::{
    api::{Reason, ReleasePhase, ReleaseStatus, scaled},
    controller::conditions as cond,
};

/// Finished Releases per app whose workloads are kept (scaled to zero) for a quick re-release.
pub const HISTORY_LIMIT: usize = 3;
/// How often waits that no watch event ends are looked at again (tests running, a test
/// Environment provisioning).
const POLL: Duration = Duration::from_secs(5);
/// Right after a step changes: look again at once (the next step starts now).
const AT_ONCE: Duration = Duration::from_millis(100);
/// A rollout waiting for pods looks again at least this often (workload events usually come first).
const ROLLOUT_RECHECK: Duration = Duration::from_secs(60);
/// A name held by something else is looked at again this often (its going away sends no event
/// phaseloop watches).
const CLASH_RECHECK: Duration = Duration::from_secs(60);

/// The decision of one reconcile (see the module documentation).
pub fn decide(o: &Observation<'_>) -> Outcome {
    if o.rel.metadata.deletion_timestamp.is_some() && o.namespace_terminating {
        // Its whole namespace is going: nothing can be created there any more and everything in it
        // goes anyway; holding on (or writing anything first) would only keep the namespace stuck.
        let holds = o.rel.finalizers().iter().any(|f| f == super::SERVING_FINALIZER);
        let effects = if holds { vec![Effect::Finalizer(false)] } else { vec![] };
        return Outcome { effects, ..Outcome::stay(o.stored()) };
    }
    let mut status = o.stored();
    status.observed_generation = o.rel.metadata.generation;
    if status.phase.is_none() {
        enter(&mut status, ReleasePhase::Pending, &o.now);
    }
    requests::seen_removed(&mut status, o.rel);
    if status.created_revision.is_none() {
        status.created_revision = o.rel.metadata.resource_version.clone();
    }
    let problems = super::validate(&o.rel.spec, o.tier);
    if !problems.is_empty() {
        let message = problems.join("; ");
        status.message = Some(format!("invalid spec, nothing was changed: {message}"));
        return finish(o, Outcome::stay(status), Some((Reason::InvalidSpec, message)));
    }
    let acts = matches!(o.role, Role::Active | Role::Stable);
    if let Some(clash) = o.clash.as_ref().filter(|_| acts) {
        status.message = Some(format!("nothing was changed: {clash}"));
        let mut outcome = Outcome::stay(status);
        outcome.requeue = Some(CLASH_RECHECK);
        return finish(o, outcome, Some((Reason::NameClash, clash.clone())));
    }
    let (total, scaled) = scaling::decide(o, &mut status);
    let mut outcome = chain::run(o, status, total);
    outcome.effects.splice(0..0, scaled.effects);
    outcome.requeue = sooner(outcome.requeue, scaled.requeue);
    finish(o, outcome, None)
}

/// The decision's end for every path: the serving finalizer, `Degraded` (`blocked` names what
/// stopped the Release from acting), `Ready` and `Available`, and scale-downs last.
fn finish(o: &Observation<'_>, mut outcome: Outcome, blocked: Option<(Reason, String)>) -> Outcome {
    let mut d = Draft::new(o, outcome.status.clone(), 0);
    d.effects = std::mem::take(&mut outcome.effects);
    d.requests_left_over();
    serving::finalizer(&mut d);
    conditions::project(&mut d, blocked);
    outcome.status = d.status;
    outcome.effects = chain::selector_first(o, d.effects);
    outcome.transitions.extend(d.transitions);
    outcome.requeue = sooner(outcome.requeue, d.requeue);
    outcome
}

/// The earlier of two wake-ups.
pub fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Outcome {
    /// `status` and nothing else.
    fn stay(status: ReleaseStatus) -> Self {
        Outcome { status, effects: vec![], restored: None, requeue: None, transitions: vec![] }
    }
}

/// One step of a decision in the making: the status so far, the effects asked for, and the
/// transitions made. Phases change only through [`Draft::go`].
struct Draft<'a> {
    o: &'a Observation<'a>,
    status: ReleaseStatus,
    /// The app's total replicas for this decision (see [`scaling`]).
    total: i32,
    effects: Vec<Effect>,
    restored: Option<(String, ReleaseStatus)>,
    requeue: Option<Duration>,
    transitions: Vec<Transition>,
}

impl<'a> Draft<'a> {
    fn new(o: &'a Observation<'a>, status: ReleaseStatus, total: i32) -> Self {
        Draft { o, status, total, effects: vec![], restored: None, requeue: None, transitions: vec![] }
    }

    fn into_outcome(self) -> Outcome {
        Outcome {
            status: self.status,
            effects: self.effects,
            restored: self.restored,
            requeue: self.requeue,
            transitions: self.transitions,
        }
    }

    fn name(&self) -> String {
        self.o.rel.name_any()
    }

    fn phase(&self) -> ReleasePhase {
        self.status.phase.unwrap_or(ReleasePhase::Pending)
    }

    /// Makes `t`: the one place a phase is entered.
    fn go(&mut self, t: Transition) {
        let from = self.phase();
        #[cfg(test)]
        assert!(from == t.to() || t.from().contains(&from), "{t:?} from {from:?} is not in the transition table");
        if from != t.to() {
            self.transitions.push(t);
        }
        enter(&mut self.status, t.to(), &self.o.now);
    }

    fn set(&mut self, type_: &'static str, ok: bool, reason: Reason, message: &str) {
        let desired = cond::Desired { type_, status: ok, reason: reason.as_str(), message: message.to_string() };
        cond::upsert(&mut self.status.conditions, desired, self.o.rel.metadata.generation, &self.o.now);
    }

    fn event(&mut self, warning: bool, reason: Reason, note: String) {
        self.effects.push(Effect::Event { warning, reason, note });
    }

    fn requeue(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn scale(&mut self, release: &str, replicas: i32) {
        self.effects.push(Effect::Scale { release: release.to_string(), replicas: replicas.max(0) });
    }

    fn expose(&mut self, exposure: Exposure) {
        self.effects.push(Effect::Expose(exposure));
    }

    /// The resolved `maxSurge` (rounded up) and `maxUnavailable` (rounded down) of the app's total.
    fn limits(&self) -> (i32, i32) {
        let rolling = self.o.rel.spec.strategy.rolling.clone().unwrap_or_default();
        (scaled(&rolling.max_surge, self.total, true), scaled(&rolling.max_unavailable, self.total, false))
    }
}

/// `at + by`, saturating: a window of 999999999h (which the schema admits) must not overflow.
pub fn later(at: jiff::Timestamp, by: Duration) -> jiff::Timestamp {
    let by = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
    at.checked_add(by).unwrap_or(jiff::Timestamp::MAX)
}

/// Ready pods the previous version keeps from the switch on: none without a revert window (there
/// is nothing to revert within), else `warmReplicas` of the app's total.
fn warm_replicas(strategy: &crate::api::Strategy, total: i32) -> i32 {
    let window: Duration = strategy.revert_window.into();
    if window.is_zero() { 0 } else { scaled(&strategy.warm_replicas, total, true) }
}
