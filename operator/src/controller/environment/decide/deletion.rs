//! Deletion: the namespace goes first (phase `Terminating` while it does), and the finalizer comes
//! off once it is gone. A namespace that is not this Environment's is never deleted, and a
//! production namespace is deleted only with the annotation its protection asks for, which the
//! Environment's own deletion needed too.

use super::{Draft, Effect, NamespaceSeen, Observation, Outcome, Transition};
use crate::{api::Tier, controller::environment::namespace_of};

/// The decision for an Environment being deleted that still holds the finalizer.
pub(super) fn decide(o: &Observation<'_>) -> Outcome {
    let mut d = Draft::new(o);
    d.go(Transition::Terminate);
    let ns = namespace_of(o.env);
    match o.namespace {
        NamespaceSeen::Ours { deleting } => {
            if !deleting {
                d.effects.push(Effect::DeleteNamespace { production: o.env.spec.tier == Tier::Production });
            }
            d.waiting = Some(format!("namespace {ns} is being deleted"));
        }
        NamespaceSeen::Absent | NamespaceSeen::Foreign => d.then.push(Effect::RemoveFinalizer),
    }
    d.into_outcome(None)
}
