//! What [`super::decide`] returns: the next status, the effects that carry it out, and the
//! transitions it made.

use std::time::Duration;

use crate::{
    api::{Reason, ReleasePhase, ReleaseStatus},
    controller::release::traffic::Exposure,
};

/// A change the decision asks for; `reconcile/act.rs` carries it out, in order, before the status
/// write (one-shot annotations are removed after it).
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The workload of Release `release` (this one or a sibling) at `replicas`.
    Scale {
        release: String,
        replicas: i32,
    },
    /// The app's traffic as `Exposure` says, through the app's router.
    Expose(Exposure),
    /// Remove a one-shot annotation that has been handled (carried out or refused).
    Consume(&'static str),
    Event {
        warning: bool,
        reason: Reason,
        note: String,
    },
    /// Add (true) or remove the serving finalizer of this Release.
    Finalizer(bool),
    /// Remove these status fields whoever wrote them (a server-side apply leaves the fields of
    /// other field managers alone): what a forged status claimed.
    ClearStatus(Vec<&'static str>),
    /// Finished Releases' workloads to zero (`keep`) or deleted (beyond the history limit), where
    /// they exist.
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
    /// Rules for an HTTPRoute the Release steers, written if the route is still as read.
    Route(crate::controller::release::traffic::gateway::RoutePatch),
    /// The autoscaler decided (for the scaling metrics): the load read, the total before and after.
    Scaled {
        observed: Option<f64>,
        from: i32,
        to: i32,
    },
}

/// Every change of phase a decision makes, with the phases it may come from: the transition
/// table of the Release lifecycle (docs/architecture.md draws it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A new Release, or one behind another of its app: it waits its turn.
    Queued,
    /// Its tests run against a one-replica candidate.
    TestsStarted,
    /// The gate is shut: a freeze, the upstream soak, an approval.
    GateShut,
    /// The status claims a rollout the gate never let through: back to the gate.
    GateNotPassed,
    /// The gate opened: the rollout starts.
    RolloutStarted,
    /// A pause step, an inconclusive analysis, or a failure with `autoRollback: false`.
    Paused,
    /// Promoted or overridden past a pause.
    Resumed,
    /// A failure, an abort or a deletion hands the app back to the stable version.
    RollbackStarted,
    /// The stable version serves alone again.
    RolledBack,
    /// Every step done and the previous version warm: the candidate serves the app.
    WentLive,
    /// A person reverted it: the previous version serves again.
    Reverted,
    /// A newer Release went Live, or overtook it before its rollout.
    Superseded,
    /// A test failed, an abort before the rollout, no ground for the tests, or a rollout that
    /// failed with nothing to return to.
    Failed,
}

impl Transition {
    /// The phase it enters.
    pub fn to(self) -> ReleasePhase {
        use ReleasePhase as P;
        match self {
            Self::Queued => P::Pending,
            Self::TestsStarted => P::Testing,
            Self::GateShut | Self::GateNotPassed => P::AwaitingApproval,
            Self::RolloutStarted | Self::Resumed | Self::RollbackStarted => P::Progressing,
            Self::Paused => P::Paused,
            Self::RolledBack => P::RolledBack,
            Self::WentLive => P::Live,
            Self::Reverted => P::Reverted,
            Self::Superseded => P::Superseded,
            Self::Failed => P::Failed,
        }
    }

    /// The phases it may come from (`Pending` includes a new Release without a phase).
    pub fn from(self) -> &'static [ReleasePhase] {
        use ReleasePhase as P;
        const WAITING: &[P] = &[P::Pending, P::Testing, P::AwaitingApproval];
        const ROLLING: &[P] = &[P::Progressing, P::Paused];
        match self {
            Self::Queued | Self::TestsStarted | Self::GateShut | Self::RolloutStarted => WAITING,
            Self::GateNotPassed => &[P::Progressing, P::Paused, P::Live],
            Self::Paused | Self::RollbackStarted | Self::RolledBack => ROLLING,
            Self::Resumed => &[P::Paused],
            Self::WentLive => &[P::Progressing],
            Self::Reverted => &[P::Live],
            Self::Superseded => &[P::Pending, P::Testing, P::AwaitingApproval, P::Live],
            Self::Failed => &[P::Pending, P::Testing, P::AwaitingApproval, P::Progressing, P::Paused],
        }
    }
}

/// What [`super::decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: ReleaseStatus,
    pub effects: Vec<Effect>,
    /// Another Release's status, written after this one's (a revert restores the previous version
    /// only after this one is written `Reverted`, so no reconcile sees two Live Releases).
    pub restored: Option<(String, ReleaseStatus)>,
    /// When to look again (`None`: on the next change).
    pub requeue: Option<Duration>,
    /// The transitions made, in order.
    pub transitions: Vec<Transition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_enters_a_phase_it_cannot_come_from_except_staying_put() {
        use Transition::*;
        let all = [
            Queued,
            TestsStarted,
            GateShut,
            GateNotPassed,
            RolloutStarted,
            Paused,
            Resumed,
            RollbackStarted,
            RolledBack,
            WentLive,
            Reverted,
            Superseded,
            Failed,
        ];
        for t in all {
            assert!(!t.from().is_empty(), "{t:?}");
            // Final phases are never left.
            assert!(t.from().iter().all(|p| !p.is_terminal()), "{t:?} leaves a final phase");
        }
    }
}
