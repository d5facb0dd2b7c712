//! Before the rollout: the queue, tests, the gate.

use super::*;

// --- 8. Promotion counts a version that soaked upstream and was superseded there -----------------

#[test]
fn promotion_a_version_superseded_upstream_after_its_soak_passes_the_gate() {
    let mut upstream = rel("shop-2", "2", json!({}), Some(ReleasePhase::Superseded));
    upstream.status.as_mut().unwrap().phase_times =
        BTreeMap::from([("Live".into(), t(-900)), ("Superseded".into(), t(-100))]);
    let newer = rel("shop-3", "3", json!({}), Some(ReleasePhase::Live));
    let mut case =
        Case::active(rel("shop-2", "2", json!({}), Some(ReleasePhase::AwaitingApproval)), live("shop-1", "1"));
    case.promotion =
        Some(Promotion { from: Some("staging".into()), soak: Some("10m".parse().unwrap()), ..Default::default() });
    case.upstream = Some(vec![upstream, newer]);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing), "{:?}", out.status.message);
}

#[test]
fn the_gate_waits_for_approval_and_a_freeze() {
    let waiting = rel("shop-2", "2", json!({}), Some(ReleasePhase::Pending));
    let mut with_approval = waiting.clone();
    with_approval.spec.approval = Some(crate::api::Approval { required: true });
    let case = Case::active(with_approval.clone(), live("shop-1", "1"));
    assert_eq!(case.decide().status.phase, Some(ReleasePhase::AwaitingApproval));
    let case = Case::active(annotate(with_approval, APPROVED_BY, "bob"), live("shop-1", "1"));
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(out.status.approval.unwrap().approved_by, "bob");
    let mut frozen = Case::active(waiting, live("shop-1", "1"));
    frozen.promotion = Some(Promotion { freeze: true, ..Default::default() });
    let out = frozen.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::AwaitingApproval));
    assert_eq!(out.requeue, Some(Duration::from_secs(30)), "a freeze is looked at again");
}

#[test]
fn tests_run_one_job_per_attempt_and_a_failure_only_removes_the_candidate() {
    let mut r = rel("shop-2", "2", json!({}), Some(ReleasePhase::Pending));
    r.spec.tests = serde_json::from_value(json!([{"name": "smoke", "retries": 1,
        "template": {"spec": {"containers": [{"name": "t", "image": "t"}]}}}]))
    .unwrap();
    let mut case = Case::active(r.clone(), live("shop-1", "1"));
    case.tests = Some(TestsObserved {
        ground: TestGround::Ready("prod".into()),
        candidate_ready: true,
        jobs: BTreeMap::from([("smoke".into(), None)]),
    });
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Testing));
    assert!(out.effects.contains(&Effect::RunTest { namespace: "prod".into(), test: "smoke".into(), attempt: 1 }));
    let tried_twice = with_status(r, |s| {
        s.phase = Some(ReleasePhase::Testing);
        s.tests = vec![crate::api::TestResult {
            name: "smoke".into(),
            phase: TestPhase::Running,
            attempts: 2,
            ..Default::default()
        }];
    });
    case.rel = tried_twice;
    case.tests.as_mut().unwrap().jobs.insert("smoke".into(), Some(TestPhase::Failed));
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Failed));
    assert!(out.effects.contains(&Effect::TestCandidate { namespace: "prod".into(), replicas: 0 }));
    assert!(!scales(&out).contains_key("shop-1"), "the stable version is not touched");
}

#[test]
fn a_queued_release_waits_and_says_where() {
    let mut case = Case::active(rel("shop-3", "3", json!({}), None), live("shop-1", "1"));
    case.role = Role::Queued(2);
    let out = case.decide();
    assert_eq!((out.status.phase, out.status.queue_position), (Some(ReleasePhase::Pending), Some(2)));
    assert!(out.effects.iter().all(|e| !matches!(e, Effect::Scale { .. })));
}

// --- Trust: status is never the gate ---------------------------------------------------------

#[test]
fn a_forged_status_past_the_gate_does_not_open_it() {
    let mut forged = rolling_out(rel("shop-2", "2", json!({}), None), 0);
    forged.spec.approval = Some(crate::api::Approval { required: true });
    forged.status.as_mut().unwrap().approval =
        Some(crate::api::ApprovalRecord { approved_by: "mallory".into(), approved_at: t(0) });
    let mut case = Case::active(forged.clone(), live("shop-1", "1"));
    case.own = deployed(1, 0);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::AwaitingApproval));
    assert_eq!(out.status.approval, None);
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 0)]));
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert_eq!(events(&out), [Reason::GateNotPassed]);
    // With the annotation (which only an approver can set, under their own name) it goes on.
    case.rel = annotate(forged, APPROVED_BY, "alice");
    assert_eq!(case.decide().status.phase, Some(ReleasePhase::Progressing));
}
