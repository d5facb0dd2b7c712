//! The phase machine, one row per behaviour: each builds what a reconcile would observe and checks
//! the decision. Rows named after a defect fail on the code before the phase machine existed.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::*;

const NOW: i64 = 1_800_000_000;

fn t(s: i64) -> Time {
    Time(jiff::Timestamp::from_second(NOW + s).unwrap())
}

fn rel(name: &str, version: &str, strategy: Value, phase: Option<ReleasePhase>) -> Release {
    let mut r = crate::fixtures::release(
        name,
        json!({"version": version, "replicas": 4, "service": {"ports": [{"port": 80}]}, "strategy": strategy}),
    );
    r.metadata.creation_timestamp = Some(t(-1000));
    r.status = phase.map(|p| ReleaseStatus { phase: Some(p), ..Default::default() });
    r
}

fn annotate(mut r: Release, key: &str, value: &str) -> Release {
    r.metadata.annotations.get_or_insert_with(Default::default).insert(key.into(), value.into());
    r
}

fn with_status(mut r: Release, f: impl FnOnce(&mut ReleaseStatus)) -> Release {
    let mut s = r.status.take().unwrap_or_default();
    f(&mut s);
    r.status = Some(s);
    r
}

/// A rollout of `candidate` (already Progressing at `step`, started at t(0)) over the Live `stable`.
fn rolling_out(candidate: Release, step: i32) -> Release {
    with_status(candidate, |s| {
        s.phase = Some(ReleasePhase::Progressing);
        s.current_step = Some(step);
        s.step_started_at = Some(t(0));
        s.stable_release = Some("shop-1".into());
    })
}

fn live(name: &str, version: &str) -> Release {
    rel(name, version, json!({}), Some(ReleasePhase::Live))
}

fn deployed(replicas: i32, available: i32) -> Deployed {
    Deployed { replicas, available, settled: true }
}

struct Case {
    rel: Release,
    role: Role,
    siblings: Vec<Release>,
    stable: Option<Release>,
    own: Deployed,
    other: Deployed,
    now: i64,
    measurements: Option<Vec<(String, Option<f64>)>>,
    promotion: Option<Promotion>,
    upstream: Option<Vec<Release>>,
    tests: Option<TestsObserved>,
}

impl Case {
    fn active(rel: Release, stable: Release) -> Self {
        Case {
            siblings: vec![stable.clone(), rel.clone()],
            rel,
            role: Role::Active,
            stable: Some(stable),
            own: Deployed::default(),
            other: deployed(4, 4),
            now: 10,
            measurements: None,
            promotion: None,
            upstream: None,
            tests: None,
        }
    }

    fn stable(rel: Release, siblings: Vec<Release>) -> Self {
        Case {
            siblings,
            rel,
            role: Role::Stable,
            stable: None,
            own: deployed(4, 4),
            other: Deployed::default(),
            now: 10,
            measurements: None,
            promotion: None,
            upstream: None,
            tests: None,
        }
    }

    fn decide(&self) -> Outcome {
        let status = self.rel.status.clone().unwrap_or_default();
        let o = Observation {
            rel: &self.rel,
            status,
            now: t(self.now),
            role: self.role.clone(),
            siblings: &self.siblings,
            stable: self.stable.as_ref(),
            promotion: self.promotion.as_ref(),
            total: 4,
            own: self.own,
            other: self.other,
            tests: self.tests.clone(),
            measurements: self.measurements.clone(),
            upstream: self.upstream.as_deref(),
        };
        decide(&o)
    }
}

fn scales(out: &Outcome) -> BTreeMap<String, i32> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Scale { release, replicas } => Some((release.clone(), *replicas)),
            _ => None,
        })
        .collect()
}

fn serving(out: &Outcome) -> Option<Serving> {
    out.effects.iter().rev().find_map(|e| match e {
        Effect::Services { serving, .. } => Some(serving.clone()),
        _ => None,
    })
}

fn condition<'a>(out: &'a Outcome, type_: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions::find(&out.status.conditions, type_).unwrap_or_else(|| panic!("no {type_} in {:?}", out.status))
}

fn events(out: &Outcome) -> Vec<&'static str> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

const CANARY: fn() -> Value = || json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});

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
fn warm_window_a_warm_revert_switches_at_once_and_a_cold_one_hands_over() {
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
    assert_eq!(out.status.phase, Some(ReleasePhase::Reverted));
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert_eq!(scales(&out)["shop-2"], 0);
    // The Service leaves the current version before its Deployment does: never an empty Service.
    let at = |wanted: fn(&Effect) -> bool| out.effects.iter().position(wanted).unwrap();
    assert!(
        at(|e| matches!(e, Effect::Services { .. }))
            < at(|e| matches!(e, Effect::Scale { release, replicas: 0 } if release == "shop-2")),
        "{:?}",
        out.effects
    );
    let (name, restored) = out.restored.clone().unwrap();
    assert_eq!((name.as_str(), restored.phase), ("shop-1", Some(ReleasePhase::Live)));
    // Cold (warmReplicas 0): both serve while the previous version starts; nothing is dropped.
    case.other = deployed(0, 0);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Live));
    assert!(matches!(serving(&out), Some(Serving::Both { .. })));
    assert_eq!(scales(&out)["shop-2"], 3, "the current version gives up no more than maxUnavailable (25%)");
    assert!(scales(&out)["shop-1"] > 0);
    assert!(!out.effects.contains(&Effect::Consume(REVERT)), "the request stays until it is carried out");
}

// --- 2. Blue-green previews without production traffic -----------------------------------------

#[test]
fn blue_green_preview_the_app_service_selects_the_stable_version_only() {
    let candidate = rolling_out(rel("shop-2", "2", json!({"type": "BlueGreen"}), None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(4, 2);
    let out = case.decide();
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert!(out.effects.contains(&Effect::Services { serving: Serving::Only("shop-1".into()), preview: true }));
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 4)]));
    assert_eq!(out.status.weight, Some(0), "what serves: nothing of the candidate");
    // Ready: on to the switch, which is one selector change.
    case.own = deployed(4, 4);
    let out = case.decide();
    assert_eq!(out.status.current_step, Some(1));
    let mut at_switch = case;
    at_switch.rel = rolling_out(rel("shop-2", "2", json!({"type": "BlueGreen"}), None), 1);
    let out = at_switch.decide();
    assert_eq!(serving(&out), Some(Serving::Only("shop-2".into())));
    assert_eq!(out.status.phase, Some(ReleasePhase::Live));
}

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
    assert_eq!(events(&out), ["AnalysisFailed"]);
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
    assert!(events(&out).contains(&"Overridden") && out.effects.contains(&Effect::Consume(OVERRIDE)));
    assert_eq!(out.status.analysis[0].failures, 0, "a fresh tally");
}

// --- 5. Ready and Available follow what serves ----------------------------------------------------

#[test]
fn ready_and_available_are_reset_when_a_release_stops_serving() {
    let was_live = with_status(live("shop-1", "1"), |s| {
        s.conditions = vec![];
    });
    let mut case = Case::stable(was_live.clone(), vec![was_live.clone()]);
    let out = case.decide();
    assert_eq!(condition(&out, condition::READY).status, "True");
    assert_eq!(condition(&out, condition::AVAILABLE).status, "True");
    let with_conditions = with_status(was_live, |s| s.conditions = out.status.conditions.clone());
    case.rel = with_conditions.clone();
    case.role = Role::Superseded;
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Superseded));
    for c in [condition::READY, condition::AVAILABLE] {
        assert_eq!(condition(&out, c).status, "False", "{c}");
    }
    assert_eq!(out.status.weight, Some(0));
    let reverted = with_status(with_conditions, |s| s.phase = Some(ReleasePhase::Reverted));
    case.rel = reverted;
    case.role = Role::Done;
    let out = case.decide();
    assert_eq!(condition(&out, condition::READY).reason, "Reverted");
    assert_eq!(condition(&out, condition::AVAILABLE).status, "False");
}

// --- 7. Rolling updates stay within maxSurge / maxUnavailable -------------------------------------

#[test]
fn rolling_surge_is_bounded_by_max_surge_and_capacity_by_max_unavailable() {
    let strategy = json!({"rolling": {"maxSurge": 1, "maxUnavailable": 0}});
    let candidate = rolling_out(rel("shop-2", "2", strategy, None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    let out = case.decide();
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 1)]), "one pod above 4");
    assert!(matches!(serving(&out), Some(Serving::Both { .. })));
    case.own = deployed(1, 1);
    let out = case.decide();
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 3), ("shop-2".into(), 1)]));
    // The defaults: 25% / 25%.
    let defaults = rolling_out(rel("shop-2", "2", json!({}), None), 0);
    let mut case = Case::active(defaults, live("shop-1", "1"));
    case.own = deployed(0, 0);
    assert_eq!(scales(&case.decide()), BTreeMap::from([("shop-1".into(), 3), ("shop-2".into(), 1)]));
}

#[test]
fn rolling_a_candidate_that_never_becomes_ready_is_rolled_back_at_the_deadline_without_losing_capacity() {
    let candidate = rolling_out(rel("shop-2", "2", json!({"progressDeadline": "30s"}), None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(1, 0);
    case.other = deployed(3, 3);
    case.now = 31;
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::RolledBack));
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 0)]));
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    // Had the stable version given up more pods, it would come back first, both serving meanwhile.
    case.other = deployed(1, 1);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(condition(&out, condition::PROGRESSING).reason, "RollingBack");
    assert!(matches!(serving(&out), Some(Serving::Both { .. })));
}

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

// --- 9. The weight shown is what serves -------------------------------------------------------

#[test]
fn weight_is_the_share_of_ready_serving_pods_and_the_step_weight_is_kept_apart() {
    let candidate = rolling_out(rel("shop-2", "2", CANARY(), None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(0, 0);
    let out = case.decide();
    assert_eq!((out.status.weight, out.status.step_weight), (Some(0), Some(50)), "nothing of the candidate is Ready");
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4), ("shop-2".into(), 2)]), "stable waits for it");
    case.own = deployed(2, 2);
    let out = case.decide();
    assert_eq!((out.status.weight, out.status.step_weight), (Some(33), Some(50)), "2 of 6 Ready pods");
    assert_eq!(scales(&out)["shop-1"], 2);
}

// --- 11. A serving Release's deletion waits ----------------------------------------------------

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
    assert_eq!(events(&out), ["DeletionWaiting"]);
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

// --- 12. Never promote blind ---------------------------------------------------------------------

#[test]
fn blind_a_rollout_whose_every_query_failed_pauses_before_the_switch() {
    let strategy = json!({"analysis": {"interval": "10s", "metrics": [{"name": "errors", "max": 0.1, "query": "q"}]}});
    let candidate = with_status(rolling_out(rel("shop-2", "2", strategy, None), 0), |s| {
        s.analysis = vec![crate::api::AnalysisResult { name: "errors".into(), inconclusive: 2, ..Default::default() }];
    });
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(4, 4);
    case.other = deployed(0, 0);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Paused));
    assert!(out.status.message.as_deref().unwrap().contains("errors: 0 of 1 successful"), "{:?}", out.status.message);
    // One successful measurement is enough.
    case.measurements = Some(vec![("errors".into(), Some(0.0))]);
    assert_eq!(case.decide().status.current_step, Some(1));
}

// --- 13. A revert that cannot be carried out says so ------------------------------------------

#[test]
fn revert_refused_for_a_first_release_or_after_the_window_with_a_condition_and_an_event() {
    let first = annotate(live("shop-1", "1"), REVERT, "someone");
    let out = Case::stable(first.clone(), vec![first]).decide();
    assert!(out.effects.contains(&Effect::Consume(REVERT)));
    assert_eq!(events(&out), ["RevertRefused"]);
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
    assert_eq!(events(&case.decide()), ["RevertRefused"]);
}

// --- 15. Promote past an inconclusive pause goes on --------------------------------------------

#[test]
fn promote_past_an_inconclusive_pause_starts_a_fresh_tally() {
    let strategy = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"setWeight": 50}, {"pause": {}}]},
        "analysis": {"interval": "10s", "metrics": [{"name": "errors", "max": 0.1, "query": "q", "inconclusiveLimit": 1}]}});
    let unsure = with_status(rolling_out(rel("shop-2", "2", strategy, None), 0), |s| {
        s.phase = Some(ReleasePhase::Paused);
        s.analysis = vec![crate::api::AnalysisResult { name: "errors".into(), inconclusive: 2, ..Default::default() }];
    });
    let mut case = Case::active(annotate(unsure, PROMOTE, "someone"), live("shop-1", "1"));
    case.own = deployed(1, 1);
    case.other = deployed(3, 3);
    let out = case.decide();
    assert_eq!(out.status.current_step, Some(1));
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(out.status.analysis[0].inconclusive, 0, "the next step starts a fresh tally");
    // The next reconcile, with a healthy measurement, does not pause again.
    let strategy = serde_json::to_value(&case.rel.spec.strategy).unwrap();
    let next = with_status(rolling_out(rel("shop-2", "2", strategy, None), 1), |s| {
        s.analysis = out.status.analysis.clone();
    });
    let mut case = Case::active(next, live("shop-1", "1"));
    case.measurements = Some(vec![("errors".into(), Some(0.0))]);
    case.own = deployed(1, 1);
    assert_eq!(case.decide().status.phase, Some(ReleasePhase::Progressing));
}

// --- the rest of the machine --------------------------------------------------------------------

#[test]
fn a_first_release_goes_live_once_its_pods_are_ready() {
    let first = rel("shop-1", "1", json!({}), Some(ReleasePhase::Pending));
    let mut case = Case::active(first.clone(), live("x", "0"));
    case.stable = None;
    case.siblings = vec![first];
    case.own = deployed(0, 0);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(scales(&out), BTreeMap::from([("shop-1".into(), 4)]));
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert_eq!(out.status.stable_release, None);
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
            phase: "Running".into(),
            attempts: 2,
            ..Default::default()
        }];
    });
    case.rel = tried_twice;
    case.tests.as_mut().unwrap().jobs.insert("smoke".into(), Some(test_jobs::FAILED));
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
    assert_eq!(events(&out), ["GateNotPassed"]);
    // With the annotation (which only an approver can set, under their own name) it goes on.
    case.rel = annotate(forged, APPROVED_BY, "alice");
    assert_eq!(case.decide().status.phase, Some(ReleasePhase::Progressing));
}

// --- Steps that end at once: one status write ---------------------------------------------------

/// Runs a canary of `candidate` over a Live shop-1 at 4 replicas to its end, as reconciles would:
/// a Deployment whose replicas changed settles (its pods Ready at once) and wakes the Release a
/// second later; otherwise the clock goes to the requeue. Returns the statuses written, in order,
/// every requeue asked for while rolling out, and the case as it went Live.
fn run_to_live(candidate: Release) -> (Vec<ReleaseStatus>, Vec<Duration>, Case) {
    let stable = live("shop-1", "1");
    let mut case = Case::active(candidate, stable);
    case.own = deployed(0, 0);
    let (mut written, mut requeues) = (vec![], vec![]);
    let mut served = Some(Serving::Both { stable: "shop-1".into(), candidate: "shop-2".into() });
    for _ in 0..100 {
        let out = case.decide();
        let before = case.rel.status.clone().unwrap_or_default();
        // The Service moves to what a step serves only once the status has shown that step.
        let serves = serving(&out);
        if serves.is_some() && serves != served {
            assert_eq!(
                out.status.current_step, before.current_step,
                "the Service moved to {serves:?} ahead of its step"
            );
            served = serves;
        }
        if out.status != before {
            written.push(out.status.clone());
        }
        case.rel = super::as_left(&case.rel, &out);
        case.siblings = vec![case.stable.clone().unwrap(), case.rel.clone()];
        if out.status.phase == Some(ReleasePhase::Live) {
            return (written, requeues, case);
        }
        let (own, other) = (scaled_by(case.own, &out.effects, "shop-2"), scaled_by(case.other, &out.effects, "shop-1"));
        let changed = own != case.own || other != case.other;
        let settle = |d: Deployed| Deployed { available: d.replicas, settled: true, ..d };
        (case.own, case.other) = (settle(own), settle(other));
        let wait = out.requeue.unwrap_or(Duration::from_secs(60));
        requeues.push(wait);
        case.now += if changed { 1 } else { wait.as_secs().max(1) as i64 };
    }
    panic!("not Live after 100 reconciles: {:?}", case.rel.status);
}

#[test]
fn a_step_that_ends_goes_into_the_next_in_the_same_reconcile() {
    let steps = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "10s"}},
        {"setWeight": 50}, {"pause": {"duration": "10s"}}]}, "revertWindow": "0s"});
    let (written, requeues, mut case) = run_to_live(rolling_out(rel("shop-2", "2", steps, None), 0));
    let seen: Vec<_> =
        written.iter().map(|s| (s.current_step, s.weight, s.stable_replicas, s.message.clone())).collect();
    // Each write is a state a user sees for a while: at 25%, 50% and 100% the candidate's pods
    // coming up, then Ready as the stable version's go, the switch shown before the Service moves,
    // then Live. The code before wrote 12: each step that ended was written, then the one that
    // began, a moment later.
    assert_eq!(written.len(), 9, "{seen:?}");
    assert_eq!(
        requeues.iter().filter(|r| **r < Duration::from_secs(1)).count(),
        1,
        "only the switch, shown before the Service moves, asks to be run again at once: {requeues:?}"
    );
    for s in written.iter().filter(|s| s.phase == Some(ReleasePhase::Progressing)) {
        let (step, message) = (s.current_step.unwrap_or(0), s.message.as_deref().unwrap_or_default());
        assert!(message.starts_with(&format!("step {}/", step + 1)), "a message of its own step: {seen:?}");
    }
    // Without a revert window nothing is kept warm: the previous version only ever shrinks (it
    // was scaled back up to 4 at the switch, to be retired a moment later).
    let stable: Vec<_> = written.iter().filter_map(|s| s.stable_replicas).collect();
    assert!(stable.windows(2).all(|w| w[0] >= w[1]), "{stable:?}");
    // Going Live it went on as the app's stable Release: its next reconcile writes nothing.
    (case.role, case.stable) = (Role::Stable, None);
    assert_eq!(Some(case.decide().status), case.rel.status, "Live, then a moment later the stable one");
    let steps: Vec<_> = written.iter().map(|s| s.current_step).collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "steps only go forward: {steps:?}");
}

#[test]
fn a_promote_goes_on_by_one_step_only() {
    let paused = with_status(rolling_out(rel("shop-2", "2", CANARY(), None), 1), |s| {
        s.phase = Some(ReleasePhase::Paused);
    });
    let mut case = Case::active(annotate(paused, PROMOTE, "alice"), live("shop-1", "1"));
    case.own = deployed(2, 2);
    case.other = deployed(2, 2);
    let out = case.decide();
    // Past the pause to weight 100 (the candidate to 4): the step after it waits for those pods.
    assert_eq!(out.status.current_step, Some(2));
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing));
    assert_eq!(scales(&out)["shop-2"], 4);
    assert_eq!(out.effects.iter().filter(|e| **e == Effect::Consume(PROMOTE)).count(), 1);
}

// --- Crash safety: a revert is two writes ---------------------------------------------------------

#[test]
fn a_revert_cut_short_between_its_two_writes_is_finished_by_the_reverted_release() {
    // The crash came after shop-2 was written Reverted and before shop-1 was written Live.
    let reverted = annotate(
        with_status(rel("shop-2", "2", json!({}), Some(ReleasePhase::Reverted)), |s| {
            s.stable_release = Some("shop-1".into());
            s.phase_times.insert("Reverted".into(), t(0));
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

mod approvals;
