//! Pure sleep/wake decisions of `sleepAfter`.

use jiff::{SignedDuration, Timestamp};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const HOUR: Option<std::time::Duration> = Some(std::time::Duration::from_secs(3600));

    #[test]
    fn sleeps_after_the_idle_time_and_not_before() {
        let active = t("2026-11-26T10:00:00Z");
        assert_eq!(
            decide(HOUR, active, None, false, t("2026-11-26T10:59:59Z")),
            Decision::Awake { sleep_at: Some(t("2026-11-26T11:00:00Z")) }
        );
        assert_eq!(decide(HOUR, active, None, false, t("2026-11-26T11:00:00Z")), Decision::Sleep);
    }

    #[test]
    fn stays_asleep_until_activity_or_the_wake_annotation() {
        let active = t("2026-11-26T10:00:00Z");
        let slept = Some(t("2026-11-26T11:00:00Z"));
        assert_eq!(decide(HOUR, active, slept, false, t("2026-11-27T00:00:00Z")), Decision::Sleep);
        assert_eq!(decide(HOUR, active, slept, true, t("2026-11-27T00:00:00Z")), Decision::Wake);
        let new_release = t("2026-11-26T12:00:00Z");
        assert_eq!(decide(HOUR, new_release, slept, false, t("2026-11-26T12:00:01Z")), Decision::Wake);
        let same_second = t("2026-11-26T11:00:00Z");
        assert_eq!(decide(HOUR, same_second, slept, false, same_second), Decision::Wake);
    }

    #[test]
    fn removing_sleep_after_wakes_a_sleeping_environment() {
        let active = t("2026-11-26T10:00:00Z");
        assert_eq!(decide(None, active, Some(active), false, active), Decision::Wake);
        assert_eq!(decide(None, active, None, false, active), Decision::Awake { sleep_at: None });
    }

    #[test]
    fn a_wake_request_postpones_sleep() {
        let active = t("2026-11-26T10:00:00Z");
        assert!(matches!(decide(HOUR, active, None, true, t("2026-11-26T12:00:00Z")), Decision::Awake { .. }));
    }
}
