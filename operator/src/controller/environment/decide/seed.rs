//! The seed: a Job run once, after the infrastructure is ready.

use super::{Draft, Effect, SeedState};
use crate::{api::EnvironmentSpec, controller::environment::desired};

/// The seed's progress; creates its Job once the infrastructure is ready (`infra_ready`).
pub(super) fn decide(d: &mut Draft<'_>, spec: &EnvironmentSpec, ns: &str, infra_ready: bool) -> SeedState {
    let Some(seed) = &spec.seed else { return SeedState::NotConfigured };
    if d.status.seeded {
        return SeedState::Succeeded;
    }
    if !infra_ready {
        return SeedState::Waiting;
    }
    let Some(job) = d.o.seed_job else {
        d.effects.push(Effect::Seed(Box::new(desired::seed_job(d.o.env, ns, seed))));
        return SeedState::Running;
    };
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
    if has("Complete") {
        SeedState::Succeeded
    } else if has("Failed") {
        SeedState::Failed(format!("seed Job {} failed after {} retries", desired::SEED_JOB_NAME, seed.retries))
    } else {
        SeedState::Running
    }
}
