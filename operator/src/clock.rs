//! The operator's clock, and how far it is from the API server's. Every decision that depends on
//! the time (an Environment's ttl and sleep, a Release's timed steps and windows) reads [`now`], so
//! a test can run an operator whose clock is wrong: [`set_offset`] moves this process's clock, as
//! a badly synchronized node would. The client measures the skew from the `Date` header of every
//! API response ([`skew_from`], `crate::client`); an Environment's ttl deletion waits while it is
//! too large.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};

/// How far this process's clock is moved from the machine's (a test hook; zero unless set).
static OFFSET: OnceLock<SignedDuration> = OnceLock::new();

/// Test hook (`--test-clock-offset`): runs this process's clock `offset` ahead of the machine's
/// (behind when negative). Set once, at start; later calls are ignored.
pub fn set_offset(offset: SignedDuration) {
    let _ = OFFSET.set(offset);
}

/// This process's clock, to the nanosecond.
pub fn now_precise() -> Timestamp {
    let now = Timestamp::now();
    match OFFSET.get() {
        Some(offset) => now.checked_add(*offset).unwrap_or(now),
        None => now,
    }
}

/// Now, to the second: the precision of `metav1.Time`, so a status computed now compares equal to
/// the one stored.
pub fn now() -> Timestamp {
    Timestamp::from_second(now_precise().as_second()).expect("now is representable")
}

/// This process's clock (`local`, when a response arrived) minus the API server's, from the `Date`
/// header of the response (`date`, RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`). The header has
/// whole seconds, so the middle of its second is taken: the measurement is within half a second
/// plus the response's latency.
pub fn skew_from(date: &str, local: Timestamp) -> Option<SignedDuration> {
    let server = jiff::fmt::rfc2822::parse(date).ok()?.timestamp();
    let middle = server.checked_add(SignedDuration::from_millis(500)).ok()?;
    Some(local.duration_since(middle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_measured_from_the_date_header() {
        let server = "Sat, 26 Dec 2026 10:00:00 GMT";
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let skew = |local: &str| skew_from(server, at(local)).map(|d| d.as_millis());
        assert_eq!(skew("2026-12-26T10:00:00.5Z"), Some(0), "the middle of the header's second");
        assert_eq!(skew("2026-12-26T13:00:00.5Z"), Some(3 * 3600 * 1000), "three hours ahead");
        assert_eq!(skew("2026-12-26T09:59:50.5Z"), Some(-10_000), "ten seconds behind");
        assert_eq!(skew_from("yesterday", at("2026-12-26T10:00:00Z")), None);
    }
}
