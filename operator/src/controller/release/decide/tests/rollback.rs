//! Rollbacks, and failures held for a person with autoRollback off.

use super::*;

// --- 3. autoRollback off never leaves an app stuck -----------------------------------------------

fn failing_canary(auto_rollback: bool) -> Release {
    let strategy = json!({"type": "Canary", "autoRollback": auto_rollback,
        "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]},
        "analysis": {"interval": "10s", "metrics": [{"name": "errors", "max": 0.1, "query": "q"}]}});
    with_status(rolling_out(rel("shop-2", "2", strategy, None), 1), |s| {
        s.analysis = vec![crate::api::AnalysisResult {
            name: "errors".into(),
            value: Some(0.5),
            failures: 1,
            successes: 2,
            ..Default::default()
        }];
    })
}

#[test]
fn auto_rollback_off_an_abort_still_rolls_back() {
    let mut case = Case::active(annotate(failing_canary(false), ABORT, "someone"), live("shop-1", "1"));
    case.own = deployed(2, 2);
    case.other = deployed(2, 2);
    // The stable version has half the app's pods: it comes back first, both serving meanwhile.
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(condition(&out, condition::PROGRESSING).reason, "RollingBack");
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 3), ("shop-2".into(), 1)]));
    assert!(matches!(serving(&out), Some(Serving::Both { .. })));
    case.own = deployed(1, 1);
    case.other = deployed(3, 3);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::RolledBack));
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert!(out.effects.contains(&Effect::Consume(ABORT)));
}

#[test]
fn auto_rollback_off_a_failed_analysis_pauses_and_only_an_override_goes_on() {
    let mut case = Case::active(failing_canary(false), live("shop-1", "1"));
    case.own = deployed(2, 2);
    case.other = deployed(2, 2);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Paused));
    let degraded = condition(&out, condition::DEGRADED);
    assert_eq!((degraded.status.as_str(), degraded.reason.as_str()), ("True", "AnalysisFailed"));
    assert!(out.status.message.as_deref().unwrap().contains("--override"));
    assert_eq!(events(&out), [Reason::AnalysisFailed]);
    // promote does not go past a failure
    case.rel = annotate(failing_canary(false), PROMOTE, "someone");
    assert_eq!(case.decide().status.phase, Some(ReleasePhase::Paused));
    // an override does, recorded with who (`promote --override` also promotes past the pause)
    case.rel = annotate(annotate(failing_canary(false), OVERRIDE, "alice"), PROMOTE, "alice");
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    let record = out.status.override_.clone().unwrap();
    assert_eq!(record.by, "alice");
    assert!(record.verdict.contains("errors"), "{record:?}");
    assert!(events(&out).contains(&Reason::Overridden) && out.effects.contains(&Effect::Consume(OVERRIDE)));
    assert_eq!(out.status.analysis[0].failures, 0, "a fresh tally");
}

/// Deleting a rolling-out candidate emptied the app: it held no finalizer, and the app's Service
/// (owned by it alone at the switch) went with it.
#[test]
fn deleting_a_rolling_out_candidate_is_an_abort_whose_pods_go_once_the_stable_version_serves_at_full_size() {
    let mut at_switch = rolling_out(rel("shop-2", "2", json!({}), None), 1);
    at_switch.metadata.finalizers = Some(vec![SERVING_FINALIZER.into()]);
    at_switch.metadata.deletion_timestamp = Some(t(5));
    let mut case = Case::active(at_switch, live("shop-1", "1"));
    case.own = deployed(4, 4);
    case.other = deployed(4, 0);
    let out = case.decide();
    assert_eq!(out.transitions, [Transition::RollbackStarted]);
    assert_eq!(out.status.rollback.as_ref().map(|r| r.cause), Some(crate::api::RollbackCause::Deleted));
    assert!(both(&out), "whatever is Ready serves meanwhile");
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 4)]), "it keeps its pods");
    assert!(!out.effects.contains(&Effect::Finalizer(false)));
    assert_eq!(condition(&out, condition::DELETING).status, "True");
    // Three of four Ready is not full size yet.
    case.after(&out);
    case.other = deployed(4, 3);
    let out = case.decide();
    assert!(both(&out) && scales(&out)["shop-2"] == 4 && !out.effects.contains(&Effect::Finalizer(false)));
    // All four: the stable version alone serves, then the candidate's pods go, and so does it.
    case.after(&out);
    case.other = deployed(4, 4);
    let out = case.decide();
    assert_eq!(out.transitions, [Transition::RolledBack]);
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    let at = |wanted: &dyn Fn(&Effect) -> bool| out.effects.iter().position(wanted).unwrap();
    assert!(at(&|e| matches!(e, Effect::Expose(_))) < at(&|e| *e == Effect::Finalizer(false)));
    assert!(at(&|e| *e == Effect::Finalizer(false)) <= at(&|e| matches!(e, Effect::Scale { replicas: 0, .. })));
}

/// A rolling-out Release holds the serving finalizer; when its whole namespace is being deleted it
/// lets go at once and writes nothing else (every other write would be refused there, and the
/// namespace would wait for it).
#[test]
fn a_rolling_out_release_whose_namespace_is_being_deleted_lets_go_at_once_and_writes_nothing_else() {
    let mut candidate = rolling_out(rel("shop-2", "2", CANARY(), None), 1);
    candidate.metadata.finalizers = Some(vec![SERVING_FINALIZER.into()]);
    candidate.metadata.deletion_timestamp = Some(t(5));
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.namespace_terminating = true;
    let out = case.decide();
    assert_eq!(out.effects, [Effect::Finalizer(false)]);
    assert_eq!(Some(out.status), case.rel.status, "no status write");
}
