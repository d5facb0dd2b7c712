//! The phase and the conditions, projected from what the decision found ([`Progress`]): `Ready`,
//! `InfrastructureReady`, `Seeded`, `Degraded` and, for an Environment with a `ttl`, `Expiring`.
//! Nothing reads them back.

use super::{Draft, Transition, expiry::Expiry};
use crate::api::{ComponentStatus, EnvironmentPhase, Reason, condition};

/// Progress of the seed Job.
#[derive(Clone, Debug, PartialEq)]
pub enum SeedState {
    /// The spec has no seed.
    NotConfigured,
    /// Waiting for the infrastructure to become ready.
    Waiting,
    Running,
    Succeeded,
    Failed(String),
}

/// What the phase and conditions are projected from.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// What stops provisioning (an invalid spec, a foreign namespace, a branching problem).
    pub blocked: Option<(Reason, String)>,
    pub components: Vec<ComponentStatus>,
    /// Components refused, with the reason.
    pub refused: Vec<(String, String)>,
    pub seed: SeedState,
    pub sleeping: bool,
    pub expiry: Expiry,
    /// The extension annotation, when it cannot be read.
    pub unreadable_extension: Option<String>,
}

impl Progress {
    /// Provisioning stopped before it began, for `reason`.
    pub fn blocked(reason: Reason, message: String, expiry: Expiry) -> Self {
        Progress {
            blocked: Some((reason, message)),
            components: vec![],
            refused: vec![],
            seed: SeedState::Waiting,
            sleeping: false,
            expiry,
            unreadable_extension: None,
        }
    }
}

/// Sets the phase and the conditions from `p`, and the fields they summarize (the components, the
/// seed). A blocked Environment keeps the components it had.
pub(super) fn project(d: &mut Draft<'_>, p: &Progress) {
    if p.blocked.is_none() {
        d.status.components = p.components.clone();
        d.status.seeded = p.seed == SeedState::Succeeded || d.status.seeded;
    }
    let infra_ready = p.blocked.is_none() && p.refused.is_empty() && p.components.iter().all(|c| c.ready);
    let seed_done = matches!(p.seed, SeedState::NotConfigured | SeedState::Succeeded) || d.status.seeded;
    let degraded = if let Some((reason, message)) = &p.blocked {
        Some((*reason, message.clone()))
    } else if !p.refused.is_empty() {
        let list: Vec<String> = p.refused.iter().map(|(c, why)| format!("component {c}: {why}")).collect();
        Some((Reason::ComponentRefused, list.join("; ")))
    } else {
        match &p.seed {
            SeedState::Failed(m) => Some((Reason::SeedFailed, m.clone())),
            _ => None,
        }
    };
    d.go(if degraded.is_some() {
        Transition::Fail
    } else if p.sleeping {
        Transition::Sleep
    } else if infra_ready && seed_done {
        Transition::BecomeReady
    } else {
        Transition::Provision
    });
    let phase = d.phase();
    let ready_message = match phase {
        EnvironmentPhase::Ready => "namespace, infrastructure and seed are ready".into(),
        EnvironmentPhase::Sleeping => "workloads scaled to zero after sleepAfter without activity".into(),
        _ => degraded.as_ref().map(|d| d.1.clone()).unwrap_or_else(|| "provisioning".into()),
    };
    d.set(condition::READY, phase == EnvironmentPhase::Ready, Reason::from(phase), ready_message);
    infrastructure(d, p, infra_ready, degraded.as_ref().map(|d| d.1.as_str()));
    seeded(d, &p.seed);
    match degraded {
        Some((reason, message)) => {
            let blocking = p.blocked.is_some();
            let changed = d.differs(condition::DEGRADED, true, reason);
            if blocking && changed {
                // What blocks provisioning is said once, when it starts (a refused component has
                // its own Event).
                d.event(true, reason, message.clone());
            }
            d.set(condition::DEGRADED, true, reason, message);
        }
        None => d.set(condition::DEGRADED, false, Reason::AsExpected, "spec is valid".into()),
    }
    let invalid = matches!(p.blocked, Some((Reason::InvalidSpec, _)));
    expiring(d, p.expiry, invalid, p.unreadable_extension.as_deref());
}

/// `InfrastructureReady`: every component ready, one refused (`refusal`, the Degraded message), or
/// those still coming up.
fn infrastructure(d: &mut Draft<'_>, p: &Progress, infra_ready: bool, refusal: Option<&str>) {
    let (ok, reason, message) = if infra_ready {
        (true, Reason::AllReady, format!("{} component(s) ready", p.components.len()))
    } else if !p.refused.is_empty() {
        (false, Reason::ComponentRefused, refusal.unwrap_or_default().to_string())
    } else {
        let not_ready: Vec<&str> = p.components.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
        (false, Reason::NotReady, format!("waiting for: {}", not_ready.join(", ")))
    };
    let message = match (&p.blocked, infra_ready) {
        (Some((_, why)), _) => why.clone(),
        _ => message,
    };
    d.set(condition::INFRASTRUCTURE_READY, ok, reason, message);
}

/// `Seeded`, from the seed Job this reconcile saw and whether it ever succeeded.
fn seeded(d: &mut Draft<'_>, seed: &SeedState) {
    let (ok, reason, message) = match (seed, d.status.seeded) {
        (_, true) => (true, Reason::Succeeded, "seed Job succeeded".to_string()),
        (SeedState::NotConfigured, _) => (true, Reason::NoSeed, "no seed configured".into()),
        (SeedState::Failed(m), _) => (false, Reason::Failed, m.clone()),
        (SeedState::Running, _) => (false, Reason::Running, "seed Job running".into()),
        _ => (false, Reason::Waiting, "waiting for the infrastructure".into()),
    };
    d.set(condition::SEEDED, ok, reason, message);
}

/// `Expiring`, on an Environment with a `ttl` only: True while it will delete itself at
/// `status.expiresAt` (`Scheduled`; `ExtensionUnreadable` when the extension annotation, whose
/// value is `unreadable`, cannot be read and is ignored) or does (`TtlReached`), False while a
/// reached expiry is held because the clocks disagree (`ClockSkew`) or the spec is `invalid`.
/// `ClockSkew` and `ExtensionUnreadable` are also said in a Warning Event, once.
pub(super) fn expiring(d: &mut Draft<'_>, expiry: Expiry, invalid: bool, unreadable: Option<&str>) {
    let (ok, reason, message) = match expiry {
        Expiry::Never => {
            d.status.conditions.retain(|c| c.type_ != condition::EXPIRING);
            return;
        }
        _ if invalid => {
            (false, Reason::InvalidSpec, "the spec is invalid: nothing is done, the ttl deletion neither".into())
        }
        Expiry::Held { at, skew } => (false, Reason::ClockSkew, super::expiry::held_because(at, skew)),
        Expiry::Due(at) => (true, Reason::TtlReached, format!("the ttl ended at {at}: deleting")),
        Expiry::At(at) => match unreadable {
            Some(value) => (
                true,
                Reason::ExtensionUnreadable,
                format!(
                    "the annotation {} is {value:?}, not an RFC 3339 time: it is ignored, and the Environment deletes \
                     itself at {at} (its creation plus its ttl, or the last extension read)",
                    crate::controller::environment::EXTEND_ANNOTATION,
                ),
            ),
            None => (true, Reason::Scheduled, format!("deletes itself at {at}")),
        },
    };
    let warns = matches!(reason, Reason::ClockSkew | Reason::ExtensionUnreadable);
    if warns && d.differs(condition::EXPIRING, ok, reason) {
        d.event(true, reason, message.clone());
    }
    d.set(condition::EXPIRING, ok, reason, message);
}
