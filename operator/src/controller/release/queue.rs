//! The deploy queue of one app in one namespace: which Release rolls out, which wait, which are
//! superseded, and which one is stable. Pure: it sees the Releases of one (namespace, app) only.

use kube::ResourceExt;

use crate::api::{Release, ReleasePhase};

/// The order of an app's Releases in its deploy queue, the order the API server accepted them:
/// creation (to the second, all the API keeps), then within a second the resourceVersion of the
/// Release when phaseloop first saw it (`status.createdRevision`; the current one before that),
/// which for a Release not edited before is that of its creation, then the name.
pub type OrderKey = (i64, u64, String);

pub fn order_key(r: &Release) -> OrderKey {
    let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
    let revision =
        r.status.as_ref().and_then(|s| s.created_revision.as_deref()).or(r.metadata.resource_version.as_deref());
    // resourceVersions are opaque to clients, but are etcd revisions here; one that is not a number
    // orders by name alone.
    let revision = revision.and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    (created, revision, r.name_any())
}

/// What the queue needs to know of a Release.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    /// Its place in the order the API server accepted the app's Releases ([`order_key`]).
    pub created: OrderKey,
    pub phase: Option<ReleasePhase>,
    /// The Release passed its gate (approved, or no approval needed), so it can take over.
    pub approved: bool,
}

/// The part a Release plays in its app's queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Finished (Superseded, RolledBack, Reverted, Failed): nothing to do.
    Done,
    /// The Release serving the app (`Live`), possibly while a newer one rolls out.
    Stable,
    /// The one Release allowed to test, wait at the gate and roll out now.
    Active,
    /// Waiting behind others; 1 is next.
    Queued(i32),
    /// Overtaken by a newer approved Release before it went Live.
    Superseded,
}

fn started(phase: Option<ReleasePhase>) -> bool {
    matches!(phase, Some(ReleasePhase::Progressing | ReleasePhase::Paused))
}

/// The role of every entry (same order as `entries`).
///
/// - The newest `Live` Release is stable; an older `Live` one is superseded.
/// - A rollout in flight (`Progressing`/`Paused`) is never interrupted: it stays active.
/// - Otherwise the oldest waiting Release is active and the rest queue behind it, except that a
///   newer approved Release supersedes older ones that have not started rolling out (a deploy
///   queue where the newest approved change wins, like a merge queue).
pub fn roles(entries: &[Entry]) -> Vec<Role> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[a].created.cmp(&entries[b].created));
    let mut roles = vec![Role::Done; entries.len()];

    let live: Vec<usize> = order.iter().copied().filter(|&i| entries[i].phase == Some(ReleasePhase::Live)).collect();
    if let Some((&newest, older)) = live.split_last() {
        roles[newest] = Role::Stable;
        for &i in older {
            roles[i] = Role::Superseded;
        }
    }
    let newest_live = live.last().map(|&i| entries[i].created.clone());

    let waiting: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| entries[i].phase.is_none_or(|p| !p.is_terminal() && p != ReleasePhase::Live))
        .collect();
    // Anything older than the Live Release that has not started is stale.
    let (stale, waiting): (Vec<usize>, Vec<usize>) = waiting
        .into_iter()
        .partition(|&i| !started(entries[i].phase) && newest_live.as_ref().is_some_and(|l| entries[i].created < *l));
    for i in stale {
        roles[i] = Role::Superseded;
    }
    let newest_approved = waiting.iter().rev().find(|&&i| entries[i].approved).copied();
    let mut remaining = Vec::new();
    for i in waiting {
        let overtaken = newest_approved.is_some_and(|n| entries[i].created < entries[n].created);
        if overtaken && !started(entries[i].phase) {
            roles[i] = Role::Superseded;
        } else {
            remaining.push(i);
        }
    }
    let active = remaining.iter().copied().find(|&i| started(entries[i].phase)).or(remaining.first().copied());
    let mut position = 0;
    for i in remaining {
        if Some(i) == active {
            roles[i] = Role::Active;
        } else {
            position += 1;
            roles[i] = Role::Queued(position);
        }
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;
    use ReleasePhase::*;

    fn e(name: &str, t: i64, phase: Option<ReleasePhase>, approved: bool) -> Entry {
        Entry { name: name.into(), created: (t, 0, name.into()), phase, approved }
    }

    /// Releases created in the same second queued by name: `shop-9` counted as newer than `shop-10`.
    #[test]
    fn releases_created_in_the_same_second_queue_in_the_order_the_api_server_accepted_them() {
        let release = |name: &str, revision: &str, recorded: Option<&str>| {
            let mut r = crate::fixtures::release(name, serde_json::json!({"app": "shop"}));
            r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            ));
            r.metadata.resource_version = Some(revision.into());
            r.status =
                recorded.map(|v| crate::api::ReleaseStatus { created_revision: Some(v.into()), ..Default::default() });
            r
        };
        // shop-9 accepted first (revision 900), shop-10 after (1000); shop-9's status was written
        // since (its resourceVersion moved past shop-10's), but it recorded the first one it saw.
        let nine = release("shop-9", "1200", Some("900"));
        let ten = release("shop-10", "1000", None);
        assert!(order_key(&nine) < order_key(&ten));
        let entries: Vec<Entry> = [&ten, &nine]
            .iter()
            .map(|r| Entry { name: r.name_any(), created: order_key(r), phase: None, approved: false })
            .collect();
        assert_eq!(roles(&entries), [Role::Queued(1), Role::Active]);
    }

    #[test]
    fn one_rolls_out_and_the_rest_queue_in_order() {
        let r = roles(&[e("v1", 1, Some(Live), true), e("v3", 3, None, false), e("v2", 2, Some(Pending), false)]);
        assert_eq!(r, [Role::Stable, Role::Queued(1), Role::Active]);
    }

    #[test]
    fn a_rollout_in_flight_is_never_interrupted() {
        let r = roles(&[e("v2", 2, Some(Progressing), true), e("v3", 3, Some(Pending), true)]);
        assert_eq!(r, [Role::Active, Role::Queued(1)]);
    }

    #[test]
    fn a_newer_approved_release_supersedes_older_ones_not_yet_rolling() {
        let r = roles(&[
            e("v1", 1, Some(Live), true),
            e("v2", 2, Some(AwaitingApproval), false),
            e("v3", 3, Some(Pending), true),
        ]);
        assert_eq!(r, [Role::Stable, Role::Superseded, Role::Active]);
    }

    #[test]
    fn only_the_newest_live_release_is_stable() {
        let r = roles(&[e("v1", 1, Some(Live), true), e("v2", 2, Some(Live), true), e("v0", 0, Some(Pending), false)]);
        assert_eq!(r, [Role::Superseded, Role::Stable, Role::Superseded]);
    }

    #[test]
    fn finished_releases_play_no_part() {
        let r = roles(&[e("v1", 1, Some(Failed), false), e("v2", 2, Some(RolledBack), true), e("v3", 3, None, false)]);
        assert_eq!(r, [Role::Done, Role::Done, Role::Active]);
    }

    #[test]
    fn at_most_one_is_active_whatever_the_mix() {
        let phases = [
            None,
            Some(Pending),
            Some(Testing),
            Some(AwaitingApproval),
            Some(Progressing),
            Some(Paused),
            Some(Live),
            Some(Failed),
        ];
        for a in phases {
            for b in phases {
                for c in phases {
                    for approved in [false, true] {
                        let r = roles(&[e("a", 1, a, approved), e("b", 2, b, !approved), e("c", 3, c, approved)]);
                        let active = r.iter().filter(|x| **x == Role::Active).count();
                        let in_flight = [a, b, c].iter().filter(|p| started(**p)).count();
                        assert!(active <= 1 || in_flight > 1, "{a:?} {b:?} {c:?}: {r:?}");
                        assert!(r.iter().filter(|x| **x == Role::Stable).count() <= 1);
                    }
                }
            }
        }
    }
}
