//! Rollouts going forward: placement by strategy, traffic, analysis, pauses, chained steps.

use super::*;

// --- 2. Blue-green previews without production traffic -----------------------------------------

#[test]
fn blue_green_preview_the_app_service_selects_the_stable_version_only() {
    let candidate = rolling_out(rel("shop-2", "2", json!({"type": "BlueGreen"}), None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(4, 2);
    let out = case.decide();
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())));
    assert!(out.effects.contains(&Effect::Expose(crate::controller::release::traffic::Exposure {
        stable: Some("shop-1".into()),
        candidate: Some("shop-2".into()),
        header: None,
        serving: Serving::Only("shop-1".into()),
        preview: true
    })));
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

#[test]
fn promote_past_an_inconclusive_pause_while_the_pods_come_up_resumes_with_a_fresh_tally() {
    // Paused by the analysis before the step's pods were Ready (a 1s interval is quicker than the
    // pods): the promote is taken, the tally starts again and the step waits for its pods. It was
    // refused ("waits for its pods, not for a person"), the tally kept its inconclusive count,
    // and the next reconcile paused again: stuck until someone promoted at the right moment.
    let strategy = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "4s"}}]},
        "analysis": {"interval": "1s", "metrics": [{"name": "errors", "max": 0.1, "query": "q", "inconclusiveLimit": 1}]}});
    let unsure = with_status(rolling_out(rel("shop-2", "2", strategy, None), 0), |s| {
        s.phase = Some(ReleasePhase::Paused);
        s.analysis = vec![crate::api::AnalysisResult { name: "errors".into(), inconclusive: 2, ..Default::default() }];
    });
    let mut case = Case::active(annotate(unsure, PROMOTE, "someone"), live("shop-1", "1"));
    case.own = deployed(2, 1);
    case.other = deployed(2, 2);
    let out = case.decide();
    assert_eq!(out.status.phase, Some(ReleasePhase::Progressing), "{:?}", out.status.message);
    assert_eq!(out.status.current_step, Some(0), "still waiting for the step's pods");
    assert_eq!(out.status.analysis[0].inconclusive, 0, "a fresh tally");
    let record = out.status.requests.iter().find(|r| r.annotation == PROMOTE).unwrap();
    assert_eq!(record.outcome, crate::api::RequestOutcome::Done, "{record:?}");
    // The next reconcile, the pods Ready and a healthy measurement: on to the next step.
    case.rel.status = Some(out.status.clone());
    case.rel.metadata.annotations.as_mut().unwrap().remove(PROMOTE);
    case.measurements = Some(vec![("errors".into(), Some(0.0))]);
    (case.own, case.other) = (deployed(2, 2), deployed(2, 2));
    let next = case.decide();
    assert_eq!(next.status.phase, Some(ReleasePhase::Progressing), "{:?}", next.status.message);
    assert_eq!(next.status.current_step, Some(1));
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
    let mut served: Option<(String, Option<String>)> = Some(("shop-1".into(), Some("shop-2".into())));
    for _ in 0..100 {
        let out = case.decide();
        let before = case.rel.status.clone().unwrap_or_default();
        // The Service moves to what a step serves only once the status has shown that step.
        let serves = serving(&out).map(|s| {
            let (a, b) = s.versions();
            (a.to_string(), b.map(str::to_string))
        });
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
        case.rel = super::chain::as_left(&case.rel, &out);
        case.siblings = vec![case.stable.clone().unwrap(), case.rel.clone()];
        if out.status.phase == Some(ReleasePhase::Live) {
            return (written, requeues, case);
        }
        let (own, other) = (
            super::chain::scaled_by(case.own, &out.effects, "shop-2"),
            super::chain::scaled_by(case.other, &out.effects, "shop-1"),
        );
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

/// A third Release rolling out inside the second's revert window: the version before last's warm
/// pods served beside both versions (the app-wide selector matched them).
#[test]
fn only_the_stable_version_and_the_candidate_serve_the_version_before_last_goes_first() {
    let candidate = rolling_out(rel("shop-3", "3", CANARY(), None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.others_up = vec![("shop-0".into(), deployed(4, 4))];
    let out = case.decide();
    assert_eq!(scales(&out)["shop-0"], 0);
    assert_eq!(events(&out), [Reason::RevertWindowClosed]);
    assert_eq!(serving(&out), Some(Serving::Only("shop-1".into())), "the stable version alone meanwhile");
    assert_eq!(out.status.current_step, Some(0));
    // Its pods gone (terminating ones are not Ready), both versions serve.
    case.others_up = vec![("shop-0".into(), Deployed { replicas: 0, available: 0, settled: true })];
    let out = case.decide();
    assert!(both(&out), "{:?}", serving(&out));
    assert!(events(&out).is_empty());
}

#[test]
fn a_rolling_out_release_holds_the_serving_finalizer() {
    let candidate = rolling_out(rel("shop-2", "2", CANARY(), None), 0);
    let mut case = Case::active(candidate, live("shop-1", "1"));
    case.own = deployed(2, 0);
    assert!(case.decide().effects.contains(&Effect::Finalizer(true)));
}
