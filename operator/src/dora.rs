//! DORA bookkeeping: which deployment facts of a Release have been counted, and what to count.
//!
//! The facts come from Release status (the first time each phase was entered), so they can be
//! rebuilt after a restart: [`Ledger::rebuild`] replays every Release in time order once, then
//! [`Ledger::observe`] counts what is new. Each fact is counted once per Release UID.
//!
//! - **Deployment** `success` when a Release goes `Live`; `rolled_back`, `reverted`, or `failed`
//!   (only a Release that started rolling out: failing tests are not a deployment). A reverted
//!   Release was a success first: attempts are `success + failed + rolled_back`.
//! - **Change failure** for each `rolled_back`, `reverted` and `failed` deployment.
//! - **Lead time**: from the `phaseloop.dev/commit-time` annotation (RFC 3339), else the Release's
//!   creation, to `Live`.
//! - **Time to restore**: from a failure to the next `Live` of the same app. A revert restores at
//!   once: its failure began when the reverted version went `Live`, and ended with the revert.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::{Release, ReleasePhase, annotation};

/// The result label of a deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failed,
    RolledBack,
    Reverted,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Success, Outcome::Failed, Outcome::RolledBack, Outcome::Reverted];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Reverted => "reverted",
        }
    }
}

/// Something to add to the DORA metrics of an app (`namespace`, `app`).
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Deployment { namespace: String, app: String, result: Outcome },
    ChangeFailure { namespace: String, app: String },
    LeadTime { namespace: String, app: String, seconds: f64 },
    TimeToRestore { namespace: String, app: String, seconds: f64 },
}

/// One deployment fact of a Release.
#[derive(Clone, Debug)]
struct Fact {
    at: Timestamp,
    uid: String,
    namespace: String,
    app: String,
    kind: Outcome,
    /// Lead time start (Live) or failure start (failures).
    since: Timestamp,
    /// The deploy queue's order of an app's Releases, which tells facts that share a second apart.
    created: crate::controller::release::queue::OrderKey,
}

/// What has been counted, and each app's failure still waiting for a restore.
#[derive(Debug, Default)]
pub struct Ledger {
    counted: HashSet<(String, Outcome)>,
    unrestored: BTreeMap<(String, String), (Timestamp, crate::controller::release::queue::OrderKey)>,
    rebuilt: bool,
}

fn time(r: &Release, phase: ReleasePhase) -> Option<Timestamp> {
    r.status.as_ref()?.phase_times.get(phase.as_str()).map(|t| t.0)
}

fn facts(r: &Release) -> Vec<Fact> {
    let Some(uid) = r.metadata.uid.clone() else { return Vec::new() };
    let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(Timestamp::UNIX_EPOCH);
    let committed = r
        .annotations()
        .get(annotation::COMMIT_TIME)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .filter(|t| *t <= created);
    let live = time(r, ReleasePhase::Live);
    let fact = |at, kind, since| Fact {
        at,
        uid: uid.clone(),
        namespace: r.ns().to_string(),
        app: r.spec.app.clone(),
        kind,
        since,
        created: crate::controller::release::queue::order_key(r),
    };
    let mut out = Vec::new();
    if let Some(at) = live {
        out.push(fact(at, Outcome::Success, committed.unwrap_or(created)));
    }
    if let Some(at) = time(r, ReleasePhase::RolledBack) {
        out.push(fact(at, Outcome::RolledBack, at));
    }
    if let Some(at) = time(r, ReleasePhase::Reverted) {
        out.push(fact(at, Outcome::Reverted, live.unwrap_or(at)));
    }
    if let Some(at) = time(r, ReleasePhase::Failed).filter(|_| time(r, ReleasePhase::Progressing).is_some()) {
        out.push(fact(at, Outcome::Failed, at));
    }
    out
}

impl Ledger {
    /// Counts every fact of `releases` in time order (after a start, from the synced cache).
    /// Until this has run, [`Ledger::observe`] counts nothing: facts seen in the arbitrary order of
    /// the first reconciles would pair failures with the wrong restore.
    pub fn rebuild<'a>(&mut self, releases: impl IntoIterator<Item = &'a Release>) -> Vec<Record> {
        let mut all: Vec<Fact> = releases.into_iter().flat_map(facts).collect();
        all.sort_by(|a, b| (a.at, &a.created).cmp(&(b.at, &b.created)));
        self.rebuilt = true;
        all.into_iter().flat_map(|f| self.count(f)).collect()
    }

    /// Forgets Releases other than `uids` and apps other than `apps`: they are gone. Returns the
    /// sizes left (facts counted, failures awaiting a restore).
    pub fn retain(
        &mut self,
        uids: &std::collections::HashSet<String>,
        apps: &std::collections::HashSet<(String, String)>,
    ) -> (usize, usize) {
        self.counted.retain(|(uid, _)| uids.contains(uid));
        self.unrestored.retain(|app, _| apps.contains(app));
        (self.counted.len(), self.unrestored.len())
    }

    /// The facts of `r` not counted yet.
    pub fn observe(&mut self, r: &Release) -> Vec<Record> {
        if !self.rebuilt {
            return Vec::new();
        }
        let mut new = facts(r);
        new.sort_by_key(|f| f.at);
        new.into_iter().flat_map(|f| self.count(f)).collect()
    }

    fn count(&mut self, f: Fact) -> Vec<Record> {
        if !self.counted.insert((f.uid.clone(), f.kind)) {
            return Vec::new();
        }
        let (namespace, app) = (f.namespace.clone(), f.app.clone());
        let key = (namespace.clone(), app.clone());
        let seconds = |from: Timestamp, to: Timestamp| to.duration_since(from).as_secs_f64().max(0.0);
        let mut out = vec![Record::Deployment { namespace: namespace.clone(), app: app.clone(), result: f.kind }];
        match f.kind {
            Outcome::Success => {
                out.push(Record::LeadTime {
                    namespace: namespace.clone(),
                    app: app.clone(),
                    seconds: seconds(f.since, f.at),
                });
                // Phase times are whole seconds: a restore can share the failure's second. It
                // restores it when it is of a newer Release (the deploy queue runs an app's
                // Releases one after another).
                let restored = self.unrestored.get(&key).filter(|(t, of)| *t <= f.at && *of < f.created);
                if let Some(&(failed, _)) = restored {
                    self.unrestored.remove(&key);
                    out.push(Record::TimeToRestore { namespace, app, seconds: seconds(failed, f.at) });
                }
            }
            Outcome::Reverted => {
                out.push(Record::ChangeFailure { namespace: namespace.clone(), app: app.clone() });
                out.push(Record::TimeToRestore { namespace, app, seconds: seconds(f.since, f.at) });
            }
            Outcome::RolledBack | Outcome::Failed => {
                out.push(Record::ChangeFailure { namespace, app });
                self.unrestored.entry(key).or_insert((f.since, f.created));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReleaseStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    /// A Release created at minute `created` that entered each phase at the given minute.
    fn release(uid: &str, app: &str, created: i64, phases: &[(ReleasePhase, i64)]) -> Release {
        let mut r = crate::fixtures::release(uid, json!({"app": app, "version": uid}));
        r.metadata.uid = Some(uid.into());
        r.metadata.creation_timestamp = Some(Time(minute(created)));
        let mut status = ReleaseStatus::default();
        for (p, at) in phases {
            status.phase_times.insert(p.as_str().into(), Time(minute(*at)));
            status.phase = Some(*p);
        }
        r.status = Some(status);
        r
    }

    fn minute(m: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + 60 * m).unwrap()
    }

    fn results(records: &[Record]) -> Vec<&'static str> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Deployment { result, .. } => Some(result.as_str()),
                _ => None,
            })
            .collect()
    }

    fn restores(records: &[Record]) -> Vec<f64> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::TimeToRestore { seconds, .. } => Some(*seconds),
                _ => None,
            })
            .collect()
    }

    use ReleasePhase::*;

    /// v1 Live; v2 rolled back; v3 Live (restores v2's failure); v4 Live then reverted to v3;
    /// v5 fails its tests (not a deployment); v6 fails during its rollout.
    fn history() -> Vec<Release> {
        vec![
            release("v1", "shop", 0, &[(Pending, 0), (Progressing, 1), (Live, 10)]),
            release("v2", "shop", 20, &[(Progressing, 21), (RolledBack, 30)]),
            release("v3", "shop", 40, &[(Progressing, 41), (Live, 50)]),
            release("v4", "shop", 60, &[(Progressing, 61), (Live, 70), (Reverted, 75)]),
            release("v5", "shop", 80, &[(Testing, 80), (Failed, 85)]),
            release("v6", "shop", 90, &[(Progressing, 91), (Failed, 95)]),
        ]
    }

    #[test]
    fn a_scripted_history_gives_each_deployment_result_once() {
        let mut ledger = Ledger::default();
        let records = ledger.rebuild(&history());
        assert_eq!(results(&records), ["success", "rolled_back", "success", "success", "reverted", "failed"]);
        let failures = records.iter().filter(|r| matches!(r, Record::ChangeFailure { .. })).count();
        assert_eq!(failures, 3);
        // v2 failed at 30 and v3 restored at 50; v4 served from 70 until its revert at 75.
        assert_eq!(restores(&records), [20.0 * 60.0, 5.0 * 60.0]);
        let leads: Vec<f64> = records
            .iter()
            .filter_map(|r| if let Record::LeadTime { seconds, .. } = r { Some(*seconds) } else { None })
            .collect();
        assert_eq!(leads, [600.0, 600.0, 600.0]);
    }

    #[test]
    fn observing_again_or_after_a_rebuild_counts_nothing_twice() {
        let mut ledger = Ledger::default();
        ledger.rebuild(&history());
        for r in history() {
            assert!(ledger.observe(&r).is_empty());
        }
        // A new rollout that goes Live restores v6's failure.
        let v7 = release("v7", "shop", 100, &[(Progressing, 101), (Live, 110)]);
        let records = ledger.observe(&v7);
        assert_eq!(results(&records), ["success"]);
        assert_eq!(restores(&records), [15.0 * 60.0]);
        assert!(ledger.observe(&v7).is_empty());
    }

    #[test]
    fn a_restore_within_the_second_of_the_failure_counts_and_an_older_live_does_not() {
        // Phase times are whole seconds (here minutes): v3, created in the same second as v2 (the
        // queue orders them by name), went Live within v2's rollback's.
        let fast = vec![
            release("v1", "shop", 0, &[(Live, 10)]),
            release("v2", "shop", 20, &[(Progressing, 21), (RolledBack, 30)]),
            release("v3", "shop", 20, &[(Progressing, 30), (Live, 30)]),
        ];
        assert_eq!(restores(&Ledger::default().rebuild(&fast)), [0.0]);
        let mut ledger = Ledger::default();
        ledger.rebuild(&fast[..2]);
        assert_eq!(restores(&ledger.observe(&fast[2])), [0.0], "also as it happens");
        // v1 Live in the very second v2 (newer) was rolled back: v1 restores nothing.
        let same = [release("v1", "shop", 0, &[(Live, 30)]), release("v2", "shop", 20, &[(RolledBack, 30)])];
        assert!(restores(&Ledger::default().rebuild(&same)).is_empty());
        let mut ledger = Ledger::default();
        ledger.rebuild(&same[1..]);
        assert!(restores(&ledger.observe(&same[0])).is_empty(), "also when seen late");
    }

    #[test]
    fn nothing_is_counted_before_the_rebuild() {
        let mut ledger = Ledger::default();
        assert!(ledger.observe(&history()[0]).is_empty());
        assert_eq!(results(&ledger.rebuild(&history()[..1])), ["success"]);
    }

    #[test]
    fn the_rebuild_does_not_depend_on_the_order_of_the_cache() {
        let mut reversed = history();
        reversed.reverse();
        let (mut a, mut b) = (Ledger::default(), Ledger::default());
        assert_eq!(a.rebuild(&history()), b.rebuild(&reversed));
    }

    #[test]
    fn lead_time_starts_at_the_commit_time_when_given() {
        let mut r = release("v1", "shop", 10, &[(Live, 20)]);
        r.metadata.annotations = Some([(annotation::COMMIT_TIME.to_string(), minute(0).to_string())].into());
        let records = Ledger { rebuilt: true, ..Default::default() }.observe(&r);
        assert!(records.contains(&Record::LeadTime { namespace: "prod".into(), app: "shop".into(), seconds: 1200.0 }));
        // A commit time after the Release was created is not believed.
        r.metadata.annotations = Some([(annotation::COMMIT_TIME.to_string(), minute(15).to_string())].into());
        let records = Ledger { rebuilt: true, ..Default::default() }.observe(&r);
        assert!(records.contains(&Record::LeadTime { namespace: "prod".into(), app: "shop".into(), seconds: 600.0 }));
    }

    #[test]
    fn apps_are_restored_separately() {
        let mut ledger = Ledger::default();
        let records = ledger.rebuild(&[
            release("a1", "shop", 0, &[(Progressing, 1), (RolledBack, 5)]),
            release("b1", "cart", 6, &[(Progressing, 7), (Live, 10)]),
            release("a2", "shop", 11, &[(Progressing, 12), (Live, 20)]),
        ]);
        assert_eq!(restores(&records), [15.0 * 60.0]);
    }
}
