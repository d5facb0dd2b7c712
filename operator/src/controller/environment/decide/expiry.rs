//! The ttl: when an Environment deletes itself, the extension annotation, and the clock rule: a
//! ttl deletion happens only while this operator's clock agrees with the API server's, so a
//! replica whose clock runs ahead never deletes an Environment early.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::{api::Environment, controller::environment::EXTEND_ANNOTATION};

/// How far this operator's clock may be from the API server's for a ttl deletion to go ahead.
/// The skew is measured from the `Date` header of every API response (whole seconds, so about a
/// second of it is measurement); beyond this bound ttl deletions wait until the clocks agree.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5);

/// The extension annotation, as read.
#[derive(Clone, Debug, PartialEq)]
pub enum Extension {
    None,
    At(Timestamp),
    /// Not an RFC 3339 time (stored before the admission policy refused such values): ignored.
    Unreadable(String),
}

/// The extension annotation of `env`.
pub fn extension(env: &Environment) -> Extension {
    match env.annotations().get(EXTEND_ANNOTATION) {
        None => Extension::None,
        Some(v) => v.parse::<Timestamp>().map_or_else(|_| Extension::Unreadable(v.clone()), Extension::At),
    }
}

/// When a `ttl` Environment deletes itself: `creationTimestamp + ttl`, moved later by the extension
/// annotation, and never earlier than it was (`previous`, the expiry in status): an extension, once
/// made, holds even if the annotation is later set to an earlier time or removed.
pub fn expires_at(env: &Environment, previous: Option<&Time>) -> Option<Time> {
    let created = env.metadata.creation_timestamp.as_ref()?;
    let ttl: std::time::Duration = env.spec.ttl?.into();
    let base = created.0.checked_add(SignedDuration::try_from(ttl).ok()?).ok()?;
    let extended = match extension(env) {
        Extension::At(t) => Some(t),
        Extension::None | Extension::Unreadable(_) => None,
    };
    let latest = [extended, previous.map(|p| p.0)].into_iter().flatten().fold(base, Timestamp::max);
    Some(Time(latest))
}

/// What the ttl asks for now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expiry {
    /// No ttl.
    Never,
    /// Not reached: it expires at this time.
    At(Timestamp),
    /// Reached, and the clocks agree: the Environment deletes itself.
    Due(Timestamp),
    /// Reached by this operator's clock or by the API server's, but they disagree by more than
    /// [`MAX_CLOCK_SKEW`], or the API server's time is not known (`skew: None`): nothing is deleted.
    Held { at: Timestamp, skew: Option<SignedDuration> },
}

/// The clock rule: whether expiry `at` is reached at `now` (this operator's clock), given `skew`,
/// this operator's clock minus the API server's as last measured.
pub fn judge(at: Option<Timestamp>, now: Timestamp, skew: Option<SignedDuration>) -> Expiry {
    let Some(at) = at else { return Expiry::Never };
    let server_now = skew.and_then(|s| now.checked_sub(s).ok());
    if now < at && server_now.is_none_or(|n| n < at) {
        return Expiry::At(at);
    }
    match skew {
        Some(s) if s.abs() <= MAX_CLOCK_SKEW => Expiry::Due(at),
        _ => Expiry::Held { at, skew },
    }
}

/// Why a reached expiry is held, in words.
pub fn held_because(at: Timestamp, skew: Option<SignedDuration>) -> String {
    let bound = hms(MAX_CLOCK_SKEW);
    match skew {
        Some(s) if s.is_positive() => format!(
            "the ttl ended at {at} by this operator's clock, but that clock is {} ahead of the API server's (at \
             most {bound} allowed): no ttl deletion until they agree",
            hms(s)
        ),
        Some(s) => format!(
            "the ttl ended at {at} by the API server's clock, but this operator's clock is {} behind it (at most \
             {bound} allowed): no ttl deletion until they agree",
            hms(s.abs())
        ),
        None => format!(
            "the ttl ended at {at}, but the API server's time is not known (no response has carried a Date \
             header): no ttl deletion until it is"
        ),
    }
}

/// A duration as Go and kubectl write it, to the nearest second: `3h0m2s`, `45s` (a skew measured
/// at 2h59m59.6s reads as the 3h it is).
pub fn hms(d: SignedDuration) -> String {
    let secs = ((d.as_millis().unsigned_abs() + 500) / 1000) as u64;
    let sign = if d.is_negative() { "-" } else { "" };
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, _) => format!("{sign}{m}m{s}s"),
        _ => format!("{sign}{h}h{m}m{s}s"),
    }
}
