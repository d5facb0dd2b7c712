//! The Live Release: it serves the app's total (unless a newer Release is rolling out, which then
//! drives both versions), keeps the previous version warm for the revert window, then retires it;
//! and reverts.
//!
//! A revert gives the previous version all traffic once it has the pods to carry the app (its
//! total minus `maxUnavailable`, Ready): at once when it is warm; otherwise it starts it at the
//! app's total while this Release keeps serving alone, and switches when those pods are Ready
//! (`status.reverting`). A revert that cannot finish within the progress deadline is given up
//! (`RevertReady=False`/`RevertTimedOut`, a Warning Event) and this Release keeps serving.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Draft, ROLLOUT_RECHECK, Transition, serving::rolling_out, warm_replicas, window_open};
use crate::{
    api::{Reason, Release, RevertProgress, annotation::REVERT, condition},
    controller::release::traffic::Exposure,
};

impl<'a> Draft<'a> {
    /// The Live Release (see the module documentation).
    pub(super) fn stable(&mut self) {
        let o = self.o;
        self.status.queue_position = None;
        let rolling = rolling_out(o.rel, o.siblings);
        let previous: Option<&'a Release> =
            self.status.stable_release.as_deref().and_then(|p| o.siblings.iter().find(|s| s.name_any() == p));
        let open = window_open(o.rel, o.siblings, &o.now) && previous.is_some();
        if self.asked(REVERT) {
            self.revert_request(rolling, previous, open);
        }
        if rolling {
            // A newer Release rolls out: it drives this Release's pods (and retires older ones).
            self.status.reverting = None;
            if previous.is_some() && self.revert_refused().is_none() {
                let msg = format!("a newer Release of app {} is rolling out: the window is closed", o.rel.spec.app);
                self.set(condition::REVERT_READY, false, Reason::WindowClosed, &msg);
            }
            return;
        }
        match (self.status.reverting.clone(), previous) {
            (Some(progress), Some(previous)) if previous.name_any() == progress.to => {
                self.reverting(previous, &progress)
            }
            _ => {
                self.status.reverting = None;
                self.serve_live(previous, open)
            }
        }
    }

    /// A revert request: refused (a rollout in flight, no previous version, a closed window), or
    /// started.
    fn revert_request(&mut self, rolling: bool, previous: Option<&'a Release>, open: bool) {
        let app = &self.o.rel.spec.app;
        let refused = if rolling {
            Some(format!("revert refused: a newer Release of app {app} is rolling out; abort it first"))
        } else if previous.is_none() {
            Some(format!(
                "revert refused: {} is the first Release of app {app}: there is no previous version to return to",
                self.name()
            ))
        } else if !open {
            let ends = self.status.revert_window_ends_at.as_ref();
            let when = ends.map(|t| format!(" at {}", t.0)).unwrap_or_default();
            Some(format!("revert refused: the revert window of {} ended{when}", self.name()))
        } else {
            None
        };
        match (refused, previous) {
            (Some(why), _) => {
                self.set(condition::REVERT_READY, false, Reason::RevertRefused, &why);
                self.refuse(REVERT, why);
            }
            (None, Some(previous)) => {
                let to = previous.name_any();
                self.done_with(REVERT, format!("reverting to {to}"));
                self.status.reverting = Some(RevertProgress { to, since: self.o.now.clone() });
            }
            (None, None) => {}
        }
    }

    /// A revert under way: the switch once the previous version can carry the app, or the wait.
    fn reverting(&mut self, previous: &'a Release, progress: &RevertProgress) {
        let (me, prev, total) = (self.name(), previous.name_any(), self.total);
        let (_, unavailable) = self.limits();
        let floor = (total - unavailable).max(total.min(1));
        if self.o.other.ready(floor) {
            let exposure = Exposure::only(prev.clone());
            let routed = self.route(&exposure);
            self.scale(&prev, total);
            self.expose(exposure);
            if !routed {
                // Through a route, the route moves first; this version keeps its pods meanwhile.
                self.status.message = Some(format!("reverting to {prev}: moving the routes"));
                return;
            }
            self.scale(&me, 0);
            self.go(Transition::Reverted);
            self.status.message = Some(format!("reverted to {prev} by {}", self.requester(REVERT)));
            (self.status.revert_window_ends_at, self.status.reverting) = (None, None);
            (self.status.weight, self.status.step_weight, self.status.candidate_replicas) = (Some(0), Some(0), Some(0));
            self.status.replicas = Some(0);
            self.set(condition::REVERT_READY, false, Reason::Reverted, &format!("reverted to {prev}"));
            self.restore(previous);
            return;
        }
        let deadline: Duration = self.o.rel.spec.strategy.progress_deadline.into();
        let elapsed = Duration::try_from(self.o.now.0.duration_since(progress.since.0)).unwrap_or_default();
        let ready = self.o.other.available.max(0).min(total);
        if elapsed > deadline {
            let why = format!(
                "the revert to {prev} was given up: {ready} of {total} pods Ready after the progress deadline; \
                 {me} keeps serving"
            );
            self.event(true, Reason::RevertTimedOut, why.clone());
            self.status.reverting = None;
            self.serve_live(Some(previous), true);
            self.set(condition::REVERT_READY, false, Reason::RevertTimedOut, &why);
            return;
        }
        // This Release keeps serving alone while the previous version starts.
        self.serve_at_total();
        self.scale(&prev, total);
        let msg = format!("reverting to {prev}: {ready} of {total} pods Ready");
        self.status.message = Some(msg.clone());
        self.set(condition::REVERT_READY, false, Reason::Reverting, &msg);
        self.requeue((deadline.saturating_sub(elapsed) + Duration::from_secs(1)).min(ROLLOUT_RECHECK));
    }

    /// This Release serves the app's total alone.
    fn serve_at_total(&mut self) {
        let (me, total) = (self.name(), self.total);
        self.scale(&me, total);
        let exposure = Exposure::only(me);
        self.route(&exposure);
        self.expose(exposure);
        self.status.candidate_replicas = Some(total);
        self.status.replicas = Some(total);
        self.status.stable_replicas = None;
        self.status.weight = Some(if self.o.own.available > 0 || total == 0 { 100 } else { 0 });
        self.status.step_weight = Some(100);
    }

    /// Serving, with the previous version warm while the window is open, retired after it.
    fn serve_live(&mut self, previous: Option<&'a Release>, open: bool) {
        let o = self.o;
        self.serve_at_total();
        let ends: Option<Time> = self.status.revert_window_ends_at.clone();
        match (previous, open) {
            (Some(previous), true) => {
                let warm = warm_replicas(&o.rel.spec.strategy, self.total);
                self.scale(&previous.name_any(), warm);
                let until = ends.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
                let (ok, why, msg) = if warm == 0 {
                    let msg = format!("warmReplicas is 0: a revert to {} waits for it to start", previous.name_any());
                    (false, Reason::Cold, msg)
                } else if o.other.ready(warm) {
                    (true, Reason::Warm, format!("{} keeps {warm} Ready pods until {until}", previous.name_any()))
                } else {
                    let a = o.other.available;
                    (false, Reason::Warming, format!("{} has {a} of {warm} warm pods Ready", previous.name_any()))
                };
                self.set(condition::REVERT_READY, ok, why, &msg);
                if let Some(end) = ends {
                    let left = Duration::try_from(end.0.duration_since(o.now.0)).unwrap_or_default();
                    self.requeue(left + Duration::from_secs(1));
                }
            }
            // A refusal stays on show until the window's state changes.
            _ if self.revert_refused().is_some() => {
                let why = self.revert_refused().unwrap_or_default();
                if previous.is_some() {
                    self.retire();
                }
                self.set(condition::REVERT_READY, false, Reason::RevertRefused, &why);
            }
            (Some(_), false) => {
                self.retire();
                self.set(condition::REVERT_READY, false, Reason::WindowEnded, "the revert window has ended");
            }
            (None, _) => {
                let msg = "the first Release of the app: there is no previous version";
                self.set(condition::REVERT_READY, false, Reason::NoPreviousVersion, msg);
            }
        }
    }

    /// Finished Releases' workloads to zero, beyond the history limit deleted.
    pub(super) fn retire(&mut self) {
        let (keep, delete) = super::history(self.o.rel, self.o.siblings);
        if !keep.is_empty() || !delete.is_empty() {
            self.effects.push(super::Effect::Retire { keep, delete });
        }
    }
}
