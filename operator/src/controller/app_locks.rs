//! One decision per app at a time. Two Releases of an app reconciled at once would each decide
//! from a view without the other's latest writes (two writers of the app's Service: its selector
//! flipped back and forth while a new rollout started). Holding the app's lock while a Release
//! observes, decides and acts, and reading each sibling as this process last wrote it, the next
//! decision always sees the last one's writes.
//!
//! The locks are striped (a fixed set, chosen by a hash of namespace and app), so their memory is
//! bounded whatever the number of apps; two apps sharing a stripe only wait for each other.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

/// Stripes: enough that unrelated apps rarely wait for each other at the default concurrency (16).
const STRIPES: usize = 256;

pub struct AppLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for AppLocks {
    fn default() -> Self {
        AppLocks { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl AppLocks {
    /// Waits for and holds the lock of app `app` in namespace `namespace`.
    pub async fn lock(&self, namespace: &str, app: &str) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (namespace, app).hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_apps_decisions_wait_for_each_other_and_other_apps_mostly_do_not() {
        let locks = AppLocks::default();
        let held = locks.lock("shop", "web").await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("shop", "web")).await;
        assert!(again.is_err(), "the same app waits");
        // Of 10 other apps, most take another stripe.
        let mut free = 0;
        for i in 0..10 {
            let app = format!("a{i}");
            let other = tokio::time::timeout(std::time::Duration::from_millis(5), locks.lock("shop", &app));
            free += other.await.is_ok() as usize;
        }
        assert!(free >= 9, "{free}");
        drop(held);
    }
}
