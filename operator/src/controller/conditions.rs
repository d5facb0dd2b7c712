//! Pure helpers for `metav1.Condition` lists (Kubernetes API conventions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as a controller wants it; [`upsert`] fills in the bookkeeping fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Sets `desired` in `conditions`. `lastTransitionTime` only moves when the status flips, so a
/// repeated reconcile produces an identical list (and therefore no write).
pub fn upsert(conditions: &mut Vec<Condition>, desired: Desired<'_>, generation: Option<i64>, now: &Time) {
    let status = if desired.status { "True" } else { "False" }.to_string();
    let message: String = desired.message.chars().take(1024).collect();
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = desired.reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: desired.type_.to_string(),
            status,
            reason: desired.reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Whether setting `desired` would change the condition's status or reason (a transition worth an
/// Event): the stored reason is compared as what it is, never read back as state.
pub fn differs(conditions: &[Condition], desired: &Desired<'_>) -> bool {
    let status = if desired.status { "True" } else { "False" };
    find(conditions, desired.type_).is_none_or(|c| c.status != status || c.reason != desired.reason)
}

/// The condition of the given type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn degraded(status: bool, msg: &str) -> Desired<'static> {
        Desired { type_: "Degraded", status, reason: "InvalidSpec", message: msg.into() }
    }

    #[test]
    fn adds_a_missing_condition() {
        let mut c = vec![];
        upsert(&mut c, degraded(true, "bad"), Some(3), &at(10));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].observed_generation, Some(3));
        assert_eq!(c[0].last_transition_time, at(10));
    }

    #[test]
    fn keeps_transition_time_when_status_is_unchanged() {
        let mut c = vec![];
        upsert(&mut c, degraded(true, "bad"), Some(1), &at(10));
        upsert(&mut c, degraded(true, "still bad"), Some(2), &at(20));
        assert_eq!(c[0].last_transition_time, at(10));
        assert_eq!(c[0].message, "still bad");
        assert_eq!(c[0].observed_generation, Some(2));
    }

    #[test]
    fn moves_transition_time_when_status_flips() {
        let mut c = vec![];
        upsert(&mut c, degraded(true, "bad"), Some(1), &at(10));
        upsert(&mut c, degraded(false, "fine"), Some(1), &at(20));
        assert_eq!(c[0].last_transition_time, at(20));
        assert!(!is_true(&c, "Degraded"));
    }

    #[test]
    fn bounds_the_message() {
        let mut c = vec![];
        upsert(&mut c, degraded(true, &"x".repeat(5000)), None, &at(1));
        assert_eq!(c[0].message.len(), 1024);
    }
}
