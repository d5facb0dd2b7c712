//! When a failed reconcile runs again: per object, backing off exponentially while it keeps
//! failing, so that a broken object costs a request every two minutes rather than one every few
//! seconds, while a one-off conflict is retried within a second.
//! A watch event about the object still wakes it at once: the backoff only spaces out retries
//! that nothing asked for.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::runtime::controller::Action;

use super::Error;

/// First retry after a failure.
const BASE: Duration = Duration::from_secs(1);
/// Longest wait between retries (what controller-runtime calls the max delay; it uses 1,000s,
/// which is long for a rollout that was one API hiccup away from its next step).
const CAP: Duration = Duration::from_secs(120);

/// Consecutive failures per object (`namespace/name`) and when the last one was, forgotten at its
/// next success, or once it has not failed for twice the longest wait (deleted meanwhile).
#[derive(Default)]
pub struct Retries {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Retries {
    /// Keeps the objects `keep` says are still there.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|k, _| keep(k));
        }
    }

    pub fn entries(&self) -> usize {
        self.failures.lock().map(|f| f.len()).unwrap_or_default()
    }

    /// The reconcile of `key` succeeded: its next failure starts the backoff over.
    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }

    /// The reconcile of `key` failed with `err`: what the controller does next.
    pub fn failed(&self, key: &str, err: &Error) -> Action {
        if matches!(err.cause(), Error::NamespaceTerminating(_)) {
            // Nothing can be created there any more, and the namespace's deletion removes the
            // object itself; retrying only adds load while the namespace controller works.
            self.succeeded(key);
            return Action::await_change();
        }
        if let Error::Waiting(_) = err.cause() {
            // Not a failure: something no event announces is looked at again shortly.
            return Action::requeue(Duration::from_secs(2));
        }
        let failures = self
            .failures
            .lock()
            .map(|mut f| {
                let now = Instant::now();
                f.retain(|_, (_, last)| now.duration_since(*last) < 2 * CAP);
                let (n, last) = f.entry(key.to_string()).or_insert((0, now));
                (*n, *last) = (n.saturating_add(1), now);
                *n
            })
            .unwrap_or(1);
        Action::requeue(delay(key, failures))
    }
}

/// The wait after the `failures`-th consecutive failure of `key`: 1s, 2s, 4s, … up to [`CAP`],
/// plus up to 20% spread by key, so that objects that failed together do not retry together.
pub fn delay(key: &str, failures: u32) -> Duration {
    let exp = BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(CAP);
    let spread = (super::fields::fnv1a(key.as_bytes()) ^ u64::from(failures)) % 201; // 0..=200 per mille of 20%
    exp + exp.mul_f64(spread as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A 403 from the API server with one cause, as it arrives.
    fn forbidden(cause: &str) -> Error {
        let status = serde_json::from_value(json!({"status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "deployments.apps \"web-1\" is forbidden",
            "details": {"name": "web-1", "group": "apps", "kind": "deployments",
                        "causes": [{"reason": cause, "message": "namespace shop is being terminated",
                                    "field": "metadata.namespace"}]}}))
        .unwrap();
        Error::from(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn the_delay_doubles_from_one_second_up_to_the_cap_with_a_bounded_spread() {
        let mut last = Duration::ZERO;
        for failures in 1..=12 {
            let d = delay("shop/web-1", failures);
            let exp = Duration::from_secs(1 << (failures - 1)).min(CAP);
            assert!(d >= exp && d <= exp.mul_f64(1.2), "failure {failures}: {d:?} against {exp:?}");
            assert!(d >= last || exp == CAP, "never shorter while failing");
            last = d;
        }
        assert!(delay("shop/web-1", u32::MAX) <= CAP.mul_f64(1.2), "no overflow");
        assert_eq!(delay("shop/web-1", 3), delay("shop/web-1", 3), "stable");
        let spread: std::collections::BTreeSet<Duration> =
            (0..20).map(|i| delay(&format!("shop/web-{i}"), 5)).collect();
        assert!(spread.len() > 10, "objects that failed together retry apart: {spread:?}");
    }

    #[test]
    fn failures_back_off_per_object_and_a_success_starts_over() {
        let retries = Retries::default();
        let err = forbidden("SomethingElse");
        let first = retries.failed("shop/web-1", &err);
        retries.failed("shop/web-1", &err);
        let third = retries.failed("shop/web-1", &err);
        assert_eq!(first, Action::requeue(delay("shop/web-1", 1)));
        assert_eq!(third, Action::requeue(delay("shop/web-1", 3)));
        assert_eq!(retries.failed("shop/api-1", &err), Action::requeue(delay("shop/api-1", 1)), "per object");
        retries.succeeded("shop/web-1");
        assert_eq!(retries.failed("shop/web-1", &err), first);
    }

    #[test]
    fn a_namespace_being_deleted_is_not_retried() {
        let retries = Retries::default();
        retries.failed("shop/web-1", &forbidden("SomethingElse"));
        assert_eq!(retries.failed("shop/web-1", &forbidden("NamespaceTerminating")), Action::await_change());
        assert_eq!(
            retries.failed("shop/web-1", &forbidden("SomethingElse")),
            Action::requeue(delay("shop/web-1", 1)),
            "and its backoff is forgotten"
        );
    }
}
