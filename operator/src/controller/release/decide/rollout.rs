//! The rollout going forward: each step's replicas and traffic, the analysis tally and its
//! verdict, pauses and promotions, and the step machine's next move (`steps.rs`). Failures,
//! aborts and deletions go to [`super::rollback`].

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::{AT_ONCE, Draft, ROLLOUT_RECHECK, Transition, warm_replicas};
use crate::{
    api::{
        OverrideRecord, PauseReason, PauseRecord, Reason, ReleasePhase, RollbackCause,
        annotation::{ABORT, OVERRIDE, PROMOTE},
        condition,
    },
    controller::release::{
        analysis,
        steps::{self, Decision, Failure, Step, Verdict},
        strategy::{self, Placement, Placing},
        traffic::{self, Exposure, Serving, ready_share, served_weight},
    },
};

/// Where a rollout is.
pub(super) struct At {
    pub plan: Vec<Step>,
    pub step: usize,
    pub kind: Step,
    /// The weight the step asks for.
    pub weight: i32,
    pub started: Timestamp,
    pub elapsed: Duration,
    pub deadline: Duration,
}

impl At {
    /// Whether the step has run past the progress deadline.
    fn late(&self) -> bool {
        self.elapsed > self.deadline
    }
}

/// The message of a rollout at `step` of `plan`, waiting for its pods or its time.
pub(super) fn step_message(plan: &[Step], step: usize) -> String {
    let position = format!("step {}/{}", (step + 1).min(plan.len()), plan.len());
    match plan.get(step).unwrap_or(&Step::Switch) {
        Step::Switch => format!("{position}: switching; keeping the previous version warm"),
        _ => format!("{position}: weight {}%", steps::weight_at(plan, step)),
    }
}

impl Draft<'_> {
    /// The rollout: this step's replicas and traffic, the verdict, and what comes next.
    pub(super) fn rollout(&mut self) {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let at = self.position();
        let mut verdict = self.tally();
        if let Some(record) = self.status.rollback.clone() {
            return self.roll_back(record.cause, record.message);
        }
        if o.rel.metadata.deletion_timestamp.is_some() {
            let why = "the Release was deleted while it rolled out: the stable version takes the app back first";
            return self.roll_back(RollbackCause::Deleted, why.into());
        }
        if self.asked(ABORT) {
            let who = self.requester(ABORT);
            self.done_with(ABORT, "rolling back to the stable version");
            return self.roll_back(RollbackCause::Aborted, format!("aborted by {who}"));
        }
        let placement = self.placement(&at);
        let cleared = self.clear_older_versions();
        let warm = warm_replicas(strategy, self.total);
        let routing = traffic::routing(o.rel).is_some();
        let candidate_ready = match at.kind {
            Step::Switch => o.stable.is_none() || warm == 0 || o.other.ready(warm),
            Step::Weight(_) if o.stable.is_some() => {
                let s = strategy::of(strategy.type_);
                s.pods_ready(&self.placing(&at), &placement)
            }
            Step::Weight(_) => o.own.ready(placement.candidate),
            Step::HeaderRoute(_) | Step::CanaryScale(_) if routing => o.own.ready(placement.candidate),
            _ => true,
        };
        let mut exposure = self.exposure(&at, &placement, cleared);
        // A step whose traffic is held back (its pods are not yet behind the canary Service: the
        // EndpointSlices lag the pods) is not done, even when the route carries what was admitted.
        let admitted = at.kind == Step::Switch || self.admit(&mut exposure, candidate_ready);
        let routed = self.route(&exposure);
        let pods_ready = cleared && routed && candidate_ready && admitted;
        let mut deadline_missed = matches!(at.kind, Step::Weight(_)) && !pods_ready && at.late();
        let overridden = self.overridden(&verdict, deadline_missed);
        if overridden {
            (verdict, deadline_missed) = (Verdict::Passing, false);
        }
        let promotable = matches!(at.kind, Step::Pause(_)) || self.phase() == ReleasePhase::Paused;
        let promoted = self.asked(PROMOTE) && (promotable || overridden);
        let metrics = strategy.analysis.as_ref().map(|a| a.metrics.as_slice()).unwrap_or_default();
        let unmeasured =
            if metrics.is_empty() { Default::default() } else { analysis::unmeasured(metrics, &self.status.analysis) };
        let observed = steps::Observed {
            step: at.step,
            step_started: at.started,
            now: o.now.0,
            pods_ready,
            promoted,
            analysis: verdict.clone(),
            deadline_missed,
            unmeasured: unmeasured.clone(),
        };
        let decision = if at.kind == Step::Switch && !pods_ready && at.late() && cleared {
            // The candidate serves everything already; a previous version that cannot warm up (a
            // tight quota, say) does not hold the Release back: the window goes on cold.
            let why = format!(
                "the previous version has {} of {warm} warm pods Ready after the progress deadline: \
                 the revert window starts cold (a revert waits for its pods)",
                o.other.available.max(0)
            );
            self.event(true, Reason::RevertWindowCold, why);
            Decision::Advance { step: at.step + 1 }
        } else {
            steps::decide(&at.plan, &observed)
        };
        if let Decision::Fail(failure) = &decision
            && (strategy.auto_rollback || o.stable.is_none())
        {
            let cause = match failure {
                Failure::Analysis(_) => RollbackCause::AnalysisFailed,
                Failure::Deadline => RollbackCause::ProgressDeadlineExceeded,
            };
            return self.roll_back(cause, failure.message());
        }
        self.serve(&at, placement, exposure);
        let fresh_tally = matches!(verdict, Verdict::Inconclusive(_)) || unmeasured != Default::default();
        self.carry_out(decision, &at, fresh_tally, promoted);
    }

    /// Where the rollout is: its plan, the step and how long it has been on it.
    pub(super) fn position(&self) -> At {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let plan = steps::plan(strategy);
        let step = self.status.current_step.unwrap_or(0).max(0) as usize;
        let kind = plan.get(step).cloned().unwrap_or(Step::Switch);
        let weight = steps::weight_at(&plan, step);
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

    fn placing<'s>(&self, at: &'s At) -> Placing<'s> {
        let (surge, unavailable) = self.limits();
        Placing {
            step: &at.kind,
            weight: at.weight,
            total: self.total,
            surge,
            unavailable,
            own: self.o.own,
            other: self.o.other,
            routed: traffic::routing(self.o.rel).is_some(),
            scale: steps::scale_at(&at.plan, at.step),
            header: steps::header_at(&at.plan, at.step).is_some(),
        }
    }

    /// This step's replicas of both versions, and whether the candidate serves beside the stable.
    fn placement(&self, at: &At) -> Placement {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let total = self.total;
        match o.stable {
            None => Placement { candidate: total, stable: 0, serves: true },
            Some(_) if at.kind == Step::Switch => {
                Placement { candidate: total, stable: warm_replicas(strategy, total), serves: true }
            }
            Some(_) => strategy::of(strategy.type_).place(&self.placing(at)),
        }
    }

    /// Only the stable version and the candidate serve: versions before last that still have pods
    /// (the previous Live Release's warm version, whose window this rollout closes) go to zero
    /// first, with an Event. Whether none of their pods is Ready any more.
    fn clear_older_versions(&mut self) -> bool {
        let o = self.o;
        let mut cleared = true;
        for (name, d) in &o.others_up {
            if d.replicas > 0 {
                self.scale(name, 0);
                let why = format!(
                    "the rollout of {} closes the revert window: {name}, the version before last, stops being kept warm",
                    self.name()
                );
                self.event(false, Reason::RevertWindowClosed, why);
            }
            cleared &= d.available <= 0;
        }
        cleared
    }

    /// With autoRollback off, a person may let the rollout go on past a failure
    /// (`promote --override`): recorded in status, the tally restarted. Whether it was; an override
    /// with nothing to override is refused.
    fn overridden(&mut self, verdict: &Verdict, deadline_missed: bool) -> bool {
        let o = self.o;
        let Some(by) = self.request(OVERRIDE) else { return false };
        let held = self.status.pause.as_ref().filter(|p| p.reason.is_failure()).map(|p| p.message.clone());
        let failure = match verdict {
            Verdict::Failed(why) => Some(Failure::Analysis(why.clone()).message()),
            _ if deadline_missed => Some(Failure::Deadline.message()),
            _ => held,
        };
        let Some(what) = failure.filter(|_| !o.rel.spec.strategy.auto_rollback) else {
            let why = format!(
                "override refused: {} has no failure to go past{}",
                self.name(),
                if o.rel.spec.strategy.auto_rollback { " (autoRollback is on: failures roll back)" } else { "" }
            );
            self.refuse(OVERRIDE, why);
            return false;
        };
        self.status.override_ = Some(OverrideRecord { by: by.clone(), at: o.now.clone(), verdict: what.clone() });
        self.event(false, Reason::Overridden, format!("{by} let the rollout go on past: {what}"));
        self.done_with(OVERRIDE, format!("the rollout goes on past: {what}"));
        self.status.pause = None;
        analysis::restart(&mut self.status.analysis);
        self.status.step_started_at = Some(o.now.clone());
        true
    }

    /// What the app's traffic should reach at this step: the stable version alone until older
    /// versions are gone, a preview, both versions at the step's weight, or the candidate alone at
    /// the switch; with the step's header route.
    fn exposure(&self, at: &At, placement: &Placement, cleared: bool) -> Exposure {
        let o = self.o;
        let me = self.name();
        let spec = &o.rel.spec.strategy;
        let previews = strategy::of(spec.type_).previews() && o.stable.is_some() && at.kind != Step::Switch;
        let mut exposure = match o.stable {
            None => Exposure::only(me.clone()),
            Some(s) if at.kind == Step::Switch && cleared => Exposure::switched(s.name_any(), me.clone()),
            Some(s) if !placement.serves || !cleared => Exposure::held(s.name_any(), me.clone()),
            Some(s) => Exposure::split(s.name_any(), me.clone(), at.weight),
        };
        exposure.preview = previews;
        exposure.header = match spec.blue_green.as_ref().and_then(|b| b.preview_header.clone()) {
            Some(h) if previews => Some(h),
            _ if o.stable.is_some() && cleared => steps::header_at(&at.plan, at.step),
            _ => None,
        };
        exposure
    }

    /// Through a route, the candidate gets more traffic than the route carries now (a higher
    /// weight, a header rule) only once its pods for the step are Ready and behind its Service: a
    /// Gateway sends a backend its share whether or not anything answers there. Lowering is always
    /// allowed. Whether `exposure` is whole (nothing held back).
    fn admit(&self, exposure: &mut Exposure, pods_ready: bool) -> bool {
        if traffic::routing(self.o.rel).is_none() || exposure.candidate.is_none() {
            return true;
        }
        let behind = self.o.canary_endpoints > 0;
        if pods_ready && behind {
            return true;
        }
        let wanted = exposure.clone();
        let carried = if behind { self.status.routing.as_ref().and_then(|r| r.weight).unwrap_or(0) } else { 0 };
        if let Serving::Both { weight, .. } = &mut exposure.serving {
            *weight = (*weight).min(carried);
        }
        if !behind {
            exposure.header = None;
        }
        *exposure == wanted
    }

    /// Both versions at this step's replicas, the traffic as `exposure` says, and the status saying
    /// so: the weight that serves (through a route, what the route carries), and the Ready share.
    fn serve(&mut self, at: &At, placement: Placement, exposure: Exposure) {
        let o = self.o;
        let me = self.name();
        let Placement { candidate, stable, .. } = placement;
        self.scale(&me, candidate);
        if let Some(s) = o.stable {
            self.scale(&s.name_any(), stable);
        }
        self.status.weight = Some(match traffic::routing(o.rel) {
            Some(_) => self.status.routing.as_ref().and_then(|r| r.weight).unwrap_or(0),
            None => served_weight(&exposure.serving, &me, &o.own, &o.other),
        });
        self.status.ready_share = o.stable.map(|_| ready_share(&o.own, &o.other));
        self.expose(exposure);
        self.status.step_weight = Some(at.weight);
        self.status.candidate_replicas = Some(candidate);
        self.status.stable_replicas = o.stable.map(|_| stable);
        self.status.replicas = Some(candidate + o.stable.map_or(0, |_| stable));
    }

    /// The step machine's decision in status, Events and effects. `fresh_tally`: a promotion past
    /// an inconclusive pause starts the tally of what follows afresh.
    fn carry_out(&mut self, decision: Decision, at: &At, fresh_tally: bool, promoted: bool) {
        let o = self.o;
        let strategy = &o.rel.spec.strategy;
        let position = format!("step {}/{}", (at.step + 1).min(at.plan.len()), at.plan.len());
        match decision {
            Decision::Hold { wait, .. } => {
                // A promote of a paused rollout whose step still waits (its pods, its time) goes
                // past the pause: the step goes on waiting, the tally starts again.
                let resumed = promoted && self.phase() == ReleasePhase::Paused;
                self.status.pause = None;
                self.go(Transition::Resumed);
                if resumed {
                    self.take_promote(fresh_tally, format!("resumed the rollout at step {}", at.step + 1));
                }
                self.set(condition::PROGRESSING, true, Reason::RollingOut, &position);
                self.status.message = Some(step_message(&at.plan, at.step));
                let interval = strategy.analysis.as_ref().map(|a| Duration::from(a.interval));
                let left = at.deadline.saturating_sub(at.elapsed);
                self.requeue(steps::recheck_after(wait, left, interval, ROLLOUT_RECHECK));
            }
            Decision::Pause { why, reason, .. } => self.pause(why, reason),
            Decision::Advance { step: next } => {
                self.status.current_step = Some(next as i32);
                // Said at once: the step may begin in the next reconcile (see `chain`).
                self.status.message = Some(step_message(&at.plan, next));
                self.status.step_started_at = Some(o.now.clone());
                self.status.pause = None;
                analysis::next_step(&mut self.status.analysis);
                if promoted {
                    self.take_promote(fresh_tally, format!("promoted the rollout past step {}", at.step + 1));
                }
                if self.phase() == ReleasePhase::Paused {
                    self.go(Transition::Resumed);
                }
                self.requeue(AT_ONCE);
            }
            Decision::Promote => {
                self.go(Transition::WentLive);
                self.status.message = Some("Live".into());
                self.status.pause = None;
                let window: Duration = strategy.revert_window.into();
                self.status.revert_window_ends_at = o
                    .stable
                    .map(|_| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(super::later(o.now.0, window)));
                self.set(condition::PROGRESSING, false, Reason::Complete, "the rollout is complete");
                self.requeue(AT_ONCE);
            }
            Decision::Fail(failure) => self.hold_failure(failure),
        }
        if self.asked(PROMOTE) {
            let why = format!(
                "promote refused: {} is at {position}, which waits for {}, not for a person",
                self.name(),
                match at.kind {
                    Step::Analysis(_) => "its analysis to run its time",
                    Step::Pause(_) => "a failure to be overridden (kubectl phaseloop promote --override)",
                    _ => "its pods",
                }
            );
            self.refuse(PROMOTE, why);
        }
    }

    /// A promote taken: the tally starts again when `fresh_tally` (past an inconclusive pause),
    /// an Event says who did `what`, and the request is recorded as done.
    fn take_promote(&mut self, fresh_tally: bool, what: String) {
        if fresh_tally {
            analysis::restart(&mut self.status.analysis);
        }
        self.event(false, Reason::Promoted, format!("{} {what}", self.requester(PROMOTE)));
        self.done_with(PROMOTE, what);
    }

    /// Paused for a person, with why.
    fn pause(&mut self, reason: PauseReason, message: String) {
        self.go(Transition::Paused);
        self.set(condition::PROGRESSING, true, Reason::Paused, &message);
        self.status.message = Some(message.clone());
        self.status.pause = Some(PauseRecord { reason, message });
    }

    /// A failure with autoRollback off: paused, and a person decides (abort, or override and go on).
    fn hold_failure(&mut self, failure: Failure) {
        let why = failure.message();
        let (reason, event) = match failure {
            Failure::Analysis(_) => (PauseReason::AnalysisFailed, Reason::AnalysisFailed),
            Failure::Deadline => (PauseReason::ProgressDeadlineExceeded, Reason::ProgressDeadlineExceeded),
        };
        let message = format!(
            "{why}; autoRollback is off: kubectl phaseloop abort, or kubectl phaseloop promote --override to go on"
        );
        if self.status.pause.as_ref().map(|p| p.reason) != Some(reason) {
            self.event(true, event, message.clone());
        }
        self.pause(reason, message);
    }
}
