//! Watch-event-to-reconcile latency: when a watch event that concerns an object arrived, until its
//! reconcile starts (`phaseloop_watch_to_reconcile_seconds`). Requeues by timer are not watch
//! events and are not counted. Objects are keyed by [`key`].

pub use super::fields::{key, key_of};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The earliest watch event per object not yet followed by a reconcile.
#[derive(Default)]
pub struct Pending {
    since: Mutex<HashMap<String, Instant>>,
}

impl Pending {
    /// A watch event concerning the object `key` (`namespace/name`) arrived.
    pub fn mark(&self, key: String) {
        if let Ok(mut s) = self.since.lock() {
            s.entry(key).or_insert_with(Instant::now);
        }
    }

    /// Keeps the objects `keep` says are still there.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut s) = self.since.lock() {
            s.retain(|k, _| keep(k));
        }
    }

    pub fn entries(&self) -> usize {
        self.since.lock().map(|s| s.len()).unwrap_or_default()
    }

    /// A reconcile of `key` starts: how long since the earliest event it serves.
    pub fn take(&self, key: &str) -> Option<Duration> {
        self.since.lock().ok()?.remove(key).map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_event_counts_and_each_is_taken_once() {
        let p = Pending::default();
        p.mark(key(Some("shop"), "web-1"));
        std::thread::sleep(Duration::from_millis(20));
        p.mark(key(Some("shop"), "web-1"));
        let waited = p.take("shop/web-1").unwrap();
        assert!(waited >= Duration::from_millis(20), "{waited:?}: from the first event");
        assert_eq!(p.take("shop/web-1"), None, "taken once; a timed requeue is not a watch event");
        assert_eq!(p.take("/dev"), None);
    }
}
