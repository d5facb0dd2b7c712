//! Requests: the one-shot annotations `promote`, `override`, `abort` and `revert`. Each is handled
//! once, in whatever phase it arrives: carried out where it means something, refused everywhere
//! else (a condition and an Event saying why), and removed either way. None is kept for later.
//!
//! `status.requests` records the last request of each kind and what came of it. A record is
//! `pending` while its annotation is still on the Release (it is removed after the status write,
//! so whoever sees the request gone also sees its outcome): seen again meanwhile, by a reconcile on
//! a cache that has the status but not the removal yet, or after a crash between the two writes,
//! it is the same request and is only removed, never acted upon twice.

use kube::ResourceExt;

use super::{Draft, Effect};
use crate::api::{
    Reason, ReleaseStatus, RequestOutcome, RequestRecord,
    annotation::{ABORT, OVERRIDE, PROMOTE, REVERT},
};

/// The request annotations, in the order they are handled.
pub const REQUESTS: [&str; 4] = [ABORT, OVERRIDE, PROMOTE, REVERT];

/// Condition type: True while the last request was refused (the reason says which kind).
pub const REQUEST_REFUSED: &str = "RequestRefused";

/// Records whose annotation is gone (or was set again with another value) are no longer pending:
/// the removal was seen.
pub fn seen_removed(status: &mut ReleaseStatus, rel: &crate::api::Release) {
    for r in &mut status.requests {
        if r.pending && rel.annotations().get(&r.annotation) != Some(&r.by) {
            r.pending = false;
        }
    }
}

impl Draft<'_> {
    /// Who asked for `key`, when it is a request still to handle: the annotation is on the
    /// Release and is not one already handled.
    pub(super) fn request(&self, key: &str) -> Option<String> {
        let value = self.o.rel.annotations().get(key)?;
        let handled = self.status.requests.iter().any(|r| r.annotation == key && r.pending && r.by == *value);
        (!handled).then(|| value.clone())
    }

    /// Who asked for `key`, for messages: the request being handled, else the last one recorded.
    pub(super) fn requester(&self, key: &str) -> String {
        let recorded = || self.status.requests.iter().find(|r| r.annotation == key).map(|r| r.by.clone());
        self.request(key).or_else(recorded).filter(|who| !who.trim().is_empty()).unwrap_or_else(|| "a person".into())
    }

    /// Whether `key` is a request still to handle.
    pub(super) fn asked(&self, key: &str) -> bool {
        self.request(key).is_some()
    }

    /// Records `key` as carried out (`message` says how) and removes it.
    pub(super) fn done_with(&mut self, key: &'static str, message: impl Into<String>) {
        self.record(key, RequestOutcome::Done, message.into());
    }

    /// Refuses `key`: recorded with why, an Event and the `RequestRefused` condition, and removed.
    pub(super) fn refuse(&mut self, key: &'static str, why: String) {
        let reason = refused(key);
        self.event(true, reason, why.clone());
        self.record(key, RequestOutcome::Refused, why);
    }

    fn record(&mut self, key: &'static str, outcome: RequestOutcome, message: String) {
        let Some(by) = self.request(key) else { return };
        let message: String = message.chars().take(1024).collect();
        let record =
            RequestRecord { annotation: key.to_string(), by, at: self.o.now.clone(), outcome, message, pending: true };
        self.status.requests.retain(|r| r.annotation != key);
        self.status.requests.push(record);
        self.status.requests.sort_by(|a, b| a.annotation.cmp(&b.annotation));
        self.consume(key);
    }

    fn consume(&mut self, key: &'static str) {
        if !self.effects.contains(&Effect::Consume(key)) {
            self.effects.push(Effect::Consume(key));
        }
    }

    /// At the end of a decision: a request nothing carried out is refused, saying where the Release
    /// is; a request handled before (still pending) is removed again.
    pub(super) fn requests_left_over(&mut self) {
        for key in REQUESTS {
            if self.asked(key) {
                let why =
                    format!("{} refused: {} is {}; {}", short(key), self.name(), self.phase().as_str(), meaning(key));
                self.refuse(key, why);
            } else if self.o.rel.annotations().contains_key(key) {
                self.consume(key);
            }
        }
        self.request_condition();
    }

    /// `RequestRefused`, from the latest record.
    fn request_condition(&mut self) {
        let Some(last) = self.status.requests.iter().max_by_key(|r| r.at.0).cloned() else { return };
        match last.outcome {
            RequestOutcome::Refused => self.set(REQUEST_REFUSED, true, refused(&last.annotation), &last.message),
            RequestOutcome::Done => {
                let msg = format!("the last request ({}) was carried out", short(&last.annotation));
                self.set(REQUEST_REFUSED, false, Reason::RequestsHandled, &msg)
            }
        }
    }

    /// The last revert request was refused (shown in `RevertReady` until the window changes).
    pub(super) fn revert_refused(&self) -> Option<String> {
        let r = self.status.requests.iter().find(|r| r.annotation == REVERT)?;
        (r.outcome == RequestOutcome::Refused).then(|| r.message.clone())
    }
}

/// The condition reason of a refused `key`.
fn refused(key: &str) -> Reason {
    match key {
        PROMOTE => Reason::PromoteRefused,
        ABORT => Reason::AbortRefused,
        OVERRIDE => Reason::OverrideRefused,
        REVERT => Reason::RevertRefused,
        _ => Reason::RequestRefused,
    }
}

/// `phaseloop.dev/promote` → `promote`.
fn short(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Where a request means something.
fn meaning(key: &str) -> &'static str {
    match key {
        PROMOTE => "promote goes past a pause of a rollout",
        ABORT => "abort stops a Release before or during its rollout",
        OVERRIDE => "override goes past a failure that paused a rollout with autoRollback off",
        REVERT => "revert returns the Live Release's app to the previous version within the revert window",
        _ => "",
    }
}
