//! The conditions every decision ends with, projected from the typed state in status: `Degraded`
//! (what blocks the Release, or how its rollout failed), `Ready` and `Available` (the app serves
//! from it). Nothing reads them back.

use super::Draft;
use crate::{
    api::{Reason, ReleasePhase, condition},
    controller::conditions as cond,
};

/// Sets `Degraded`, `Ready` and `Available`. `blocked`: what stopped the Release from acting (an
/// invalid spec, a name clash), published as an Event when it is new.
pub(super) fn project(d: &mut Draft<'_>, blocked: Option<(Reason, String)>) {
    let phase = d.phase();
    let (degraded, reason, message) = match blocked {
        Some((reason, message)) => (true, reason, message),
        None => match (phase, &d.status.rollback, &d.status.pause) {
            (ReleasePhase::RolledBack, Some(r), _) => (true, Reason::RolledBack, r.message.clone()),
            (ReleasePhase::Failed, Some(r), _) => (true, Reason::Failed, r.message.clone()),
            (ReleasePhase::Paused, _, Some(p)) if p.reason.is_failure() => {
                let reason = match p.reason {
                    crate::api::PauseReason::ProgressDeadlineExceeded => Reason::ProgressDeadlineExceeded,
                    _ => Reason::AnalysisFailed,
                };
                (true, reason, p.message.clone())
            }
            _ => (false, Reason::AsExpected, "spec is valid".to_string()),
        },
    };
    let desired = cond::Desired {
        type_: condition::DEGRADED,
        status: degraded,
        reason: reason.as_str(),
        message: message.clone(),
    };
    let blocking = matches!(reason, Reason::InvalidSpec | Reason::NameClash);
    if blocking && cond::differs(&d.status.conditions, &desired) {
        d.event(true, reason, message.clone());
    }
    d.set(condition::DEGRADED, degraded, reason, &message);

    let live = phase == ReleasePhase::Live;
    let message = if live {
        format!("app {} serves from this Release", d.o.rel.spec.app)
    } else {
        d.status.message.clone().unwrap_or_else(|| phase.as_str().to_string())
    };
    d.set(condition::READY, live, Reason::from(phase), &message);
    d.set(condition::AVAILABLE, live, Reason::from(phase), &message);
}
