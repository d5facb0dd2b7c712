//! Releases that play no part in a rollout now: queued behind another of their app, superseded,
//! or finished. Their requests are refused (an abort of a queued Release ends it), and a revert
//! cut short by a crash is finished here.

use kube::ResourceExt;

use super::{Draft, Transition};
use crate::api::{ReleasePhase, annotation::ABORT};

impl<'a> Draft<'a> {
    /// Waiting behind another Release of the app: says where; an abort ends it.
    pub(super) fn queued(&mut self, position: i32) {
        if self.asked(ABORT) {
            let who = self.requester(ABORT);
            self.done_with(ABORT, "aborted while queued");
            self.go(Transition::Failed);
            self.status.queue_position = None;
            self.status.message = Some(format!("aborted by {who} before the rollout"));
            return;
        }
        self.go(Transition::Queued);
        self.status.queue_position = Some(position);
        self.status.message =
            Some(format!("Queued: position {position} in the deploy queue of {}", self.o.rel.spec.app));
    }

    /// A newer Release went Live, or overtook this one before its rollout.
    pub(super) fn superseded(&mut self) {
        self.go(Transition::Superseded);
        self.status.message = Some("a newer Release of the app took over".into());
        self.status.queue_position = None;
        self.status.weight = Some(0);
    }

    /// A finished Release: requests are refused (at the decision's end); unless its own revert was
    /// cut short (see [`Self::unfinished_revert`]): then it finishes it.
    pub(super) fn done(&mut self) {
        if let Some(previous) = self.unfinished_revert() {
            self.restore(previous);
        }
    }

    /// The previous version Live again, written after this Release's own status.
    pub(super) fn restore(&mut self, previous: &crate::api::Release) {
        let total = self.total;
        let mut restored = previous.status.clone().unwrap_or_default();
        crate::controller::release::enter(&mut restored, ReleasePhase::Live, &self.o.now);
        restored.message = Some(format!("restored by the revert of {}", self.name()));
        restored.revert_window_ends_at = None;
        (restored.candidate_replicas, restored.replicas, restored.weight) = (Some(total), Some(total), Some(100));
        self.restored = Some((previous.name_any(), restored));
    }

    /// A revert is two writes: this Release `Reverted`, then the previous version `Live`. A crash
    /// between them leaves the app with nothing Live. The Reverted Release then finishes its revert:
    /// when it is the app's newest Reverted Release, no Release is Live or rolling out, and the
    /// version it reverted to is still there, `Superseded`. Returns that version.
    fn unfinished_revert(&self) -> Option<&'a crate::api::Release> {
        let o = self.o;
        if self.status.phase != Some(ReleasePhase::Reverted) {
            return None;
        }
        let phase = |r: &crate::api::Release| r.status.as_ref().and_then(|s| s.phase);
        let me = self.name();
        let reverted_at = |r: &crate::api::Release| {
            let at = r.status.as_ref().and_then(|s| s.phase_times.get(ReleasePhase::Reverted.as_str()));
            (at.map(|t| t.0), r.metadata.creation_timestamp.as_ref().map(|t| t.0), r.name_any())
        };
        let mine = reverted_at(o.rel);
        let others = o.siblings.iter().filter(|s| s.name_any() != me);
        let mut blocking = others.filter(|s| {
            matches!(phase(s), Some(ReleasePhase::Live | ReleasePhase::Progressing | ReleasePhase::Paused))
                || (phase(s) == Some(ReleasePhase::Reverted) && reverted_at(s) > mine)
        });
        if blocking.next().is_some() {
            return None;
        }
        let previous = self.status.stable_release.as_deref()?;
        o.siblings.iter().find(|s| s.name_any() == previous && phase(s) == Some(ReleasePhase::Superseded))
    }
}
