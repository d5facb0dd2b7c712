//! Which reconciles ran, per object: how many, which versions of the object they saw, and how the
//! last one ended. Served at `/debug/reconciles` so a person (or a test) can tell whether the
//! operator has looked at a change yet: "did phaseloop see my edit?" without reading logs. Bounded:
//! the last few versions per object, and objects not reconciled for an hour are dropped once many
//! are kept.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;

/// Versions of an object kept per entry.
const VERSIONS: usize = 16;
/// Entries kept before old ones are pruned.
const PRUNE_ABOVE: usize = 10_000;
const PRUNE_AFTER: Duration = Duration::from_secs(3600);

/// What is known of one object's reconciles.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Reconciles finished since this process started.
    pub count: u64,
    /// `metadata.resourceVersion` of the object each of the latest reconciles saw, oldest first.
    pub resource_versions: Vec<String>,
    /// Seconds since the last one finished.
    pub seconds_ago: f64,
    /// `None` when it succeeded, else the error.
    pub error: Option<String>,
}

struct Entry {
    count: u64,
    versions: VecDeque<String>,
    at: Instant,
    error: Option<String>,
}

#[derive(Default)]
pub struct Reconciles {
    entries: Mutex<HashMap<String, Entry>>,
}

fn id(controller: &str, key: &str) -> String {
    format!("{controller}:{key}")
}

impl Reconciles {
    /// Keeps the objects `keep` says are still there (by key, whichever controller).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|id, _| id.split_once(':').is_some_and(|(_, key)| keep(key)));
        }
    }

    pub fn entries(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or_default()
    }

    /// A reconcile of `key` (see [`super::fields::key`]) by `controller` finished, having seen the object
    /// at `resource_version`.
    pub fn finished(&self, controller: &str, key: &str, resource_version: Option<&str>, error: Option<String>) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() > PRUNE_ABOVE {
            entries.retain(|_, e| e.at.elapsed() < PRUNE_AFTER);
        }
        let e = entries.entry(id(controller, key)).or_insert_with(|| Entry {
            count: 0,
            versions: VecDeque::new(),
            at: Instant::now(),
            error: None,
        });
        e.count += 1;
        e.at = Instant::now();
        e.error = error;
        if let Some(v) = resource_version
            && e.versions.back().map(String::as_str) != Some(v)
        {
            if e.versions.len() == VERSIONS {
                e.versions.pop_front();
            }
            e.versions.push_back(v.to_string());
        }
    }

    /// What is known of `key`'s reconciles by `controller`.
    pub fn report(&self, controller: &str, key: &str) -> Option<Report> {
        let entries = self.entries.lock().ok()?;
        let e = entries.get(&id(controller, key))?;
        Some(Report {
            count: e.count,
            resource_versions: e.versions.iter().cloned().collect(),
            seconds_ago: e.at.elapsed().as_secs_f64(),
            error: e.error.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_versions_and_the_last_outcome_per_object() {
        let r = Reconciles::default();
        assert_eq!(r.report("release", "shop/web-1"), None);
        r.finished("release", "shop/web-1", Some("10"), None);
        r.finished("release", "shop/web-1", Some("10"), None);
        r.finished("release", "shop/web-1", Some("12"), Some("conflict".into()));
        let report = r.report("release", "shop/web-1").unwrap();
        assert_eq!((report.count, report.resource_versions.clone()), (3, vec!["10".into(), "12".into()]));
        assert_eq!(report.error.as_deref(), Some("conflict"));
        assert_eq!(r.report("environment", "shop/web-1"), None, "per controller");
        for v in 0..40 {
            r.finished("release", "shop/web-1", Some(&v.to_string()), None);
        }
        assert_eq!(r.report("release", "shop/web-1").unwrap().resource_versions.len(), VERSIONS);
    }
}
