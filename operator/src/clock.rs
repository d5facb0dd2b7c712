//! The operator's clock. Every decision that depends on the time (an Environment's ttl and sleep,
//! a Release's timed steps and windows) reads [`now`], so a test can run an operator whose clock
//! is wrong: [`set_offset`] moves this process's clock, as a badly synchronized node would.

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
