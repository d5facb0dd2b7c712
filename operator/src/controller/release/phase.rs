//! The Release phase machine as one pure function: what a reconcile observed goes into
//! [`decide`]; the next status and the effects that carry it out come out. `reconcile.rs` gathers
//! the [`Observation`] and performs the [`Effect`]s, and nothing here reads a cache or the API.
//!
//! The traffic rules every rollout keeps (and the e2e tests watch from the Service's side):
//! - the app's Service never loses its last Ready endpoint: a version gives up pods only as the
//!   other's become Ready (rolling handovers, rollbacks, cold reverts alike);
//! - the candidate gets production traffic only by its step: through the pod ratio while both
//!   versions are selected, never during a blue-green preview;
//! - the last step of every plan ([`Step::Switch`]) selects the candidate alone and keeps the
//!   previous version warm (Ready, out of the Service) for the revert window; the Release goes Live
//!   once it is;
//! - `status.weight` is what serves: the candidate's share of the Ready pods the Service selects.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{
    ABORT, APPROVED_BY, OVERRIDE, PROMOTE, REVERT, SERVING_FINALIZER, analysis,
    approval::{self, Approval},
    enter, gate,
    handover::{self, Side},
    queue::Role,
    rollout::{self, Decision, Step, Verdict},
    split::split,
    test_jobs,
};
use crate::{
    api::{
        ApprovalRecord, OverrideRecord, Promotion, Release, ReleasePhase, ReleaseStatus, Strategy, StrategyType,
        condition, reason, scaled,
    },
    controller::conditions,
};

/// Finished Releases per app whose Deployments are kept (scaled to zero) for a quick re-release.
pub const HISTORY_LIMIT: usize = 3;
/// How often waits that no watch event ends are looked at again (tests running, a test
/// Environment provisioning).
const POLL: Duration = Duration::from_secs(5);
/// Right after a step changes: look again at once (the next step starts now).
const AT_ONCE: Duration = Duration::from_millis(100);
/// A rollout waiting for pods looks again at least this often (Deployment events usually come first).
const ROLLOUT_RECHECK: Duration = Duration::from_secs(60);

/// A Deployment as observed, before this reconcile applies anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deployed {
    /// Replicas its spec asks for.
    pub replicas: i32,
    /// Pods available (Ready) now.
    pub available: i32,
    /// The Deployment controller has acted on its latest spec (`observedGeneration`).
    pub settled: bool,
}

impl Deployed {
    /// At least `want` pods available for the latest spec.
    pub fn ready(&self, want: i32) -> bool {
        self.settled && self.available >= want
    }

    fn side(&self) -> Side {
        Side { replicas: self.replicas, available: self.available }
    }
}

/// Where the tests of a Release run.
#[derive(Clone, Debug, PartialEq)]
pub enum TestGround {
    /// The tests cannot run, and why: `testEnvironment` is set but the namespace has no Environment
    /// to branch from, or a name the tests need is taken by something else.
    Refused(String),
    /// The ephemeral test Environment does not exist yet.
    Missing,
    Provisioning,
    /// Ready in this namespace.
    Ready(String),
}

/// What the Test phase observed.
#[derive(Clone, Debug, PartialEq)]
pub struct TestsObserved {
    pub ground: TestGround,
    /// The one-replica candidate the tests run against is Ready.
    pub candidate_ready: bool,
    /// Outcome of each test's latest attempt (`None`: no Job yet), by test name.
    pub jobs: BTreeMap<String, Option<&'static str>>,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub rel: &'a Release,
    /// The status to start from: validated (`desired_status`), with the autoscaler's decision in.
    pub status: ReleaseStatus,
    pub now: Time,
    pub role: Role,
    /// The app's Releases in the namespace, this one included.
    pub siblings: &'a [Release],
    /// The Live Release an active one replaces.
    pub stable: Option<&'a Release>,
    /// The namespace Environment's promotion rules.
    pub promotion: Option<&'a Promotion>,
    /// The app's total replicas (the autoscaler's, else `replicas`; zero while asleep).
    pub total: i32,
    /// This Release's Deployment.
    pub own: Deployed,
    /// The other version's Deployment: the stable one (active), or the previous one (Live).
    pub other: Deployed,
    /// The Test phase, when this Release still has tests to pass.
    pub tests: Option<TestsObserved>,
    /// Analysis values read this reconcile (`None` when no reading was due), by metric name.
    pub measurements: Option<Vec<(String, Option<f64>)>>,
    /// The upstream Environment's Releases, for `promotion.from` (`None`: it does not exist).
    pub upstream: Option<&'a [Release]>,
}

/// What the Service `<app>` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// One Release's pods.
    Only(String),
    /// Both versions of a rollout: traffic follows the pod ratio.
    Both { stable: String, candidate: String },
}

/// A change [`decide`] asks for; `reconcile.rs` carries it out, in order, before the status write.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The Deployment of Release `release` (this one or a sibling) at `replicas`.
    Scale {
        release: String,
        replicas: i32,
    },
    /// The Service `<app>` selecting `serving`; with `preview`, `<app>-preview` selecting this one.
    Services {
        serving: Serving,
        preview: bool,
    },
    /// Remove a one-shot annotation that has been acted upon.
    Consume(&'static str),
    Event {
        warning: bool,
        reason: &'static str,
        note: String,
    },
    /// Add (true) or remove the serving finalizer of this Release.
    Finalizer(bool),
    /// Remove these status fields whoever wrote them (a server-side apply leaves the fields of
    /// other field managers alone): what a forged status claimed.
    ClearStatus(Vec<&'static str>),
    /// After a revert window: finished Releases' Deployments to zero (`keep`) or deleted (beyond the
    /// history limit), where they exist.
    Retire {
        keep: Vec<String>,
        delete: Vec<String>,
    },
    EnsureTestEnvironment,
    DropTestEnvironment,
    /// The one-replica candidate (and `<app>-preview`) the tests run against, in `namespace`.
    TestCandidate {
        namespace: String,
        replicas: i32,
    },
    /// The Job of `attempt` of `test`, created when missing.
    RunTest {
        namespace: String,
        test: String,
        attempt: i32,
    },
}

/// What [`decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: ReleaseStatus,
    pub effects: Vec<Effect>,
    /// Another Release's status, written after this one's (a revert restores the previous version
    /// only after this one is written `Reverted`, so no reconcile sees two Live Releases).
    pub restored: Option<(String, ReleaseStatus)>,
    /// When to look again (`None`: on the next change).
    pub requeue: Option<Duration>,
}

/// Where a rollout is (see [`Draft::position`]).
struct At {
    plan: Vec<Step>,
    step: usize,
    kind: Step,
    /// The weight the step asks for.
    weight: i32,
    started: jiff::Timestamp,
    elapsed: Duration,
    deadline: Duration,
}

impl At {
    /// Whether the step has run past the progress deadline.
    fn late(&self) -> bool {
        self.elapsed > self.deadline
    }
}

/// Replicas of both versions at a step, and what the Service selects.
struct Placement {
    candidate: i32,
    stable: i32,
    serving: Serving,
}

struct Draft<'a> {
    o: &'a Observation<'a>,
    status: ReleaseStatus,
    effects: Vec<Effect>,
    restored: Option<(String, ReleaseStatus)>,
    requeue: Option<Duration>,
}

/// The decision of one reconcile. See the module documentation for the rules it keeps.
///
/// A step that ends goes on into the next one within the same decision (its replicas, its
/// Service, its message), for as long as steps end at once, and a Release that goes Live goes on
/// as the app's stable Release: one status write per reconcile instead of one for the step that
/// ended and another, a moment later, for what began. What the next step sees is what the last
/// one left (its status, the annotations it consumed, the replicas it asked for, not yet
/// settled), and no measurement twice.
pub fn decide(o: &Observation<'_>) -> Outcome {
    let mut outcome = decide_step(o);
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
        // The other Deployment: the stable one while rolling out, then the previous version (the
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
            status: outcome.status.clone(),
            role: role.clone(),
            siblings: &siblings,
            own: scaled_by(o.own, &outcome.effects, &me),
            other: other.map_or(o.other, |n| scaled_by(o.other, &outcome.effects, &n)),
            measurements: None,
            ..o.clone()
        };
        let then = decide_step(&next);
        // The Service moves to what a step serves only once the status shows that step: a step
        // that changes what the Service selects waits for the next reconcile.
        if serving_of(&then.effects) != serving_of(&outcome.effects) {
            break;
        }
        outcome = Outcome {
            status: then.status,
            effects: merged(outcome.effects, then.effects),
            restored: then.restored.or(outcome.restored),
            requeue: then.requeue,
        };
    }
    outcome.effects = selector_first(o, outcome.effects);
    outcome
}

/// The message of a rollout at `step` of `plan`, waiting for its pods or its time.
fn step_message(plan: &[Step], step: usize) -> String {
    let position = format!("step {}/{}", (step + 1).min(plan.len()), plan.len());
    match plan.get(step).unwrap_or(&Step::Switch) {
        Step::Switch => format!("{position}: switching; keeping the previous version warm"),
        _ => format!("{position}: weight {}%", rollout::weight_at(plan, step)),
    }
}

/// What the last Services effect of `effects` selects.
fn serving_of(effects: &[Effect]) -> Option<&Serving> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Services { serving, .. } => Some(serving),
        _ => None,
    })
}

/// Steps one decision may go through (a plan of pauses of zero seconds, say).
const MAX_STEPS_AT_ONCE: usize = 16;

/// `rel` as a decision leaves it: its annotations consumed, its finalizer added or removed.
fn as_left(rel: &Release, outcome: &Outcome) -> Release {
    let mut rel = rel.clone();
    for effect in &outcome.effects {
        match effect {
            Effect::Consume(key) => {
                rel.annotations_mut().remove(*key);
            }
            Effect::Finalizer(add) => {
                let finalizers = with_serving_finalizer(rel.finalizers(), *add);
                *rel.finalizers_mut() = finalizers;
            }
            _ => {}
        }
    }
    rel.status = Some(outcome.status.clone());
    rel
}

/// `finalizers` with the serving finalizer added (`add`) or removed, the others as they are.
pub fn with_serving_finalizer(finalizers: &[String], add: bool) -> Vec<String> {
    let mut finalizers: Vec<String> = finalizers.iter().filter(|f| *f != SERVING_FINALIZER).cloned().collect();
    if add {
        finalizers.push(SERVING_FINALIZER.to_string());
    }
    finalizers
}

/// A Deployment after `effects` scale Release `release`: a changed spec is not settled yet.
fn scaled_by(d: Deployed, effects: &[Effect], release: &str) -> Deployed {
    let asked = effects.iter().rev().find_map(|e| match e {
        Effect::Scale { release: r, replicas } if r == release => Some(*replicas),
        _ => None,
    });
    match asked {
        Some(replicas) if replicas != d.replicas => Deployed { replicas, settled: false, ..d },
        _ => d,
    }
}

/// The effects of two decisions in a row: where the second asks for the same thing (a Deployment's
/// replicas, the Service, the finalizer, what is retired), its answer replaces the first's.
fn merged(mut first: Vec<Effect>, then: Vec<Effect>) -> Vec<Effect> {
    for effect in then {
        let same = |e: &Effect| match (e, &effect) {
            (Effect::Scale { release: a, .. }, Effect::Scale { release: b, .. }) => a == b,
            (Effect::Services { .. }, Effect::Services { .. })
            | (Effect::Finalizer(_), Effect::Finalizer(_))
            | (Effect::Retire { .. }, Effect::Retire { .. }) => true,
            (a, b) => a == b,
        };
        first.retain(|e| !same(e));
        first.push(effect);
    }
    first
}

/// One step of the decision (see [`decide`]).
fn decide_step(o: &Observation<'_>) -> Outcome {
    let mut d = Draft { o, status: o.status.clone(), effects: vec![], restored: None, requeue: None };
    let invalid = conditions::find(&d.status.conditions, condition::DEGRADED)
        .is_some_and(|c| c.status == "True" && c.reason == reason::INVALID_SPEC);
    if !invalid {
        match o.role {
            Role::Done => d.done(),
            Role::Superseded => {
                d.enter(ReleasePhase::Superseded);
                d.status.message = Some("a newer Release of the app took over".into());
                d.status.queue_position = None;
                d.status.weight = Some(0);
            }
            Role::Queued(position) => {
                d.enter(ReleasePhase::Pending);
                d.status.queue_position = Some(position);
                d.status.message =
                    Some(format!("Queued: position {position} in the deploy queue of {}", o.rel.spec.app));
            }
            Role::Stable => d.stable(),
            Role::Active => d.active(),
        }
    }
    d.serving();
    d.standard_conditions();
    Outcome { status: d.status, effects: d.effects, restored: d.restored, requeue: d.requeue }
}

/// The effects with every scale-down after the Service changes: a version that leaves the Service
/// keeps its pods until the Service no longer selects them. Scaled down first, its pods could be
/// terminating while the Service still selects only them, and the app would have no endpoint
/// (seen in a revert: an empty Service for one 100 ms sample). Scale-ups keep their place: a
/// first Deployment is applied before its Service, so a refused one leaves nothing behind.
fn selector_first(o: &Observation<'_>, effects: Vec<Effect>) -> Vec<Effect> {
    let me = o.rel.name_any();
    let now = |release: &str| if *release == me { o.own.replicas } else { o.other.replicas };
    let (downs, mut rest): (Vec<_>, Vec<_>) =
        effects.into_iter().partition(|e| matches!(e, Effect::Scale { release, replicas } if *replicas < now(release)));
    rest.extend(downs);
    rest
}

/// Whether `rel` serves, and why: it is Live, or it is the previous version a Live sibling keeps
/// warm for its revert window.
pub fn serves(rel: &Release, siblings: &[Release], now: &Time) -> Option<String> {
    let phase = rel.status.as_ref().and_then(|s| s.phase);
    if phase == Some(ReleasePhase::Live) {
        return Some(format!("it is Live: app {} serves from it", rel.spec.app));
    }
    let keeper = siblings.iter().find(|s| {
        let st = s.status.as_ref();
        st.and_then(|s| s.phase) == Some(ReleasePhase::Live)
            && st.and_then(|s| s.stable_release.as_deref()) == Some(rel.name_any().as_str())
            && window_open(s, siblings, now)
    })?;
    let ends = keeper.status.as_ref().and_then(|s| s.revert_window_ends_at.as_ref()).map(|t| t.0.to_string());
    Some(format!(
        "it is the previous version of {}, kept warm for its revert window until {}",
        keeper.name_any(),
        ends.unwrap_or_default()
    ))
}

/// Whether a Live Release's revert window is open: before its end, and no newer Release of the app
/// is rolling out (a new rollout ends the window: its stable is the one to return to).
pub fn window_open(live: &Release, siblings: &[Release], now: &Time) -> bool {
    let ends = live.status.as_ref().and_then(|s| s.revert_window_ends_at.as_ref());
    ends.is_some_and(|e| now.0 < e.0) && !rolling_out(live, siblings)
}

/// Whether a sibling of `rel` is rolling out.
fn rolling_out(rel: &Release, siblings: &[Release]) -> bool {
    siblings.iter().any(|s| {
        s.name_any() != rel.name_any()
            && matches!(s.status.as_ref().and_then(|s| s.phase), Some(ReleasePhase::Progressing | ReleasePhase::Paused))
    })
}

/// The finished Releases other than `rel`, newest first: the first [`HISTORY_LIMIT`] keep their
/// Deployments (at zero), the others lose them. The Releases stay as the record.
pub fn history(rel: &Release, siblings: &[Release]) -> (Vec<String>, Vec<String>) {
    let mut finished: Vec<&Release> = siblings
        .iter()
        .filter(|s| s.name_any() != rel.name_any())
        .filter(|s| s.status.as_ref().and_then(|s| s.phase).is_some_and(ReleasePhase::is_terminal))
        .collect();
    finished.sort_by_key(|s| {
        std::cmp::Reverse((s.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), s.name_any()))
    });
    let names = |it: &mut dyn Iterator<Item = &&Release>| it.map(|r| r.name_any()).collect::<Vec<_>>();
    (names(&mut finished.iter().take(HISTORY_LIMIT)), names(&mut finished.iter().skip(HISTORY_LIMIT)))
}

/// Ready pods the previous version keeps from the switch on: none without a revert window (there
/// is nothing to revert within), else `warmReplicas` of the app's total.
fn warm_replicas(strategy: &Strategy, total: i32) -> i32 {
    let window: Duration = strategy.revert_window.into();
    if window.is_zero() { 0 } else { scaled(&strategy.warm_replicas, total, true) }
}

/// The candidate's share of the Ready pods `serving` selects, in percent.
fn served_weight(serving: &Serving, me: &str, own: &Deployed, other: &Deployed) -> i32 {
    match serving {
        Serving::Only(r) if r == me => 100,
        Serving::Only(_) => 0,
        Serving::Both { .. } => {
            let all = own.available.max(0) + other.available.max(0);
            if all == 0 { 0 } else { ((own.available.max(0) as i64 * 100 + all as i64 / 2) / all as i64) as i32 }
        }
    }
}

impl<'a> Draft<'a> {
    fn name(&self) -> String {
        self.o.rel.name_any()
    }

    fn has(&self, annotation: &str) -> bool {
        self.o.rel.annotations().contains_key(annotation)
    }

    /// Who a control annotation names (admission checks it is the requester's user name).
    fn who(&self, annotation: &str) -> String {
        approval::named(self.o.rel, annotation).unwrap_or_else(|| "a person".into())
    }

    fn enter(&mut self, phase: ReleasePhase) {
        enter(&mut self.status, phase, &self.o.now);
    }

    fn set(&mut self, type_: &'static str, ok: bool, reason_: &'static str, message: &str) {
        let desired = conditions::Desired { type_, status: ok, reason: reason_, message: message.to_string() };
        conditions::upsert(&mut self.status.conditions, desired, self.o.rel.metadata.generation, &self.o.now);
    }

    fn event(&mut self, warning: bool, reason: &'static str, note: String) {
        self.effects.push(Effect::Event { warning, reason, note });
    }

    fn requeue(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }

    fn scale(&mut self, release: &str, replicas: i32) {
        self.effects.push(Effect::Scale { release: release.to_string(), replicas: replicas.max(0) });
    }

    fn limits(&self) -> (i32, i32) {
        let rolling = self.o.rel.spec.strategy.rolling.clone().unwrap_or_default();
        (scaled(&rolling.max_surge, self.o.total, true), scaled(&rolling.max_unavailable, self.o.total, false))
    }

    /// A revert that cannot be carried out: said in a condition and an Event, and the request is
    /// consumed (it would otherwise sit there and act later, unexpectedly).
    fn refuse_revert(&mut self, why: String) {
        self.effects.push(Effect::Consume(REVERT));
        self.set(condition::REVERT_READY, false, "RevertRefused", &why);
        self.event(true, "RevertRefused", why);
    }

    /// A finished Release: only a revert request can arrive, and it is refused; unless this
    /// Release's own revert was cut short (see [`Self::unfinished_revert`]): then it finishes it.
    fn done(&mut self) {
        if let Some(previous) = self.unfinished_revert() {
            if self.has(REVERT) {
                self.effects.push(Effect::Consume(REVERT));
            }
            return self.restore(previous);
        }
        if self.has(REVERT) {
            let phase = self.status.phase.map(ReleasePhase::as_str).unwrap_or("finished");
            let why = format!(
                "revert refused: {} is {phase}; only the Live Release of app {} can be reverted",
                self.name(),
                self.o.rel.spec.app
            );
            self.refuse_revert(why);
        }
    }

    /// The Live Release: it serves at the app's total (unless a newer one is rolling out, which then
    /// drives both), keeps the previous version warm for the revert window, then retires it.
    fn stable(&mut self) {
        let o = self.o;
        self.status.queue_position = None;
        let rolling = rolling_out(o.rel, o.siblings);
        let previous =
            self.status.stable_release.as_deref().and_then(|p| o.siblings.iter().find(|s| s.name_any() == p));
        let ends = self.status.revert_window_ends_at.clone();
        let open = window_open(o.rel, o.siblings, &o.now) && previous.is_some();
        if self.has(REVERT) {
            let refused = if rolling {
                Some(format!(
                    "revert refused: a newer Release of app {} is rolling out; abort it first",
                    o.rel.spec.app
                ))
            } else if previous.is_none() {
                Some(format!(
                    "revert refused: {} is the first Release of app {}: there is no previous version to return to",
                    self.name(),
                    o.rel.spec.app
                ))
            } else if !open {
                let when = ends.as_ref().map(|t| format!(" at {}", t.0)).unwrap_or_default();
                Some(format!("revert refused: the revert window of {} ended{when}", self.name()))
            } else {
                None
            };
            match (refused, previous) {
                (Some(why), _) => self.refuse_revert(why),
                (None, Some(previous)) => return self.revert(previous),
                (None, None) => unreachable!("checked above"),
            }
        }
        if rolling {
            // The rollout drives this Release's pods; an older version it kept warm goes cold.
            self.retire();
            return;
        }
        let me = self.name();
        let total = o.total;
        self.scale(&me, total);
        self.effects.push(Effect::Services { serving: Serving::Only(me.clone()), preview: false });
        self.status.candidate_replicas = Some(total);
        self.status.replicas = Some(total);
        self.status.stable_replicas = None;
        self.status.weight = Some(if o.own.available > 0 || total == 0 { 100 } else { 0 });
        self.status.step_weight = Some(100);
        match (previous, open) {
            (Some(previous), true) => {
                let warm = warm_replicas(&o.rel.spec.strategy, total);
                self.scale(&previous.name_any(), warm);
                let until = ends.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
                let (ok, why, msg) = if warm == 0 {
                    (
                        false,
                        "Cold",
                        format!("warmReplicas is 0: a revert to {} waits for it to start", previous.name_any()),
                    )
                } else if o.other.ready(warm) {
                    (true, "Warm", format!("{} keeps {warm} Ready pods until {until}", previous.name_any()))
                } else {
                    let a = o.other.available;
                    (false, "Warming", format!("{} has {a} of {warm} warm pods Ready", previous.name_any()))
                };
                self.set(condition::REVERT_READY, ok, why, &msg);
                if let Some(end) = ends {
                    let left = Duration::try_from(end.0.duration_since(o.now.0)).unwrap_or_default();
                    self.requeue(left + Duration::from_secs(1));
                }
            }
            // A refusal stays on show until the state changes (the Event is published once).
            _ if self.revert_refused() => {}
            (Some(_), false) => {
                self.retire();
                self.set(condition::REVERT_READY, false, "WindowEnded", "the revert window has ended");
            }
            (None, _) => {
                let msg = "the first Release of the app: there is no previous version";
                self.set(condition::REVERT_READY, false, "NoPreviousVersion", msg);
            }
        }
    }

    fn revert_refused(&self) -> bool {
        conditions::find(&self.status.conditions, condition::REVERT_READY).is_some_and(|c| c.reason == "RevertRefused")
    }

    fn retire(&mut self) {
        let (keep, delete) = history(self.o.rel, self.o.siblings);
        if !keep.is_empty() || !delete.is_empty() {
            self.effects.push(Effect::Retire { keep, delete });
        }
    }

    /// `kubectl phaseloop revert` within the window: the previous version takes all traffic again,
    /// at once when warm, else as its pods become Ready.
    fn revert(&mut self, previous: &Release) {
        let prev = previous.name_any();
        let total = self.o.total;
        if !self.hand_back(&prev, self.o.other, self.o.own) {
            self.status.message = Some(format!(
                "reverting to {prev}: {} of {total} pods Ready",
                self.o.other.available.max(0).min(total)
            ));
            return;
        }
        self.effects.push(Effect::Consume(REVERT));
        self.enter(ReleasePhase::Reverted);
        self.status.message = Some(format!("reverted to {prev} by {}", self.who(REVERT)));
        self.status.revert_window_ends_at = None;
        (self.status.weight, self.status.step_weight, self.status.candidate_replicas) = (Some(0), Some(0), Some(0));
        self.status.replicas = Some(0);
        self.set(condition::REVERT_READY, false, "Reverted", &format!("reverted to {prev}"));
        self.restore(previous);
    }

    /// The previous version Live again, written after this Release's own status.
    fn restore(&mut self, previous: &Release) {
        let total = self.o.total;
        let mut restored = previous.status.clone().unwrap_or_default();
        enter(&mut restored, ReleasePhase::Live, &self.o.now);
        restored.message = Some(format!("restored by the revert of {}", self.name()));
        restored.revert_window_ends_at = None;
        (restored.candidate_replicas, restored.replicas, restored.weight) = (Some(total), Some(total), Some(100));
        self.restored = Some((previous.name_any(), restored));
    }

    /// A revert is two writes: this Release `Reverted`, then the previous version `Live`. A crash
    /// between them leaves the app with nothing Live. The Reverted Release then finishes its revert:
    /// when it is the app's newest Reverted Release, no Release is Live or rolling out, and the
    /// version it reverted to is still there, `Superseded`. Returns that version.
    fn unfinished_revert(&self) -> Option<&'a Release> {
        let o = self.o;
        if self.status.phase != Some(ReleasePhase::Reverted) {
            return None;
        }
        let phase = |r: &Release| r.status.as_ref().and_then(|s| s.phase);
        let me = self.name();
        let reverted_at = |r: &Release| {
            let at = r.status.as_ref().and_then(|s| s.phase_times.get(ReleasePhase::Reverted.as_str()));
            (at.map(|t| t.0), r.metadata.creation_timestamp.as_ref().map(|t| t.0), r.name_any())
        };
        let mine = reverted_at(o.rel);
        let others = o.siblings.iter().filter(|s| s.name_any() != me);
        let mut blocking = others.filter(|s| {
            matches!(phase(s), Some(ReleasePhase::Live | ReleasePhase::Progressing | ReleasePhase::Paused))
                || (phase(s) == Some(ReleasePhase::Reverted) && reverted_at(s) > mine)
        });
        if blocking.next().is_some() {
            return None;
        }
        let previous = self.status.stable_release.as_deref()?;
        o.siblings.iter().find(|s| s.name_any() == previous && phase(s) == Some(ReleasePhase::Superseded))
    }

    /// Hands the app back to `to` (a rollback, a revert): at once when `to` already has enough Ready
    /// pods to carry the app (its total minus what `maxUnavailable` allows), else the way a rolling
    /// update would, both versions serving meanwhile. Returns whether it is done: then `to` alone
    /// is selected, at the app's total, and this Release is at zero.
    fn hand_back(&mut self, to: &str, incoming: Deployed, outgoing: Deployed) -> bool {
        let me = self.name();
        let total = self.o.total;
        let (surge, unavailable) = self.limits();
        let floor = (total - unavailable).max(total.min(1));
        if incoming.settled && incoming.available >= floor {
            self.scale(to, total);
            self.scale(&me, 0);
            self.effects.push(Effect::Services { serving: Serving::Only(to.to_string()), preview: false });
            return true;
        }
        let (back, away) = handover::step(total, surge, unavailable, incoming.side(), outgoing.side());
        self.scale(to, back);
        self.scale(&me, away);
        let both = Serving::Both { stable: to.to_string(), candidate: me.clone() };
        self.effects.push(Effect::Services { serving: both, preview: false });
        false
    }

    /// The Release the queue lets go: tests, the gate, then the rollout.
    fn active(&mut self) {
        self.status.queue_position = None;
        let phase = self.status.phase.unwrap_or(ReleasePhase::Pending);
        let gated = matches!(phase, ReleasePhase::Pending | ReleasePhase::Testing | ReleasePhase::AwaitingApproval);
        if gated {
            if self.has(ABORT) {
                // Nothing serves from this Release yet: only its test candidate goes away.
                if let Some(TestsObserved { ground: TestGround::Ready(ns), .. }) = &self.o.tests {
                    self.effects.push(Effect::TestCandidate { namespace: ns.clone(), replicas: 0 });
                }
                self.effects.push(Effect::DropTestEnvironment);
                self.effects.push(Effect::Consume(ABORT));
                self.enter(ReleasePhase::Failed);
                self.status.message = Some(format!("aborted by {} before the rollout", self.who(ABORT)));
                return;
            }
            if !self.tests() || !self.gate() {
                return;
            }
        } else if self.approval_required() && !approval::present(self.o.rel) {
            return self.gate_not_passed();
        }
        self.rollout();
    }

    /// Whether the Release needs an approval: its own spec, or its Environment's promotion rule.
    fn approval_required(&self) -> bool {
        let o = self.o;
        o.rel.spec.approval.as_ref().is_some_and(|a| a.required) || o.promotion.is_some_and(|p| p.require_approval)
    }

    /// The status says the rollout is past the gate, the annotations say it was never approved:
    /// the status was written by someone else. The gate is derived from the spec and the
    /// annotations (which an admission policy guards), never from status: the Release goes back
    /// to wait for its approval, and the stable version gets all traffic back.
    fn gate_not_passed(&mut self) {
        let o = self.o;
        let me = self.name();
        self.scale(&me, 0);
        if let Some(stable) = o.stable {
            self.scale(&stable.name_any(), o.total);
            self.effects.push(Effect::Services { serving: Serving::Only(stable.name_any()), preview: false });
        }
        let why = format!(
            "the status says the rollout passed the gate, but the Release was never approved \
             (no {APPROVED_BY}): waiting for approval"
        );
        let why = why.as_str();
        self.event(true, "GateNotPassed", why.to_string());
        self.effects.push(Effect::ClearStatus(vec!["approval", "currentStep", "stepStartedAt", "override"]));
        self.enter(ReleasePhase::AwaitingApproval);
        (self.status.current_step, self.status.step_started_at, self.status.approval) = (None, None, None);
        (self.status.weight, self.status.step_weight, self.status.candidate_replicas) = (Some(0), None, Some(0));
        self.status.message = Some(why.into());
        self.set(condition::APPROVED, false, "AwaitingApproval", "approval required");
        self.set(condition::PROGRESSING, false, "GateNotPassed", why);
    }

    /// The Test phase; true once every test passed (or there are none).
    fn tests(&mut self) -> bool {
        let Some(t) = self.o.tests.clone() else { return true };
        let o = self.o;
        let ns = match t.ground {
            TestGround::Refused(why) => {
                self.enter(ReleasePhase::Failed);
                self.set(condition::TESTED, false, "NoTestEnvironment", &why);
                self.status.message = Some(why);
                return false;
            }
            TestGround::Missing | TestGround::Provisioning => {
                if t.ground == TestGround::Missing {
                    self.effects.push(Effect::EnsureTestEnvironment);
                }
                self.enter(ReleasePhase::Testing);
                self.status.message = Some("waiting for the test Environment".into());
                self.requeue(POLL);
                return false;
            }
            TestGround::Ready(ns) => ns,
        };
        self.effects.push(Effect::TestCandidate { namespace: ns.clone(), replicas: 1 });
        if !t.candidate_ready {
            self.enter(ReleasePhase::Testing);
            self.status.message = Some("waiting for the candidate to become ready for its tests".into());
            self.requeue(POLL);
            return false;
        }
        let mut running = false;
        for test in &o.rel.spec.tests {
            let attempt = self.status.tests.iter().find(|r| r.name == test.name).map(|r| r.attempts).unwrap_or(0);
            let phase = if attempt == 0 { None } else { t.jobs.get(&test.name).copied().flatten() };
            let (attempt, phase, message) = match test_jobs::next(test, attempt, phase) {
                test_jobs::Next::Passed => (attempt, test_jobs::SUCCEEDED, None),
                test_jobs::Next::Failed => {
                    (attempt, test_jobs::FAILED, Some(format!("test {} failed after {attempt} attempt(s)", test.name)))
                }
                test_jobs::Next::Run(n) => {
                    self.effects.push(Effect::RunTest { namespace: ns.clone(), test: test.name.clone(), attempt: n });
                    running = true;
                    (n, test_jobs::RUNNING, None)
                }
            };
            let job = test_jobs::job_name(o.rel, test, attempt.max(1));
            let result = test_jobs::result(test, attempt, phase, &job, message);
            match self.status.tests.iter_mut().find(|r| r.name == test.name) {
                Some(r) => *r = result,
                None => self.status.tests.push(result),
            }
        }
        if let Some(failed) = self.status.tests.iter().find(|r| r.phase == test_jobs::FAILED) {
            let why = failed.message.clone().unwrap_or_else(|| format!("test {} failed", failed.name));
            // The running version is never touched: only the candidate goes away.
            self.effects.push(Effect::TestCandidate { namespace: ns, replicas: 0 });
            self.effects.push(Effect::DropTestEnvironment);
            self.enter(ReleasePhase::Failed);
            self.status.message = Some(why.clone());
            self.set(condition::TESTED, false, "Failed", &why);
            return false;
        }
        if running {
            self.enter(ReleasePhase::Testing);
            self.set(condition::TESTED, false, "Running", "tests are running against the candidate");
            self.requeue(POLL);
            return false;
        }
        self.effects.push(Effect::DropTestEnvironment);
        self.set(condition::TESTED, true, "Passed", "every test passed");
        true
    }

    /// The gate: freeze, promotion from upstream, approval. True when open (the rollout starts).
    fn gate(&mut self) -> bool {
        let o = self.o;
        let promotion = o.promotion;
        if promotion.is_some_and(|p| p.freeze) {
            self.enter(ReleasePhase::AwaitingApproval);
            self.status.message = Some("the Environment is frozen: no new rollouts".into());
            self.requeue(Duration::from_secs(30));
            return false;
        }
        if let Some(p) = promotion
            && let Some(upstream) = &p.from
        {
            let soak = p.soak.map(Into::into).unwrap_or_default();
            if let Some((why, wait)) =
                gate::soak_wait(upstream, o.upstream, &o.rel.spec.app, &o.rel.spec.version, soak, o.now.0)
            {
                self.enter(ReleasePhase::AwaitingApproval);
                self.set(condition::APPROVED, false, "PromotionPending", &why);
                self.status.message = Some(why);
                self.requeue(wait);
                return false;
            }
        }
        let required = self.approval_required();
        match approval::of(o.rel, o.promotion) {
            Approval::Given(who) => {
                let record = ApprovalRecord { approved_by: who, approved_at: o.now.clone() };
                self.status.approval.get_or_insert(record);
                self.set(condition::APPROVED, true, "Approved", "the gate is open");
            }
            _ if !required => self.set(condition::APPROVED, true, "Approved", "the gate is open"),
            Approval::Missing => {
                self.enter(ReleasePhase::AwaitingApproval);
                self.status.message = Some("waiting for approval: kubectl phaseloop approve".into());
                self.set(condition::APPROVED, false, "AwaitingApproval", "approval required");
                return false;
            }
            Approval::Refused(reason, why) => {
                self.enter(ReleasePhase::AwaitingApproval);
                self.status.message = Some(format!("waiting for approval: {why}"));
                self.set(condition::APPROVED, false, reason, &why);
                return false;
            }
        }
        self.enter(ReleasePhase::Progressing);
        self.status.current_step = Some(0);
        self.status.step_started_at = Some(o.now.clone());
        self.status.stable_release = o.stable.map(|s| s.name_any());
        self.status.message = Some("rolling out".into());
        true
    }

    /// The rollout: this step's replicas and Service, the verdict, and what comes next.
    fn rollout(&mut self) {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let at = self.position();
        let mut verdict = self.tally();
        let aborted = self.has(ABORT);
        let rolling_back = conditions::find(&self.status.conditions, condition::PROGRESSING)
            .is_some_and(|c| c.reason == "RollingBack");
        let placement = self.placement(&at);
        let warm = warm_replicas(strategy, o.total);
        let pods_ready = match at.kind {
            Step::Switch => o.stable.is_none() || warm == 0 || o.other.ready(warm),
            Step::Weight(_) if o.stable.is_some() && strategy.type_ == StrategyType::Rolling => o.own.ready(o.total),
            Step::Weight(_) => o.own.ready(placement.candidate),
            _ => true,
        };
        let mut deadline_missed = matches!(at.kind, Step::Weight(_)) && !pods_ready && at.late();
        if self.overridden(&verdict, deadline_missed, aborted || rolling_back) {
            verdict = Verdict::Passing;
            deadline_missed = false;
        }
        if aborted {
            verdict = Verdict::Failed(format!("aborted by {}", self.who(ABORT)));
        }
        let metrics = strategy.analysis.as_ref().map(|a| a.metrics.as_slice()).unwrap_or_default();
        let unmeasured =
            if metrics.is_empty() { Default::default() } else { analysis::unmeasured(metrics, &self.status.analysis) };
        let observed = rollout::Observed {
            step: at.step,
            step_started: at.started,
            now: o.now.0,
            pods_ready,
            promoted: self.has(PROMOTE),
            analysis: verdict.clone(),
            deadline_missed,
            unmeasured: unmeasured.clone(),
        };
        let decision = if rolling_back {
            Decision::Abort(self.status.message.clone().unwrap_or_else(|| "rolling back".into()))
        } else if at.kind == Step::Switch && !pods_ready && at.late() {
            // The candidate serves everything already; a previous version that cannot warm up (a
            // tight quota, say) does not hold the Release back: the window goes on cold.
            let why = format!(
                "the previous version has {} of {warm} warm pods Ready after the progress deadline: \
                 the revert window starts cold (a revert waits for its pods)",
                o.other.available.max(0)
            );
            self.event(true, "RevertWindowCold", why);
            Decision::Advance { step: at.step + 1 }
        } else {
            rollout::decide(&at.plan, &observed)
        };
        if let Decision::Abort(why) = &decision
            && (aborted || rolling_back || strategy.auto_rollback || o.stable.is_none())
        {
            return self.roll_back(why.clone());
        }
        self.serve(&at, placement);
        let fresh_tally = matches!(verdict, Verdict::Inconclusive(_)) || unmeasured != Default::default();
        self.carry_out(decision, &at, fresh_tally);
    }

    /// Where the rollout is: its plan, the step and how long it has been on it.
    fn position(&self) -> At {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let plan = rollout::plan(strategy);
        let step = self.status.current_step.unwrap_or(0).max(0) as usize;
        let kind = plan.get(step).cloned().unwrap_or(Step::Switch);
        let weight = rollout::weight_at(&plan, step);
        let started = self.status.step_started_at.as_ref().map(|t| t.0).unwrap_or(o.now.0);
        let elapsed = Duration::try_from(o.now.0.duration_since(started)).unwrap_or_default();
        At { plan, step, kind, weight, started, elapsed, deadline: strategy.progress_deadline.into() }
    }

    /// This reconcile's measurements into the tally, and the verdict of the tally.
    fn tally(&mut self) -> Verdict {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        if let (Some(a), Some(values)) = (&strategy.analysis, &o.measurements) {
            for m in &a.metrics {
                let value = values.iter().find(|(n, _)| *n == m.name).and_then(|(_, v)| *v);
                let i = self.status.analysis.iter().position(|r| r.name == m.name);
                let result = analysis::record(i.map(|i| &self.status.analysis[i]), m, value, &o.now);
                match i {
                    Some(i) => self.status.analysis[i] = result,
                    None => self.status.analysis.push(result),
                }
            }
        }
        let metrics = strategy.analysis.as_ref().map(|a| a.metrics.as_slice()).unwrap_or_default();
        analysis::verdict(metrics, &self.status.analysis)
    }

    /// This step's replicas of both versions, and what the Service selects.
    fn placement(&self, at: &At) -> Placement {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let (me, total) = (self.name(), o.total);
        let warm = warm_replicas(strategy, total);
        let (candidate, stable, serving) = match o.stable {
            None => (total, 0, Serving::Only(me)),
            Some(_) if at.kind == Step::Switch => (total, warm, Serving::Only(me)),
            Some(s) if strategy.type_ == StrategyType::BlueGreen => (total, total, Serving::Only(s.name_any())),
            Some(s) => {
                let both = Serving::Both { stable: s.name_any(), candidate: me };
                if strategy.type_ == StrategyType::Rolling {
                    let (surge, unavailable) = self.limits();
                    let (c, st) = handover::step(total, surge, unavailable, o.own.side(), o.other.side());
                    (c, st, both)
                } else if at.weight >= 100 {
                    // The stable version keeps its pods until the switch: capacity never drops.
                    (total, o.other.replicas.clamp(0, total), both)
                } else {
                    let (c, st) = split(total, at.weight);
                    // It gives up pods only as the candidate's become Ready.
                    (c, st.max((total - o.own.available).clamp(0, o.other.replicas.max(0))), both)
                }
            }
        };
        Placement { candidate, stable, serving }
    }

    /// With autoRollback off, a person may let the rollout go on past a failure
    /// (`promote --override`): recorded in status, the tally restarted. Whether it was. A request
    /// with nothing to override is spent all the same.
    fn overridden(&mut self, verdict: &Verdict, deadline_missed: bool, stopping: bool) -> bool {
        let o = self.o;
        let failure = match verdict {
            Verdict::Failed(why) => Some(format!("analysis failed: {why}")),
            _ if deadline_missed => Some("the candidate did not become ready within the progress deadline".into()),
            _ => None,
        };
        if !self.has(OVERRIDE) {
            return false;
        }
        self.effects.push(Effect::Consume(OVERRIDE));
        let Some(what) = failure.filter(|_| !o.rel.spec.strategy.auto_rollback && !stopping) else { return false };
        let by = o.rel.annotations().get(OVERRIDE).cloned().unwrap_or_default();
        self.status.override_ = Some(OverrideRecord { by: by.clone(), at: o.now.clone(), verdict: what.clone() });
        self.event(false, "Overridden", format!("{by} let the rollout go on past: {what}"));
        self.set(condition::DEGRADED, false, reason::AS_EXPECTED, "overridden by a person");
        analysis::restart(&mut self.status.analysis);
        self.status.step_started_at = Some(o.now.clone());
        true
    }

    /// Both versions at this step's replicas, the Service on `serving`, and the status saying so.
    fn serve(&mut self, at: &At, placement: Placement) {
        let o = self.o;
        let me = self.name();
        let Placement { candidate, stable, serving } = placement;
        self.scale(&me, candidate);
        if let Some(s) = o.stable {
            self.scale(&s.name_any(), stable);
        }
        let blue_green = o.rel.spec.strategy.type_ == StrategyType::BlueGreen;
        self.effects.push(Effect::Services { serving: serving.clone(), preview: blue_green });
        self.status.weight = Some(served_weight(&serving, &me, &o.own, &o.other));
        self.status.step_weight = Some(at.weight);
        self.status.candidate_replicas = Some(candidate);
        self.status.stable_replicas = o.stable.map(|_| stable);
        self.status.replicas = Some(candidate + o.stable.map_or(0, |_| stable));
    }

    /// The rollout decision in status, Events and effects. `fresh_tally`: a promotion past an
    /// inconclusive pause starts the tally of what follows afresh.
    fn carry_out(&mut self, decision: Decision, at: &At, fresh_tally: bool) {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let position = format!("step {}/{}", (at.step + 1).min(at.plan.len()), at.plan.len());
        match decision {
            Decision::Hold { wait, .. } => {
                self.enter(ReleasePhase::Progressing);
                self.set(condition::PROGRESSING, true, "RollingOut", &position);
                self.status.message = Some(step_message(&at.plan, at.step));
                let interval = strategy.analysis.as_ref().map(|a| Duration::from(a.interval));
                let left = at.deadline.saturating_sub(at.elapsed);
                self.requeue(rollout::recheck_after(wait, left, interval, ROLLOUT_RECHECK));
            }
            Decision::Pause { reason, .. } => {
                self.enter(ReleasePhase::Paused);
                self.set(condition::PROGRESSING, true, "Paused", &reason);
                self.status.message = Some(reason);
            }
            Decision::Advance { step: next } => {
                self.status.current_step = Some(next as i32);
                // Said at once: the step may begin in the next reconcile (see `decide`).
                self.status.message = Some(step_message(&at.plan, next));
                self.status.step_started_at = Some(o.now.clone());
                analysis::next_step(&mut self.status.analysis);
                if self.has(PROMOTE) {
                    if fresh_tally {
                        analysis::restart(&mut self.status.analysis);
                    }
                    self.effects.push(Effect::Consume(PROMOTE));
                    let note = format!("{} promoted the rollout past step {}", self.who(PROMOTE), at.step + 1);
                    self.event(false, "Promoted", note);
                }
                if self.status.phase == Some(ReleasePhase::Paused) {
                    self.enter(ReleasePhase::Progressing);
                }
                self.requeue(AT_ONCE);
            }
            Decision::Promote => {
                self.enter(ReleasePhase::Live);
                self.status.message = Some("Live".into());
                let window: Duration = strategy.revert_window.into();
                self.status.revert_window_ends_at = o.stable.map(|_| Time(later(o.now.0, window)));
                self.set(condition::PROGRESSING, false, "Complete", "the rollout is complete");
                self.requeue(AT_ONCE);
            }
            Decision::Abort(why) => self.hold_failure(why),
        }
    }

    /// A failure with autoRollback off: paused, and a person decides (abort, or override and go on).
    fn hold_failure(&mut self, why: String) {
        let reason_ = if why.contains("deadline") { "ProgressDeadlineExceeded" } else { "AnalysisFailed" };
        let message = format!(
            "{why}; autoRollback is off: kubectl phaseloop abort, or kubectl phaseloop promote --override to go on"
        );
        if self.status.phase != Some(ReleasePhase::Paused) {
            self.event(true, reason_, message.clone());
        }
        self.enter(ReleasePhase::Paused);
        self.set(condition::PROGRESSING, true, "Paused", &message);
        self.set(condition::DEGRADED, true, reason_, &why);
        self.status.message = Some(message);
    }

    /// Returns all traffic to the stable version (failed analysis, missed deadline, abort): without
    /// dropping below the pods the app needs, so the stable version comes back first when it has
    /// to. The Release ends `RolledBack` (`Failed` when nothing was serving before it).
    fn roll_back(&mut self, why: String) {
        let o = self.o;
        let me = self.name();
        let Some(stable) = o.stable else {
            self.scale(&me, 0);
            self.effects.push(Effect::Consume(ABORT));
            self.enter(ReleasePhase::Failed);
            self.status.message = Some(why.clone());
            self.status.weight = Some(0);
            self.set(condition::DEGRADED, true, "Failed", &why);
            self.set(condition::PROGRESSING, false, "Failed", &why);
            return;
        };
        let to = stable.name_any();
        if !self.hand_back(&to, o.other, o.own) {
            self.enter(ReleasePhase::Progressing);
            self.set(condition::PROGRESSING, true, "RollingBack", &why);
            self.status.message = Some(why);
            self.status.weight =
                Some(served_weight(&Serving::Both { stable: to, candidate: me.clone() }, &me, &o.own, &o.other));
            return;
        }
        self.effects.push(Effect::Consume(ABORT));
        self.enter(ReleasePhase::RolledBack);
        self.status.message = Some(why.clone());
        (self.status.weight, self.status.candidate_replicas) = (Some(0), Some(0));
        self.status.stable_replicas = Some(o.total);
        self.status.replicas = Some(o.total);
        self.set(condition::DEGRADED, true, "RolledBack", &why);
        self.set(condition::PROGRESSING, false, "RolledBack", &why);
    }

    /// The serving finalizer, and a deletion that has to wait.
    fn serving(&mut self) {
        let o = self.o;
        let has = o.rel.finalizers().iter().any(|f| f == SERVING_FINALIZER);
        let deleting = o.rel.metadata.deletion_timestamp.is_some();
        // As this reconcile leaves it: a Release going Live now serves, one superseded may not.
        let mut me = o.rel.clone();
        me.status = Some(self.status.clone());
        match serves(&me, o.siblings, &o.now) {
            Some(why) => {
                if !has && !deleting {
                    self.effects.push(Effect::Finalizer(true));
                }
                if deleting {
                    let message = format!("the deletion waits because {why}; it completes once it no longer serves");
                    if !conditions::is_true(&self.status.conditions, condition::DELETING) {
                        self.event(true, "DeletionWaiting", message.clone());
                    }
                    self.set(condition::DELETING, true, "WaitingUntilNotServing", &message);
                }
            }
            None if has => self.effects.push(Effect::Finalizer(false)),
            None => {}
        }
    }

    /// `Ready` and `Available`: True exactly while the app serves from this Release (Live).
    fn standard_conditions(&mut self) {
        let phase = self.status.phase.unwrap_or(ReleasePhase::Pending);
        let live = phase == ReleasePhase::Live;
        let message = if live {
            format!("app {} serves from this Release", self.o.rel.spec.app)
        } else {
            self.status.message.clone().unwrap_or_else(|| phase.as_str().to_string())
        };
        self.set(condition::READY, live, phase.as_str(), &message);
        self.set(condition::AVAILABLE, live, phase.as_str(), &message);
    }
}

/// `at + by`, saturating: a window of 999999999h (which the schema admits) must not overflow.
pub fn later(at: jiff::Timestamp, by: Duration) -> jiff::Timestamp {
    let by = jiff::SignedDuration::try_from(by).unwrap_or(jiff::SignedDuration::MAX);
    at.checked_add(by).unwrap_or(jiff::Timestamp::MAX)
}

#[cfg(test)]
mod tests;
