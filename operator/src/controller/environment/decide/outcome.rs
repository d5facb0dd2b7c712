//! What [`super::decide`] returns: the next status, the effects that carry it out, and the
//! transitions it made.

use std::time::Duration;

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{LimitRange, Namespace, ResourceQuota},
    networking::v1::NetworkPolicy,
};
use kube::api::{ApiResource, DynamicObject};

use crate::api::{EnvironmentPhase, EnvironmentStatus, Reason, Tier};

/// A change the decision asks for; `reconcile/act.rs` carries out [`Outcome::effects`] in order,
/// then writes the status, then carries out [`Outcome::then`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Put the finalizer on; nothing else happens before it is there (no namespace a deletion
    /// could orphan).
    AddFinalizer,
    /// Take the finalizer off: the namespace is gone, the deletion goes on.
    RemoveFinalizer,
    /// The namespace, applied (skipped when it already is this object).
    Namespace(Box<Namespace>),
    /// The ResourceQuota (`None`: deleted where phaseloop made one).
    Quota(Option<Box<ResourceQuota>>),
    /// The LimitRange of container defaults (`None`: deleted).
    Defaults(Option<Box<LimitRange>>),
    /// The NetworkPolicy of `isolation: Namespace` (`None`: deleted).
    Isolation(Option<Box<NetworkPolicy>>),
    /// One object of infrastructure `component`, applied unless it already is this object. If the
    /// API server refuses it, the component is refused ([`super::refused_at_apply`]) and its
    /// remaining effects are skipped.
    Apply {
        component: String,
        resource: ApiResource,
        object: Box<DynamicObject>,
    },
    /// An object phaseloop applied for `component` (`None`: a component removed from the spec)
    /// and no longer declares, deleted.
    Prune {
        component: Option<String>,
        resource: ApiResource,
        name: String,
    },
    /// The seed Job, created once (never re-applied: a Job's template is immutable).
    Seed(Box<Job>),
    /// A Release of the parent's Live version deployed into the branch (the server-side apply
    /// body).
    Branch(Box<serde_json::Value>),
    /// A promotion request: the Release opened here for a version Live upstream, created once
    /// (an existing one of that name is left as it is).
    Promote(Box<crate::api::Release>),
    /// A promotion request that had not started, deleted for a newer version (only while it is
    /// still the object decided on: its `resourceVersion` is the delete's precondition).
    Supersede {
        name: String,
        resource_version: String,
    },
    Event {
        warning: bool,
        reason: Reason,
        note: String,
    },
    /// The ttl is reached: delete this Environment (after the status says `Expiring`); `count`:
    /// the first time, counted in `phaseloop_environment_expirations_total`.
    Expire {
        tier: Tier,
        count: bool,
    },
    /// Remove a one-shot annotation (the wake request) once the status saying so is written.
    Consume(&'static str),
    /// Delete the namespace (a production one after setting its `allow-delete` annotation, which
    /// the admission policy asks for).
    DeleteNamespace {
        production: bool,
    },
}

/// The phases of an Environment and the changes between them: the transition table (drawn in
/// docs/architecture.md). An Environment's phase follows what is observed each time (level-based),
/// so most phases can follow most others; what the table rules out is leaving `Terminating`, and
/// leaving `Expiring` for anything but `Terminating`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Provisioning: something is still coming up (a new Environment, a component not ready).
    Provision,
    /// Namespace, infrastructure and seed are ready.
    BecomeReady,
    /// `sleepAfter` without Release activity: the workloads are held at zero.
    Sleep,
    /// Blocked (an invalid spec, a foreign namespace, a branching problem), a component refused,
    /// or the seed failed.
    Fail,
    /// The ttl is reached (and the clocks agree): the Environment deletes itself.
    Expire,
    /// Deleted: the namespace goes first.
    Terminate,
}

impl Transition {
    /// The phase it enters.
    pub fn to(self) -> EnvironmentPhase {
        use EnvironmentPhase as P;
        match self {
            Self::Provision => P::Provisioning,
            Self::BecomeReady => P::Ready,
            Self::Sleep => P::Sleeping,
            Self::Fail => P::Failed,
            Self::Expire => P::Expiring,
            Self::Terminate => P::Terminating,
        }
    }

    /// The phases it may come from (`Provisioning` includes a new Environment without a phase).
    pub fn from(self) -> &'static [EnvironmentPhase] {
        use EnvironmentPhase as P;
        const LIVING: &[P] = &[P::Provisioning, P::Ready, P::Sleeping, P::Failed];
        match self {
            Self::Provision | Self::BecomeReady | Self::Sleep | Self::Fail | Self::Expire => LIVING,
            Self::Terminate => &[P::Provisioning, P::Ready, P::Sleeping, P::Failed, P::Expiring],
        }
    }
}

/// What [`super::decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The status to write (only written when it differs from the stored one); `None`: none at
    /// all (the finalizer goes on first).
    pub status: Option<EnvironmentStatus>,
    /// Carried out before the status is written.
    pub effects: Vec<Effect>,
    /// Carried out after it: whoever sees these sees the status that explains them.
    pub then: Vec<Effect>,
    /// When to look again (`None`: on the next change).
    pub requeue: Option<Duration>,
    /// Something no watch event announces is awaited (the namespace being deleted): the
    /// reconcile ends as `Error::Waiting`, looked at again shortly.
    pub waiting: Option<String>,
    /// The transitions made.
    pub transitions: Vec<Transition>,
    /// What the phase and conditions were projected from, kept so that a refusal learnt while
    /// acting projects them again ([`super::refused_at_apply`]).
    pub(super) progress: Option<super::status::Progress>,
}

impl Outcome {
    /// Only `effects`, no status.
    pub(super) fn only(effects: Vec<Effect>) -> Self {
        Outcome {
            status: None,
            effects,
            then: vec![],
            requeue: None,
            waiting: None,
            transitions: vec![],
            progress: None,
        }
    }

    /// The events among the effects (for tests and logs).
    pub fn events(&self) -> Vec<Reason> {
        self.effects
            .iter()
            .chain(&self.then)
            .filter_map(|e| match e {
                Effect::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_is_never_left_and_expiring_only_for_terminating() {
        use Transition::*;
        for t in [Provision, BecomeReady, Sleep, Fail, Expire, Terminate] {
            assert!(!t.from().contains(&EnvironmentPhase::Terminating), "{t:?} leaves Terminating");
            assert_eq!(t.from().contains(&EnvironmentPhase::Expiring), t == Terminate, "{t:?}");
        }
    }
}
