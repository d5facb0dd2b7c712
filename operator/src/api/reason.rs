//! The reasons of phaseloop's conditions and Events, as one enum: code compares variants, never
//! strings, and the API shows each variant's name.

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// A condition's or an Event's reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[$doc])* $name,)*
        }

        impl Reason {
            /// The reason as the API shows it (the variant's name).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)*
                }
            }

            /// Every reason, for tests of the whole set.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)*];
        }
    };
}

reasons! {
    /// Nothing is wrong.
    AsExpected,
    /// The spec cannot be acted upon; the message says why.
    InvalidSpec,
    /// A quota of the namespace would be exceeded by what the spec asks for.
    QuotaExceeded,
    /// A name phaseloop would write is held by something that is not this object's.
    NameClash,

    // Where a Release is (Ready, Available and phase Events carry the phase's name).
    Pending,
    Testing,
    AwaitingApproval,
    Progressing,
    Paused,
    Live,
    Superseded,
    Reverted,
    RolledBack,
    Failed,

    // Progressing.
    RollingOut,
    RollingBack,
    Complete,
    GateNotPassed,

    // Tested.
    NoTestEnvironment,
    Running,
    Passed,

    // Approved.
    PromotionPending,
    Approved,
    /// An approval by the Release's own author, where the Environment asks for separation of duties.
    ApprovedByAuthor,
    /// Separation of duties, and the Release's author is not recorded.
    AuthorUnknown,

    // Paused, and the failures that pause or roll back.
    AnalysisInconclusive,
    AnalysisFailed,
    ProgressDeadlineExceeded,
    Overridden,
    /// A person promoted a paused rollout past its step.
    Promoted,

    // RevertReady, and the revert window.
    Warm,
    Warming,
    Cold,
    Reverting,
    RevertTimedOut,
    WindowEnded,
    WindowClosed,
    NoPreviousVersion,
    RevertRefused,
    RevertWindowCold,
    RevertWindowClosed,

    // Requests (annotations) that cannot be carried out where the Release is.
    RequestRefused,
    RequestsHandled,
    PromoteRefused,
    AbortRefused,
    OverrideRefused,

    // TrafficRouted (with a Gateway API route).
    Routed,
    RouteNotFound,
    RuleNotFound,
    RouteUpdating,
    RouteConflict,

    // Deleting.
    WaitingUntilNotServing,
    DeletionWaiting,
    CandidateDeleted,

    // ScalingActive and ScalingLimited (the autoscaler's own verdicts come from `scaling::Why`).
    ValidMetric,
    EnvironmentAsleep,
    ConflictingAutoscaler,
    DesiredWithinRange,
    ScaledUp,
    ScaledDown,
    // The autoscaler's verdicts (`scaling::Why`).
    WithinTolerance,
    FollowsLoad,
    Stabilized,
    RateLimited,
    TooManyReplicas,
    TooFewReplicas,
    DirectionDisabled,
    MetricUnavailable,
    FallbackReplicas,

    // Where an Environment is (its Ready condition and phase Events carry the phase's name;
    // `Failed` is shared with Releases).
    Provisioning,
    Ready,
    Sleeping,
    Expiring,
    Terminating,
    /// Sleep: `sleepAfter` without Release activity held the workloads at zero.
    Slept,
    /// Wake: the wake annotation or a new Release brought them back.
    Woken,

    // An Environment's infrastructure and seed.
    AllReady,
    NotReady,
    /// A component cannot be applied; the message says why (the others are applied).
    ComponentRefused,
    NoSeed,
    Waiting,
    Succeeded,
    SeedFailed,

    // What blocks an Environment from provisioning.
    /// The namespace exists and is someone else's.
    NamespaceConflict,
    /// `spec.from` names an Environment that does not exist (nor does a snapshot of it).
    ParentNotFound,
    /// `spec.from` forms a cycle, or the chain of parents runs into one.
    ParentCycle,
    /// More Environments above a branch than `environment::decide::MAX_DEPTH`.
    BranchTooDeep,

    // Expiring (an Environment with a ttl).
    /// It deletes itself at `status.expiresAt`.
    Scheduled,
    /// The ttl is reached: it deletes itself.
    TtlReached,
    /// The operator's clock and the API server's disagree: no ttl deletion until they agree.
    ClockSkew,
    /// The extension annotation is not a time phaseloop can read: ignored.
    ExtensionUnreadable,

    // Promotion requests (`promotion.mode: Automatic`).
    /// A version Live upstream for its soak: its Release was opened here.
    PromotionRequested,
    /// A request that had not started was deleted for a newer upstream version.
    PromotionSuperseded,
}

/// The shared reasons as strings, for code that builds conditions from `&str`.
pub const INVALID_SPEC: &str = Reason::InvalidSpec.as_str();
pub const AS_EXPECTED: &str = Reason::AsExpected.as_str();
pub const QUOTA_EXCEEDED: &str = Reason::QuotaExceeded.as_str();

impl From<crate::api::ReleasePhase> for Reason {
    fn from(phase: crate::api::ReleasePhase) -> Self {
        use crate::api::ReleasePhase as P;
        match phase {
            P::Pending => Reason::Pending,
            P::Testing => Reason::Testing,
            P::AwaitingApproval => Reason::AwaitingApproval,
            P::Progressing => Reason::Progressing,
            P::Paused => Reason::Paused,
            P::Live => Reason::Live,
            P::Superseded => Reason::Superseded,
            P::Reverted => Reason::Reverted,
            P::RolledBack => Reason::RolledBack,
            P::Failed => Reason::Failed,
        }
    }
}

impl From<crate::api::EnvironmentPhase> for Reason {
    fn from(phase: crate::api::EnvironmentPhase) -> Self {
        use crate::api::EnvironmentPhase as P;
        match phase {
            P::Provisioning => Reason::Provisioning,
            P::Ready => Reason::Ready,
            P::Sleeping => Reason::Sleeping,
            P::Expiring => Reason::Expiring,
            P::Terminating => Reason::Terminating,
            P::Failed => Reason::Failed,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_a_condition_reason_the_api_accepts() {
        // metav1.Condition: `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`, at most 1024 characters.
        for r in Reason::ALL {
            let s = r.as_str();
            assert!(s.chars().next().is_some_and(|c| c.is_ascii_alphabetic()), "{s}");
            assert!(s.chars().all(|c| c.is_ascii_alphanumeric()), "{s}");
        }
        assert_eq!(Reason::from(crate::api::ReleasePhase::RolledBack).as_str(), "RolledBack");
        assert_eq!(Reason::from(crate::api::EnvironmentPhase::Sleeping).as_str(), "Sleeping");
    }
}
