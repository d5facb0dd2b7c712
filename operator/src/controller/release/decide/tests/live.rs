//! The Live Release: the revert window, reverts, deletion while serving.

use super::*;

// --- 1. The revert window is warm for every strategy -------------------------------------------

#[test]
fn warm_window_the_switch_keeps_the_previous_version_at_its_total_for_rolling_and_canary() {
    for (strategy, switch_step) in [(json!({}), 1), (CANARY(), 3)] {
        let candidate = rolling_out(rel("shop-2", "2", strategy.clone(), None), switch_step);
        let mut case = Case::active(candidate, live("shop-1", "1"));
        case.own = deployed(4, 4);
        case.other = deployed(0, 0);
        let out = case.decide();
        assert_eq!(scales(&out)["shop-1"], 4, "{strategy}: the previous version goes back to its total");
        assert_eq!(serving(&out), Some(Serving::Only("shop-2".into())), "and leaves the Service");
        assert_eq!(out.status.phase, Some(ReleasePhase::Progressing), "{strategy}: Live only once it is warm");
        case.other = deployed(4, 4);
        let out = case.decide();
        assert_eq!(out.status.phase, Some(ReleasePhase::Live), "{strategy}");
        assert!(out.status.revert_window_ends_at.is_some());
    }
}

#[test]
fn warm_window_the_live_release_keeps_the_previous_version_warm_then_retires_it() {
    let previous = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    let current = with_status(live("shop-2", "2"), |s| {
        s.stable_release = Some("shop-1".into());
        s.revert_window_ends_at = Some(t(600));
    });
    let mut case = Case::stable(current.clone(), vec![previous.clone(), current.clone()]);
    case.other = deployed(4, 4);
    let out = case.decide();
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 4)]));
    assert_eq!(condition(&out, condition::REVERT_READY).status, "True");
    assert_eq!(out.requeue, Some(Duration::from_secs(591)), "looks again when the window ends");
    // The previous version serves as the warm one: it keeps its finalizer.
    assert!(serves(&previous, &[previous.clone(), current.clone()], &t(10)).is_some());
    case.now = 700;
    let out = case.decide();
    assert!(out.effects.contains(&Effect::Retire { keep: vec!["shop-1".into()], delete: vec![] }));
    assert_eq!(condition(&out, condition::REVERT_READY).reason, "WindowEnded");
    assert!(serves(&previous, &[previous.clone(), current], &t(700)).is_none());
}

#[test]
fn warm_window_a_warm_revert_switches_at_once() {
    let previous = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    let current = annotate(
        with_status(live("shop-2", "2"), |s| {
            s.stable_release = Some("shop-1".into());
            s.revert_window_ends_at = Some(t(600));
        }),
        REVERT,
        "someone",
    );
    let mut case = Case::stable(current.clone(), vec![previous, current]);
    case.other = deployed(4, 4);
    let out = case.decide();
    assert_eq!(out.transitions, [Transition::Reverted]);
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert_eq!(scales(&out)["shop-2"], 0);
    // The Service leaves the current version before its workload does: never an empty Service.
    let at = |wanted: fn(&Effect) -> bool| out.effects.iter().position(wanted).unwrap();
    assert!(
        at(|e| matches!(e, Effect::Expose(_)))
            < at(|e| matches!(e, Effect::Scale { release, replicas: 0 } if release == "shop-2")),
        "{:?}",
        out.effects
    );
    let (name, restored) = out.restored.clone().unwrap();
    assert_eq!((name.as_str(), restored.phase), ("shop-1", Some(ReleasePhase::Live)));
    assert!(out.effects.contains(&Effect::Consume(REVERT)));
}

/// A cold revert (the previous version at zero, `warmReplicas: 0`) never finished: the Live
/// Release was not woken by the previous version's pods, and meanwhile both served.
#[test]
fn cold_revert_starts_the_previous_version_then_switches_once_it_is_ready() {
    let previous = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    let current = annotate(
        with_status(live("shop-2", "2"), |s| {
            s.stable_release = Some("shop-1".into());
            s.revert_window_ends_at = Some(t(600));
        }),
        REVERT,
        "alice",
    );
    let mut case = Case::stable(current.clone(), vec![previous.clone(), current]);
    case.other = deployed(0, 0);
    let out = case.decide();
    assert!(out.transitions.is_empty(), "still Live: {:?}", out.transitions);
    assert_eq!(serving(&out), Some(Serving::Only("shop-2".into())), "the current version serves alone meanwhile");
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 4)]));
    assert_eq!(out.status.reverting.as_ref().map(|r| r.to.as_str()), Some("shop-1"));
    assert!(out.effects.contains(&Effect::Consume(REVERT)), "the request is taken at once: {:?}", out.effects);
    assert_eq!(condition(&out, condition::REVERT_READY).reason, Reason::Reverting.as_str());
    assert!(out.requeue.is_some(), "looked at again even if no event comes");
    // Its pods come up: the revert finishes, the previous version alone serves.
    case.after(&out);
    case.other = deployed(4, 3);
    case.now = 40;
    let out = case.decide();
    assert_eq!(out.transitions, [Transition::Reverted]);
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert_eq!(out.status.reverting, None);
}

#[test]
fn cold_revert_that_cannot_finish_within_the_progress_deadline_is_given_up_and_the_app_keeps_serving() {
    let previous = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    let current = with_status(live("shop-2", "2"), |s| {
        s.stable_release = Some("shop-1".into());
        s.revert_window_ends_at = Some(t(6000));
        s.reverting = Some(crate::api::RevertProgress { to: "shop-1".into(), since: t(0) });
    });
    let mut case = Case::stable(current.clone(), vec![previous, current]);
    case.other = deployed(4, 1);
    case.now = 601;
    let out = case.decide();
    assert!(out.transitions.is_empty());
    assert_eq!(out.status.reverting, None);
    assert_eq!(serving(&out), Some(Serving::Only("shop-2".into())));
    assert_eq!(events(&out), [Reason::RevertTimedOut]);
    assert_eq!(condition(&out, condition::REVERT_READY).reason, Reason::RevertTimedOut.as_str());
    assert_eq!(scales(&out)["shop-1"], 4, "back to its warm pods");
}

#[test]
fn deleting_a_live_release_waits_while_it_serves() {
    let mut current = live("shop-1", "1");
    current.metadata.finalizers = Some(vec![SERVING_FINALIZER.into()]);
    current.metadata.deletion_timestamp = Some(t(5));
    let case = Case::stable(current.clone(), vec![current]);
    let out = case.decide();
    assert!(!out.effects.contains(&Effect::Finalizer(false)));
    let c = condition(&out, condition::DELETING);
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "WaitingUntilNotServing"));
    assert_eq!(events(&out), [Reason::DeletionWaiting]);
    assert_eq!(scales(&out)["shop-1"], 4, "and it keeps serving");
    // Once superseded and out of any window, it lets go.
    let mut done = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    done.metadata.finalizers = Some(vec![SERVING_FINALIZER.into()]);
    let mut case = Case::stable(done.clone(), vec![done]);
    case.role = Role::Done;
    assert!(case.decide().effects.contains(&Effect::Finalizer(false)));
}

#[test]
fn a_release_going_live_takes_the_serving_finalizer() {
    let candidate = rolling_out(rel("shop-2", "2", json!({}), None), 1);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(4, 4);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Live));
    assert!(out.effects.contains(&Effect::Finalizer(true)));
}

// --- 13. A revert that cannot be carried out says so ------------------------------------------

#[test]
fn revert_refused_for_a_first_release_or_after_the_window_with_a_condition_and_an_event() {
    let first = annotate(live("shop-1", "1"), REVERT, "someone");
    let out = Case::stable(first.clone(), vec![first]).decide();
    assert!(out.effects.contains(&Effect::Consume(REVERT)));
    assert_eq!(events(&out), [Reason::RevertRefused]);
    let c = condition(&out, condition::REVERT_READY);
    assert!(c.reason == "RevertRefused" && c.message.contains("first Release"), "{c:?}");
    assert_eq!(out.status.phase, Some(ReleasePhase::Live));
    let previous = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    let late = annotate(
        with_status(live("shop-2", "2"), |s| {
            s.stable_release = Some("shop-1".into());
            s.revert_window_ends_at = Some(t(5));
        }),
        REVERT,
        "someone",
    );
    let out = Case::stable(late.clone(), vec![previous.clone(), late]).decide();
    assert!(condition(&out, condition::REVERT_READY).message.contains("ended"));
    let finished = annotate(previous, REVERT, "someone");
    let mut case = Case::stable(finished.clone(), vec![finished]);
    case.role = Role::Done;
    assert_eq!(events(&case.decide()), [Reason::RevertRefused]);
}

#[test]
fn the_decision_is_a_fixed_point_for_a_settled_live_release() {
    let current = live("shop-1", "1");
    let case = Case::stable(current.clone(), vec![current.clone()]);
    let first = case.decide();
    let settled = with_status(current, |s| *s = first.status.clone());
    let mut again = Case::stable(settled.clone(), vec![settled]);
    again.now = 500;
    assert_eq!(again.decide().status, first.status, "a no-op reconcile writes nothing");
}

// --- Crash safety: a revert is two writes ---------------------------------------------------------

#[test]
fn a_revert_cut_short_between_its_two_writes_is_finished_by_the_reverted_release() {
    // The crash came after shop-2 was written Reverted and before shop-1 was written Live.
    let reverted = annotate(
        with_status(rel("shop-2", "2", json!({}), Some(ReleasePhase::Reverted)), |s| {
            s.stable_release = Some("shop-1".into());
            s.phase_times.insert("Reverted".into(), t(0));
            // The revert recorded the request; its removal was the next write.
            s.requests = vec![crate::api::RequestRecord {
                annotation: REVERT.into(),
                by: "alice".into(),
                at: t(0),
                outcome: crate::api::RequestOutcome::Done,
                message: "reverting to shop-1".into(),
                pending: true,
            }];
        }),
        REVERT,
        "alice",
    );
    let previous = rel("shop-1", "1", json!({}), Some(ReleasePhase::Superseded));
    let mut case = Case::stable(reverted.clone(), vec![previous.clone(), reverted.clone()]);
    case.role = Role::Done;
    let out = case.decide();
    let (name, restored) = out.restored.clone().expect("shop-1 restored");
    assert_eq!((name.as_str(), restored.phase), ("shop-1", Some(ReleasePhase::Live)));
    assert!(out.effects.contains(&Effect::Consume(REVERT)), "the request is spent");
    assert!(events(&out).is_empty(), "and not reported as refused: {:?}", events(&out));
    assert_eq!(out.status.phase, Some(ReleasePhase::Reverted));

    // Not when something else serves or rolls out, nor for an older revert than the newest.
    let newer_live = live("shop-3", "3");
    case.siblings = vec![previous.clone(), reverted.clone(), newer_live];
    assert_eq!(case.decide().restored, None, "shop-3 is Live");
    let newer_revert = with_status(rel("shop-3", "3", json!({}), Some(ReleasePhase::Reverted)), |s| {
        s.stable_release = Some("shop-2".into());
        s.phase_times.insert("Reverted".into(), t(5));
    });
    case.siblings = vec![previous, reverted, newer_revert];
    assert_eq!(case.decide().restored, None, "shop-3's revert is the one to finish");
}
