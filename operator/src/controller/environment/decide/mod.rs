//! The Environment's decision, one pure function: what a reconcile observed goes into [`decide`];
//! the next status, the effects that carry it out and the transitions made come out. Nothing here
//! reads a cache or the API server (`reconcile/` does, before; and acts, after).
//!
//! The decision, in order:
//! 1. the finalizer goes on before anything else; once the Environment is deleted, [`deletion`]
//!    decides (the namespace first, never a foreign one, a production one with its annotation);
//! 2. validation: an invalid spec acts on nothing (`Degraded`/`InvalidSpec`), not even on the ttl,
//!    and a production Environment never has a ttl or `sleepAfter`, even one stored before the
//!    CRD's rules refused them;
//! 3. [`expiry`]: a reached ttl deletes the Environment, but only while this operator's clock
//!    agrees with the API server's;
//! 4. [`branch`]: what a branch inherits through its whole chain of parents (a cycle, a chain
//!    deeper than [`MAX_DEPTH`] or a missing parent blocks it);
//! 5. [`namespace`]: a namespace that is not this Environment's blocks it (`NamespaceConflict`);
//!    else the namespace, its quota, defaults and isolation;
//! 6. [`sleep`], decided before the infrastructure, which is applied at zero replicas while asleep;
//! 7. [`components`] (the infrastructure), then the [`seed`] once they are ready;
//! 8. the parent's Live versions deployed into a branch, [`promotion`] requests opened for the
//!    versions Live upstream, `status.apps`;
//! 9. [`status`]: the phase and the conditions; when to look again.
//!
//! One thing is learnt only by acting: that the API server refuses an object of a component (a
//! 4xx on its apply). `reconcile/act.rs` hands it to [`refused_at_apply`], which refuses the
//! component as the decision would have and projects the status again before it is written.

mod branch;
mod components;
mod deletion;
mod expiry;
mod namespace;
mod observation;
mod outcome;
pub mod promotion;
mod seed;
pub mod sleep;
mod status;

#[cfg(test)]
mod tests;

use std::time::Duration;

use kube::ResourceExt;

pub use branch::{Chain, End, Inheritance, MAX_DEPTH, effective, inheritable, walk};
pub use expiry::{Expiry, Extension, MAX_CLOCK_SKEW, expires_at, extension, hms};
pub use observation::*;
pub use outcome::*;
pub use status::{Progress, SeedState};

use crate::{
    api::{
        Environment, EnvironmentPhase, EnvironmentSpec, EnvironmentStatus, LiveApp, Reason, Release, ReleasePhase,
        Tier, annotation,
    },
    controller::{
        conditions as cond,
        environment::{FINALIZER, namespace_of, validate},
    },
};

/// Safety-net requeue while something is still coming up (child watches usually come first).
const PROVISIONING_REQUEUE: Duration = Duration::from_secs(10);
/// A namespace held by someone else is looked at again this often (its going away sends no event
/// this controller watches).
const FOREIGN_RECHECK: Duration = Duration::from_secs(30);
/// A ttl deletion held because the clocks disagree is looked at again this often (the clocks
/// coming back together sends no event).
const CLOCK_RECHECK: Duration = Duration::from_secs(30);
/// A chain of parents too deep is looked at again this often (a change far above it wakes
/// nothing here).
const CHAIN_RECHECK: Duration = Duration::from_secs(60);

/// The decision of one reconcile (see the module documentation).
pub fn decide(o: &Observation<'_>) -> Outcome {
    let env = o.env;
    let holds = env.finalizers().iter().any(|f| f == FINALIZER);
    match (env.metadata.deletion_timestamp.is_some(), holds) {
        (false, false) => return Outcome::only(vec![Effect::AddFinalizer]),
        (true, false) => return Outcome::only(vec![]),
        (true, true) => return deletion::decide(o),
        (false, true) => {}
    }
    let mut d = Draft::new(o);
    let ns = namespace_of(env);
    d.status.observed_generation = env.metadata.generation;
    d.status.namespace = Some(ns.clone());
    d.status.expires_at = expires_at(env, d.status.expires_at.as_ref());
    let expiry = expiry::judge(d.status.expires_at.as_ref().map(|t| t.0), o.now.0, o.skew);
    let problems = problems(o);
    if !problems.is_empty() {
        return d.blocked(Reason::InvalidSpec, problems.join("; "), expiry, None);
    }
    if let Expiry::Due(_) = expiry {
        return d.expire(expiry);
    }
    let spec = match branch::inheritance(env, d.status.branch.as_ref(), &o.chain) {
        Inheritance::Root => {
            d.status.branch = None;
            env.spec.clone()
        }
        Inheritance::From(inherited, status) => {
            d.status.branch = Some(*status);
            effective(&env.spec, Some(&inherited))
        }
        Inheritance::Blocked(reason, message) => {
            let again = match reason {
                Reason::ParentNotFound => Some(PROVISIONING_REQUEUE),
                Reason::BranchTooDeep => Some(CHAIN_RECHECK),
                _ => None,
            };
            return d.blocked(reason, message, expiry, again);
        }
    };
    if o.namespace == NamespaceSeen::Foreign {
        let message = format!("namespace {ns} exists and is not managed by this Environment; it is left untouched");
        return d.blocked(Reason::NamespaceConflict, message, expiry, Some(FOREIGN_RECHECK));
    }
    namespace::provision(&mut d, &spec, &ns);

    let wake = sleep::wake_requested(env);
    let asleep = sleep::decide(
        env.spec.sleep_after.map(Into::into),
        sleep::last_activity(env, o.releases, &d.status, o.now.0),
        d.status.slept_at.as_ref().map(|t| t.0),
        wake,
        o.now.0,
    );
    let sleeping = asleep == sleep::Decision::Sleep;
    let infra = components::decide(&mut d, &spec, &ns, sleeping);
    let infra_ready = infra.refused.is_empty() && infra.statuses.iter().all(|c| c.ready);
    let seed = seed::decide(&mut d, &spec, &ns, infra_ready);
    d.sleep(asleep);
    d.effects.extend(branch::releases_to_deploy(o).into_iter().map(|r| Effect::Branch(Box::new(r))));
    promotion::decide(&mut d);
    d.status.apps = live_apps(o.releases);
    let unreadable_extension = match extension(env) {
        Extension::Unreadable(value) => Some(value),
        _ => None,
    };
    let progress = Progress {
        blocked: None,
        components: infra.statuses,
        refused: infra.refused,
        seed,
        sleeping,
        expiry,
        unreadable_extension,
    };
    status::project(&mut d, &progress);
    if wake {
        // Consumed only after the status saying "awake" is written: a reconcile that sees the
        // annotation gone therefore also sees the wake, and cannot put the Environment back to sleep.
        d.then.push(Effect::Consume(annotation::WAKE));
    }
    d.look_again_for(expiry, true);
    if let sleep::Decision::Awake { sleep_at: Some(at) } = asleep {
        d.requeue(until(o.now.0, at));
    }
    if !matches!(d.phase(), EnvironmentPhase::Ready | EnvironmentPhase::Sleeping) {
        d.requeue(PROVISIONING_REQUEUE);
    }
    d.into_outcome(Some(progress))
}

/// The spec `env` provisions, its own over what it inherits through `chain`; `None` when
/// inheriting is blocked.
pub fn spec_to_provision(env: &Environment, chain: &Chain) -> Option<EnvironmentSpec> {
    match branch::inheritance(env, env.status.as_ref().and_then(|s| s.branch.as_ref()), chain) {
        Inheritance::Root => Some(env.spec.clone()),
        Inheritance::From(inherited, _) => Some(effective(&env.spec, Some(&inherited))),
        Inheritance::Blocked(..) => None,
    }
}

/// Spec problems the API server cannot see (or that were stored before it could): each says what
/// to change.
fn problems(o: &Observation<'_>) -> Vec<String> {
    let env = o.env;
    let mut problems = validate(&env.name_any(), &env.spec);
    problems.extend(super::pod_security_problem(env.spec.pod_security, o.config.max_pod_security));
    if env.spec.tier == Tier::Production {
        // The CRD refuses both; a value stored before it did must not delete or sleep production.
        if env.spec.ttl.is_some() {
            problems.push("spec.ttl is not allowed on a production Environment: remove it".into());
        }
        if env.spec.sleep_after.is_some() {
            problems.push("spec.sleepAfter is not allowed on a production Environment: remove it".into());
        }
    }
    problems
}

/// A refusal learnt only by acting: the API server refused an object of `component` (`why`). The
/// component is refused as the decision would have refused it: the effects left for it (and the
/// seed's, which waits for the whole infrastructure) are dropped from `outcome.effects` (those not
/// carried out yet), its status keeps what was applied before, the phase and conditions are
/// projected again, and a `ComponentRefused` Event is added when the refusal is new.
pub fn refused_at_apply(o: &Observation<'_>, outcome: &mut Outcome, component: &str, why: String) {
    let Some(mut progress) = outcome.progress.take() else { return };
    let stored = o.env.status.clone().unwrap_or_default();
    let before = stored.components.iter().find(|c| c.name == component);
    let previous = before.map(|c| c.objects.clone()).unwrap_or_default();
    outcome.effects.retain(|e| match e {
        Effect::Apply { component: c, .. } | Effect::Prune { component: Some(c), .. } => c != component,
        Effect::Seed(_) => false,
        _ => true,
    });
    if progress.seed == SeedState::Running && o.seed_job.is_none() {
        progress.seed = SeedState::Waiting;
    }
    let refused = components::refused(component, &why, previous);
    match progress.components.iter_mut().find(|c| c.name == component) {
        Some(c) => *c = refused,
        None => progress.components.push(refused),
    }
    progress.refused.push((component.to_string(), why.clone()));
    if before.and_then(|c| c.message.as_ref()) != Some(&why) {
        let note = format!("component {component}: refused: {why}");
        outcome.effects.push(Effect::Event { warning: true, reason: Reason::ComponentRefused, note });
    }
    // Projected again from the stored phase and conditions, over the fields decided.
    let mut d = Draft::new(o);
    let decided = outcome.status.clone().unwrap_or_default();
    d.status = EnvironmentStatus { phase: stored.phase, conditions: stored.conditions, ..decided };
    status::project(&mut d, &progress);
    outcome.status = Some(d.status);
    outcome.transitions = d.transitions;
    outcome.requeue = sooner(outcome.requeue, Some(PROVISIONING_REQUEUE));
    outcome.progress = Some(progress);
}

/// The app versions Live among `releases` (one per app), for `status.apps`.
pub fn live_apps(releases: &[Release]) -> Vec<LiveApp> {
    let mut apps: Vec<LiveApp> = releases
        .iter()
        .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(ReleasePhase::Live))
        .map(|r| LiveApp { app: r.spec.app.clone(), version: r.spec.version.clone(), release: r.name_any() })
        .collect();
    apps.sort_by(|a, b| a.app.cmp(&b.app));
    apps.dedup_by(|a, b| a.app == b.app);
    apps
}

/// The earlier of two wake-ups.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// From `now` until `at`, and one second more so that the requeue lands after it, not just before.
fn until(now: jiff::Timestamp, at: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)
}

/// One decision in the making: the status so far, the effects asked for, the transitions made.
/// Phases change only through [`Draft::go`].
struct Draft<'a> {
    o: &'a Observation<'a>,
    status: EnvironmentStatus,
    effects: Vec<Effect>,
    then: Vec<Effect>,
    requeue: Option<Duration>,
    waiting: Option<String>,
    transitions: Vec<Transition>,
}

impl<'a> Draft<'a> {
    fn new(o: &'a Observation<'a>) -> Self {
        Draft {
            o,
            status: o.env.status.clone().unwrap_or_default(),
            effects: vec![],
            then: vec![],
            requeue: None,
            waiting: None,
            transitions: vec![],
        }
    }

    fn into_outcome(self, progress: Option<Progress>) -> Outcome {
        Outcome {
            status: Some(self.status),
            effects: self.effects,
            then: self.then,
            requeue: self.requeue,
            waiting: self.waiting,
            transitions: self.transitions,
            progress,
        }
    }

    fn phase(&self) -> EnvironmentPhase {
        self.status.phase.unwrap_or(EnvironmentPhase::Provisioning)
    }

    /// Makes `t`: the one place a phase is entered.
    fn go(&mut self, t: Transition) {
        #[cfg(test)]
        {
            let from = self.phase();
            assert!(from == t.to() || t.from().contains(&from), "{t:?} from {from:?} is not in the transition table");
        }
        if self.status.phase != Some(t.to()) {
            self.transitions.push(t);
            self.status.phase = Some(t.to());
        }
    }

    fn set(&mut self, type_: &'static str, ok: bool, reason: Reason, message: String) {
        let desired = cond::Desired { type_, status: ok, reason: reason.as_str(), message };
        cond::upsert(&mut self.status.conditions, desired, self.o.env.metadata.generation, &self.o.now);
    }

    /// Whether setting the condition would change its status or reason (a transition worth an
    /// Event).
    fn differs(&self, type_: &'static str, ok: bool, reason: Reason) -> bool {
        let desired = cond::Desired { type_, status: ok, reason: reason.as_str(), message: String::new() };
        cond::differs(&self.status.conditions, &desired)
    }

    fn event(&mut self, warning: bool, reason: Reason, note: String) {
        self.effects.push(Effect::Event { warning, reason, note });
    }

    fn requeue(&mut self, after: Duration) {
        self.requeue = sooner(self.requeue, Some(after));
    }

    /// Provisioning stops before it begins, for `reason`: nothing is changed but the status.
    fn blocked(mut self, reason: Reason, message: String, expiry: Expiry, again: Option<Duration>) -> Outcome {
        let progress = Progress::blocked(reason, message, expiry);
        status::project(&mut self, &progress);
        if let Some(after) = again {
            self.requeue(after);
        }
        self.look_again_for(expiry, reason != Reason::InvalidSpec);
        self.into_outcome(Some(progress))
    }

    /// A reached ttl: the status says `Expiring`, then the Environment is deleted.
    fn expire(mut self, expiry: Expiry) -> Outcome {
        let count = self.phase() != EnvironmentPhase::Expiring;
        self.go(Transition::Expire);
        status::expiring(&mut self, expiry, false, None);
        self.then.push(Effect::Expire { tier: self.o.env.spec.tier, count });
        self.into_outcome(None)
    }

    /// Timed wake-ups for the ttl: at the expiry, or soon again while it is held.
    fn look_again_for(&mut self, expiry: Expiry, acted_on: bool) {
        match expiry {
            Expiry::At(at) if acted_on => self.requeue(until(self.o.now.0, at)),
            Expiry::Held { .. } if acted_on => self.requeue(CLOCK_RECHECK),
            _ => {}
        }
    }

    /// Records the sleep decision in status. The app workloads follow from there: their replicas
    /// are the Release controller's alone (a Release of a sleeping Environment holds its app at
    /// zero, and at its last total again on wake), so no two writers fight over `spec.replicas`.
    /// Infrastructure is applied at zero by [`components`].
    fn sleep(&mut self, decision: sleep::Decision) {
        let now = self.o.now.clone();
        match decision {
            sleep::Decision::Sleep if self.status.slept_at.is_none() => {
                self.status.slept_at = Some(now);
                let note = "no Release activity for sleepAfter: app workloads and infrastructure held at zero";
                self.event(false, Reason::Slept, note.into());
            }
            sleep::Decision::Wake => {
                self.status.slept_at = None;
                self.status.last_activity = Some(now);
                self.event(false, Reason::Woken, "workloads return to their replicas before the sleep".into());
            }
            sleep::Decision::Sleep | sleep::Decision::Awake { .. } => {}
        }
    }
}
