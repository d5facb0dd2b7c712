//! Before the rollout: the Release the queue lets go runs its tests, then waits at the gate
//! (a freeze, the upstream soak, an approval); an abort ends it. The gate is derived from the spec
//! and the annotations, never from status: a status claiming a rollout the gate never let through
//! is sent back to the gate.

use std::time::Duration;

use super::{Draft, Effect, POLL, TestGround, TestsObserved, Transition};
use crate::{
    api::{
        ApprovalRecord, Reason, ReleasePhase, TestPhase,
        annotation::{ABORT, APPROVED_BY},
        condition,
    },
    controller::release::{
        approval::{self, Approval},
        gate, test_jobs,
        traffic::Exposure,
    },
};

impl Draft<'_> {
    /// The Release the queue lets go: tests, the gate, then the rollout.
    pub(super) fn active(&mut self) {
        self.status.queue_position = None;
        let gated =
            matches!(self.phase(), ReleasePhase::Pending | ReleasePhase::Testing | ReleasePhase::AwaitingApproval);
        if gated {
            if self.asked(ABORT) {
                // Nothing serves from this Release yet: only its test candidate goes away.
                if let Some(TestsObserved { ground: TestGround::Ready(ns), .. }) = &self.o.tests {
                    self.effects.push(Effect::TestCandidate { namespace: ns.clone(), replicas: 0 });
                }
                self.effects.push(Effect::DropTestEnvironment);
                let who = self.requester(ABORT);
                self.done_with(ABORT, "aborted before the rollout");
                self.go(Transition::Failed);
                self.status.message = Some(format!("aborted by {who} before the rollout"));
                return;
            }
            if !self.tests() || !self.gate() {
                return;
            }
        } else if self.approval_required() && !matches!(approval::of(self.o.rel, self.o.promotion), Approval::Given(_))
        {
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
    /// the status was written by someone else. The Release goes back to wait for its approval,
    /// and the stable version gets all traffic back.
    fn gate_not_passed(&mut self) {
        let o = self.o;
        let me = self.name();
        self.scale(&me, 0);
        if let Some(stable) = o.stable {
            use kube::ResourceExt;
            self.scale(&stable.name_any(), self.total);
            let exposure = Exposure::only(stable.name_any());
            self.route(&exposure);
            self.expose(exposure);
        }
        let why = format!(
            "the status says the rollout passed the gate, but the Release was never approved \
             (no {APPROVED_BY} that counts): waiting for approval"
        );
        let why = why.as_str();
        self.event(true, Reason::GateNotPassed, why.to_string());
        self.effects.push(Effect::ClearStatus(vec!["approval", "currentStep", "stepStartedAt", "override"]));
        self.go(Transition::GateNotPassed);
        (self.status.current_step, self.status.step_started_at, self.status.approval) = (None, None, None);
        (self.status.weight, self.status.step_weight, self.status.candidate_replicas) = (Some(0), None, Some(0));
        (self.status.pause, self.status.override_) = (None, None);
        self.status.message = Some(why.into());
        self.set(condition::APPROVED, false, Reason::AwaitingApproval, "approval required");
        self.set(condition::PROGRESSING, false, Reason::GateNotPassed, why);
    }

    /// The Test phase; true once every test passed (or there are none).
    fn tests(&mut self) -> bool {
        let Some(t) = self.o.tests.clone() else { return true };
        let o = self.o;
        let ns = match t.ground {
            TestGround::Refused(why) => {
                self.go(Transition::Failed);
                self.set(condition::TESTED, false, Reason::NoTestEnvironment, &why);
                self.status.message = Some(why);
                return false;
            }
            TestGround::Missing | TestGround::Provisioning => {
                if t.ground == TestGround::Missing {
                    self.effects.push(Effect::EnsureTestEnvironment);
                }
                self.go(Transition::TestsStarted);
                self.status.message = Some("waiting for the test Environment".into());
                self.requeue(POLL);
                return false;
            }
            TestGround::Ready(ns) => ns,
        };
        self.effects.push(Effect::TestCandidate { namespace: ns.clone(), replicas: 1 });
        if !t.candidate_ready {
            self.go(Transition::TestsStarted);
            self.status.message = Some("waiting for the candidate to become ready for its tests".into());
            self.requeue(POLL);
            return false;
        }
        let mut running = false;
        for test in &o.rel.spec.tests {
            let attempt = self.status.tests.iter().find(|r| r.name == test.name).map(|r| r.attempts).unwrap_or(0);
            let phase = if attempt == 0 { None } else { t.jobs.get(&test.name).copied().flatten() };
            let (attempt, phase, message) = match test_jobs::next(test, attempt, phase) {
                test_jobs::Next::Passed => (attempt, TestPhase::Succeeded, None),
                test_jobs::Next::Failed => {
                    (attempt, TestPhase::Failed, Some(format!("test {} failed after {attempt} attempt(s)", test.name)))
                }
                test_jobs::Next::Run(n) => {
                    self.effects.push(Effect::RunTest { namespace: ns.clone(), test: test.name.clone(), attempt: n });
                    running = true;
                    (n, TestPhase::Running, None)
                }
            };
            let job = test_jobs::job_name(o.rel, test, attempt.max(1));
            let result = test_jobs::result(test, attempt, phase, &job, message);
            match self.status.tests.iter_mut().find(|r| r.name == test.name) {
                Some(r) => *r = result,
                None => self.status.tests.push(result),
            }
        }
        if let Some(failed) = self.status.tests.iter().find(|r| r.phase == TestPhase::Failed) {
            let why = failed.message.clone().unwrap_or_else(|| format!("test {} failed", failed.name));
            // The running version is never touched: only the candidate goes away.
            self.effects.push(Effect::TestCandidate { namespace: ns, replicas: 0 });
            self.effects.push(Effect::DropTestEnvironment);
            self.go(Transition::Failed);
            self.status.message = Some(why.clone());
            self.set(condition::TESTED, false, Reason::Failed, &why);
            return false;
        }
        if running {
            self.go(Transition::TestsStarted);
            self.set(condition::TESTED, false, Reason::Running, "tests are running against the candidate");
            self.requeue(POLL);
            return false;
        }
        self.effects.push(Effect::DropTestEnvironment);
        self.set(condition::TESTED, true, Reason::Passed, "every test passed");
        true
    }

    /// The gate: freeze, promotion from upstream, approval. True when open (the rollout starts).
    fn gate(&mut self) -> bool {
        use kube::ResourceExt;
        let o = self.o;
        let promotion = o.promotion;
        if promotion.is_some_and(|p| p.freeze) {
            self.go(Transition::GateShut);
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
                self.go(Transition::GateShut);
                self.set(condition::APPROVED, false, Reason::PromotionPending, &why);
                self.status.message = Some(why);
                self.requeue(wait);
                return false;
            }
        }
        match approval::of(o.rel, promotion) {
            Approval::Given(who) => {
                let record = ApprovalRecord { approved_by: who, approved_at: o.now.clone() };
                self.status.approval.get_or_insert(record);
                self.set(condition::APPROVED, true, Reason::Approved, "the gate is open");
            }
            _ if !self.approval_required() => self.set(condition::APPROVED, true, Reason::Approved, "the gate is open"),
            Approval::Missing => {
                self.go(Transition::GateShut);
                self.status.message = Some("waiting for approval: kubectl phaseloop approve".into());
                self.set(condition::APPROVED, false, Reason::AwaitingApproval, "approval required");
                return false;
            }
            Approval::Refused(reason, why) => {
                self.go(Transition::GateShut);
                self.status.message = Some(format!("waiting for approval: {why}"));
                self.set(condition::APPROVED, false, reason, &why);
                return false;
            }
        }
        self.go(Transition::RolloutStarted);
        self.status.current_step = Some(0);
        self.status.step_started_at = Some(o.now.clone());
        self.status.stable_release = o.stable.map(|s| s.name_any());
        self.status.message = Some("rolling out".into());
        true
    }
}
