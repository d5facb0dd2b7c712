//! Whatever serves is protected: a Release whose pods the app's traffic may reach (Live, the warm
//! previous version of a revert window, or rolling out) holds the finalizer `phaseloop.dev/serving`,
//! so its deletion waits until it no longer serves (a rolling-out Release's deletion is an abort:
//! the stable version takes the app back first). When its namespace is being deleted it lets go at
//! once: everything there goes anyway.

use kube::ResourceExt;

use super::Draft;
use crate::{
    api::{Reason, Release, ReleasePhase, condition},
    controller::{conditions, release::SERVING_FINALIZER},
};

impl Draft<'_> {
    /// The serving finalizer, and a deletion that has to wait.
    pub(super) fn finalizer(&mut self) {
        let o = self.o;
        let has = o.rel.finalizers().iter().any(|f| f == SERVING_FINALIZER);
        let deleting = o.rel.metadata.deletion_timestamp.is_some();
        // As this decision leaves it: a Release going Live now serves, one superseded may not.
        let mut me = o.rel.clone();
        me.status = Some(self.status.clone());
        match serves(&me, o.siblings, &o.now) {
            Some(why) => {
                if !has && !deleting {
                    self.effects.push(super::Effect::Finalizer(true));
                }
                if deleting {
                    let message = format!("the deletion waits because {why}; it completes once it no longer serves");
                    if !conditions::is_true(&self.status.conditions, condition::DELETING) {
                        self.event(true, Reason::DeletionWaiting, message.clone());
                    }
                    self.set(condition::DELETING, true, Reason::WaitingUntilNotServing, &message);
                }
            }
            None if has => self.effects.push(super::Effect::Finalizer(false)),
            None => {}
        }
    }
}

/// The serving finalizer and the deletion, at the end of every decision.
pub(super) fn finalizer(d: &mut Draft<'_>) {
    d.finalizer();
}

/// Whether `rel` serves, and why: it is Live, it is rolling out, or it is the previous version a
/// Live sibling keeps warm for its revert window.
pub fn serves(
    rel: &Release,
    siblings: &[Release],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<String> {
    let phase = rel.status.as_ref().and_then(|s| s.phase);
    match phase {
        Some(ReleasePhase::Live) => return Some(format!("it is Live: app {} serves from it", rel.spec.app)),
        Some(ReleasePhase::Progressing | ReleasePhase::Paused) => {
            return Some(format!("it is rolling out: app {} may be served from it", rel.spec.app));
        }
        _ => {}
    }
    let keeper = siblings.iter().find(|s| {
        let st = s.status.as_ref();
        st.and_then(|s| s.phase) == Some(ReleasePhase::Live)
            && st.and_then(|s| s.stable_release.as_deref()) == Some(rel.name_any().as_str())
            && window_open(s, siblings, now)
    })?;
    let ends = keeper.status.as_ref().and_then(|s| s.revert_window_ends_at.as_ref()).map(|t| t.0.to_string());
    Some(format!(
        "it is the previous version of {}, kept warm for its revert window until {}",
        keeper.name_any(),
        ends.unwrap_or_default()
    ))
}

/// Whether a Live Release's revert window is open: before its end, and no newer Release of the app
/// is rolling out (a new rollout ends the window: its stable is the one to return to).
pub fn window_open(
    live: &Release,
    siblings: &[Release],
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> bool {
    let ends = live.status.as_ref().and_then(|s| s.revert_window_ends_at.as_ref());
    ends.is_some_and(|e| now.0 < e.0) && !rolling_out(live, siblings)
}

/// Whether a sibling of `rel` is rolling out.
pub(super) fn rolling_out(rel: &Release, siblings: &[Release]) -> bool {
    siblings.iter().any(|s| {
        s.name_any() != rel.name_any()
            && matches!(s.status.as_ref().and_then(|s| s.phase), Some(ReleasePhase::Progressing | ReleasePhase::Paused))
    })
}

/// The finished Releases other than `rel`, newest first: the first [`super::HISTORY_LIMIT`] keep
/// their workloads (at zero), the others lose them. The Releases stay as the record.
pub fn history(rel: &Release, siblings: &[Release]) -> (Vec<String>, Vec<String>) {
    let mut finished: Vec<&Release> = siblings
        .iter()
        .filter(|s| s.name_any() != rel.name_any())
        .filter(|s| s.status.as_ref().and_then(|s| s.phase).is_some_and(ReleasePhase::is_terminal))
        .collect();
    finished.sort_by_key(|s| std::cmp::Reverse(crate::controller::release::queue::order_key(s)));
    let names = |it: &mut dyn Iterator<Item = &&Release>| it.map(|r| r.name_any()).collect::<Vec<_>>();
    let limit = super::HISTORY_LIMIT;
    (names(&mut finished.iter().take(limit)), names(&mut finished.iter().skip(limit)))
}

/// `finalizers` with the serving finalizer added (`add`) or removed, the others as they are.
pub fn with_serving_finalizer(finalizers: &[String], add: bool) -> Vec<String> {
    let mut finalizers: Vec<String> = finalizers.iter().filter(|f| *f != SERVING_FINALIZER).cloned().collect();
    if add {
        finalizers.push(SERVING_FINALIZER.to_string());
    }
    finalizers
}
