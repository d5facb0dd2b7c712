//! Sleep: `sleepAfter` without Release activity holds the workloads at zero; activity or the wake
//! annotation brings them back.

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::api::{Environment, EnvironmentStatus, Release};

/// What to do about sleep in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Stay (or become) awake; sleep is due at the given time, if ever.
    Awake { sleep_at: Option<Timestamp> },
    /// Hold workloads at zero (or keep them there): `status.sleptAt` says so to the Release
    /// controller, which owns the app's replicas; infrastructure is applied at zero.
    Sleep,
    /// Wake: the Release controller returns each app to its total before the sleep.
    Wake,
}

/// Decides sleep for an Environment whose last Release activity was `last_activity`.
///
/// `slept_at` is when workloads were put to zero, if they are; `wake_requested` is the
/// `phaseloop.dev/wake` annotation. Activity at or after the moment of sleeping also wakes (times
/// have second precision, and sleep only ever happens `sleepAfter` after the latest activity), which
/// is how a new Release wakes its Environment.
pub fn decide(
    sleep_after: Option<std::time::Duration>,
    last_activity: Timestamp,
    slept_at: Option<Timestamp>,
    wake_requested: bool,
    now: Timestamp,
) -> Decision {
    let Some(after) = sleep_after.and_then(|d| SignedDuration::try_from(d).ok()) else {
        return if slept_at.is_some() { Decision::Wake } else { Decision::Awake { sleep_at: None } };
    };
    if let Some(slept) = slept_at {
        return if wake_requested || last_activity >= slept { Decision::Wake } else { Decision::Sleep };
    }
    let sleep_at = last_activity.checked_add(after).unwrap_or(Timestamp::MAX);
    if !wake_requested && now >= sleep_at { Decision::Sleep } else { Decision::Awake { sleep_at: Some(sleep_at) } }
}

/// Last Release activity in the namespace: the Environment's creation, the newest Release's
/// creation, or the last wake, whichever is latest.
pub fn last_activity(env: &Environment, releases: &[Release], status: &EnvironmentStatus, now: Timestamp) -> Timestamp {
    let created = env.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let release_times = releases.iter().filter_map(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));
    status.last_activity.iter().map(|t| t.0).chain(release_times).fold(created, Timestamp::max)
}

/// Whether the wake annotation is set.
pub fn wake_requested(env: &Environment) -> bool {
    env.annotations().contains_key(crate::api::annotation::WAKE)
}
