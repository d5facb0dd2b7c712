//! Requests: each one-shot annotation is carried out or refused in every phase, with a condition
//! and an Event, removed either way, and never acted upon twice.

use super::*;

fn record(key: &str, by: &str, pending: bool) -> crate::api::RequestRecord {
    crate::api::RequestRecord {
        annotation: key.into(),
        by: by.into(),
        at: t(0),
        outcome: crate::api::RequestOutcome::Done,
        message: "done".into(),
        pending,
    }
}

fn paused_canary() -> Release {
    with_status(rolling_out(rel("shop-2", "2", CANARY(), None), 1), |s| s.phase = Some(ReleasePhase::Paused))
}

/// A raw `revert` during a canary pause was neither taken nor refused, and reverted the Release
/// right after a later promote took it Live.
#[test]
fn a_revert_during_a_canary_pause_is_refused_at_once_not_kept_for_later() {
    let mut case = Case::active(annotate(paused_canary(), REVERT, "x"), live("shop-1", "1"));
    (case.own, case.other) = (deployed(2, 2), deployed(2, 2));
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Paused));
    assert!(out.effects.contains(&Effect::Consume(REVERT)));
    assert_eq!(events(&out), [Reason::RevertRefused]);
    let c = condition(&out, super::super::requests::REQUEST_REFUSED);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "RevertRefused"));
    assert!(c.message.contains("Paused"), "{}", c.message);
    let record = out.status.requests.iter().find(|r| r.annotation == REVERT).unwrap();
    assert_eq!((record.outcome, record.by.as_str()), (crate::api::RequestOutcome::Refused, "x"));
}

#[test]
fn an_abort_of_a_live_release_is_refused() {
    let current = annotate(live("shop-1", "1"), ABORT, "bob");
    let out = Case::stable(current.clone(), vec![current]).decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Live));
    assert!(out.effects.contains(&Effect::Consume(ABORT)));
    assert_eq!(events(&out), [Reason::AbortRefused]);
}

#[test]
fn an_abort_of_a_queued_release_ends_it() {
    let mut case = Case::active(annotate(rel("shop-3", "3", json!({}), None), ABORT, "bob"), live("shop-1", "1"));
    case.role = Role::Queued(1);
    let out = case.decide();
    assert_eq!(out.transitions, [Transition::Failed]);
    assert!(out.effects.contains(&Effect::Consume(ABORT)));
    assert!(out.effects.iter().all(|e| !matches!(e, Effect::Scale { .. })), "nothing of it runs");
}

/// A promote set while Pending stayed, and later skipped a pause.
#[test]
fn a_promote_while_nothing_waits_for_a_person_is_refused_and_skips_nothing_later() {
    let pending = annotate(rel("shop-2", "2", CANARY(), Some(ReleasePhase::Pending)), PROMOTE, "alice");
    let mut case = Case::active(pending, live("shop-1", "1"));
    let out = case.decide();
    assert_eq!(out.transitions, [Transition::RolloutStarted]);
    assert!(out.effects.contains(&Effect::Consume(PROMOTE)));
    assert_eq!(events(&out), [Reason::PromoteRefused]);
    // Its pods Ready, the rollout reaches the pause and waits there for a person.
    case.after(&out);
    case.other = deployed(2, 2);
    case.now = 20;
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Paused), "{:?}", out.status.message);
}

#[test]
fn a_request_already_handled_is_removed_not_acted_upon_twice() {
    // The status write recorded the promote; the reconcile that follows sees the annotation still
    // there (its removal is the next write).
    let promoted = with_status(annotate(paused_canary(), PROMOTE, "alice"), |s| {
        s.phase = Some(ReleasePhase::Paused);
        s.requests = vec![record(PROMOTE, "alice", true)];
    });
    let mut case = Case::active(promoted, live("shop-1", "1"));
    (case.own, case.other) = (deployed(2, 2), deployed(2, 2));
    let out = case.decide();
    assert_eq!(out.status.current_step, Some(1), "not promoted again");
    assert!(out.effects.contains(&Effect::Consume(PROMOTE)));
    assert!(events(&out).is_empty(), "{:?}", events(&out));
    // The same user asking again once the removal was seen is a new request.
    let mut again = case.rel.clone();
    again.status.as_mut().unwrap().requests = vec![record(PROMOTE, "alice", false)];
    case.rel = again;
    assert_eq!(case.decide().status.current_step, Some(2));
}

/// After a successful revert a spurious RevertRefused Warning followed.
#[test]
fn a_revert_carried_out_is_not_refused_afterwards() {
    let reverted =
        with_status(annotate(rel("shop-2", "2", json!({}), Some(ReleasePhase::Reverted)), REVERT, "x"), |s| {
            s.requests = vec![record(REVERT, "x", true)];
        });
    let live_again = live("shop-1", "1");
    let mut case = Case::stable(reverted.clone(), vec![live_again, reverted]);
    case.role = Role::Done;
    let out = case.decide();
    assert!(out.effects.contains(&Effect::Consume(REVERT)));
    assert!(events(&out).is_empty(), "{:?}", events(&out));
}

#[test]
fn an_override_with_nothing_to_override_is_refused() {
    let mut case = Case::active(annotate(paused_canary(), OVERRIDE, "alice"), live("shop-1", "1"));
    (case.own, case.other) = (deployed(2, 2), deployed(2, 2));
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Paused));
    assert_eq!(events(&out), [Reason::OverrideRefused]);
    assert_eq!(out.status.override_, None);
}

#[test]
fn a_record_stops_being_pending_once_its_removal_is_seen() {
    let seen = with_status(paused_canary(), |s| s.requests = vec![record(PROMOTE, "alice", true)]);
    let mut case = Case::active(seen, live("shop-1", "1"));
    (case.own, case.other) = (deployed(2, 2), deployed(2, 2));
    let out = case.decide();
    assert!(!out.status.requests[0].pending);
    assert!(!out.effects.iter().any(|e| matches!(e, Effect::Consume(_))));
}
