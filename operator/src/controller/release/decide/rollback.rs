//! Rolling back: a failed analysis or a missed deadline (with `autoRollback`), an abort, or the
//! Release's deletion hands the app back to the stable version. At once when the stable version
//! still has the pods to carry the app (its total minus `maxUnavailable`, Ready), else the way a
//! rolling update would, both versions serving meanwhile. A deleted Release keeps all its pods
//! until the stable version is back at its full size and Ready: only then does the stable version
//! serve alone and the Release's pods go (its finalizer with them).

use kube::ResourceExt;

use super::{Deployed, Draft, Transition};
use crate::{
    api::{Reason, RollbackCause, RollbackRecord, condition},
    controller::release::{
        handover,
        traffic::{Exposure, Serving, ready_share, served_weight},
    },
};

impl Draft<'_> {
    /// Returns all traffic to the stable version without dropping below the pods the app needs.
    /// The Release ends `RolledBack` (`Failed` when nothing was serving before it).
    pub(super) fn roll_back(&mut self, cause: RollbackCause, why: String) {
        let o = self.o;
        let me = self.name();
        let started = self.status.rollback.is_none();
        self.status.rollback = Some(RollbackRecord { cause, message: why.clone() });
        self.status.pause = None;
        let Some(stable) = o.stable else {
            self.scale(&me, 0);
            self.go(Transition::Failed);
            self.status.message = Some(why.clone());
            self.status.weight = Some(0);
            self.set(condition::PROGRESSING, false, Reason::Failed, &why);
            return;
        };
        let to = stable.name_any();
        if !self.hand_back(&to, o.other, o.own, cause == RollbackCause::Deleted) {
            let was = self.phase();
            self.go(Transition::RollbackStarted);
            if started && was == self.phase() {
                self.transitions.push(Transition::RollbackStarted);
            }
            self.set(condition::PROGRESSING, true, Reason::RollingBack, &why);
            self.status.message = Some(why);
            let both = Serving::Both { stable: to, candidate: me.clone(), weight: 0 };
            self.status.weight = Some(served_weight(&both, &me, &o.own, &o.other));
            return;
        }
        self.go(Transition::RolledBack);
        self.status.message = Some(why.clone());
        (self.status.weight, self.status.candidate_replicas) = (Some(0), Some(0));
        self.status.stable_replicas = Some(self.total);
        self.status.replicas = Some(self.total);
        self.set(condition::PROGRESSING, false, Reason::RolledBack, &why);
    }

    /// Hands the app back to `to`: at once when it has enough Ready pods (all of them with
    /// `full`), else as a rolling update would (with `full`, `outgoing` keeps its pods meanwhile).
    /// Returns whether it is done: then `to` alone serves, at the app's total, and this Release is
    /// at zero.
    fn hand_back(&mut self, to: &str, incoming: Deployed, outgoing: Deployed, full: bool) -> bool {
        let me = self.name();
        let total = self.total;
        let (surge, unavailable) = self.limits();
        let floor = if full { total } else { (total - unavailable).max(total.min(1)) };
        if incoming.settled && incoming.available >= floor {
            let exposure = Exposure::only(to);
            let routed = self.route(&exposure);
            self.scale(to, total);
            self.expose(exposure);
            if !routed {
                // Through a route, the route moves first: this version keeps its pods until the
                // routes carry the stable version alone.
                return false;
            }
            self.scale(&me, 0);
            return true;
        }
        let (back, away) = if full {
            (total, outgoing.replicas)
        } else {
            handover::step(total, surge, unavailable, incoming.side(), outgoing.side())
        };
        self.scale(to, back);
        self.scale(&me, away);
        // Through a route, the candidate keeps the share of what is Ready that it still has.
        let weight = ready_share(&outgoing, &incoming);
        let exposure = Exposure::split(to, me.clone(), weight);
        self.route(&exposure);
        self.expose(exposure);
        false
    }
}
