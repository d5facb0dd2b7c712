//! The rollout step machine: given the plan and what is observed now, whether the current step is
//! done and what comes next. Pure, so every path is unit-tested. The plan itself comes from the
//! strategy (`strategy/`).

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{CanaryScale, HeaderRoute, PauseReason, Strategy};

/// One step of a rollout plan.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Give the candidate this share of the app's replicas; done when those replicas are ready.
    Weight(i32),
    /// Wait this long, or without a duration until promoted.
    Pause(Option<Duration>),
    /// Measure in the foreground this long; done when nothing failed meanwhile.
    Analysis(Duration),
    /// From here on, requests with this header reach the candidate (with a route); done at once.
    HeaderRoute(HeaderRoute),
    /// From here on, the candidate's pods apart from its weight (with a route); done at once.
    CanaryScale(CanaryScale),
    /// The last step of every plan: the Service `<app>` selects the candidate alone, and the
    /// previous version is kept warm (out of the Service) for the revert window; done when its
    /// warm pods are Ready.
    Switch,
}

/// The header route in force at `step`: that of the last `setHeaderRoute` at or before it (none
/// from the switch on: the candidate then takes all traffic).
pub fn header_at(plan: &[Step], step: usize) -> Option<HeaderRoute> {
    if step + 1 >= plan.len() {
        return None;
    }
    plan.iter().take(step + 1).rev().find_map(|s| if let Step::HeaderRoute(h) = s { Some(h.clone()) } else { None })
}

/// The candidate's scale in force at `step`, apart from its weight (`None`: it follows the weight).
pub fn scale_at(plan: &[Step], step: usize) -> Option<CanaryScale> {
    let scale = plan
        .iter()
        .take(step + 1)
        .rev()
        .find_map(|s| if let Step::CanaryScale(c) = s { Some(c.clone()) } else { None });
    scale.filter(|c| c.match_traffic_weight != Some(true))
}

/// The steps of a strategy: its own steps (see `strategy/`), then weight 100 unless they end
/// there, then [`Step::Switch`].
pub fn plan(strategy: &Strategy) -> Vec<Step> {
    let mut steps = super::strategy::of(strategy.type_).steps(strategy);
    if steps.last() != Some(&Step::Weight(100)) {
        steps.push(Step::Weight(100));
    }
    steps.push(Step::Switch);
    steps
}

/// Verdict of the background analysis so far.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Passing,
    /// A metric passed its failure limit.
    Failed(String),
    /// A metric passed its inconclusive limit: a person must decide.
    Inconclusive(String),
}

/// What is observed now.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Index of the current step.
    pub step: usize,
    /// When the current step started.
    pub step_started: Timestamp,
    pub now: Timestamp,
    /// The pods the current step waits for are Ready (and, through a route, carry its traffic):
    /// every candidate replica wanted at the current weight or scale, or (at the switch) the
    /// previous version's warm pods.
    pub pods_ready: bool,
    /// Someone ran `kubectl phaseloop promote` for the current step.
    pub promoted: bool,
    pub analysis: Verdict,
    /// The progress deadline passed without the candidate becoming ready.
    pub deadline_missed: bool,
    /// A metric without enough successful measurements during the current step (checked when an
    /// analysis step ends), or over the rollout (checked before it finishes): never promote blind.
    pub unmeasured: Unmeasured,
}

/// Metrics short of their `minSuccessful` measurements, as messages.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unmeasured {
    /// During the current step.
    pub step: Option<String>,
    /// Since the rollout started (or since a person last promoted past an inconclusive pause).
    pub rollout: Option<String>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Stay on the step at `weight`; look again after `wait` (or on the next event).
    Hold { weight: i32, wait: Option<Duration> },
    /// Stay on the step, paused until promoted, saying why.
    Pause { weight: i32, why: PauseReason, reason: String },
    /// Go to step `step` (weights are applied when it is held).
    Advance { step: usize },
    /// Every step is done: the candidate takes all traffic and goes Live.
    Promote,
    /// The rollout failed: the stable version takes the app back (or, with `autoRollback: false`,
    /// the rollout pauses for a person).
    Fail(Failure),
}

/// Why a rollout failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// A metric passed its failure limit (the verdict in words).
    Analysis(String),
    /// The candidate did not become ready within the progress deadline.
    Deadline,
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            Failure::Analysis(why) => format!("analysis failed: {why}"),
            Failure::Deadline => "the candidate did not become ready within the progress deadline".into(),
        }
    }
}

/// The weight in force at `step`: that of the last weight step at or before it (0 before any;
/// 100 at the switch and after the plan).
pub fn weight_at(plan: &[Step], step: usize) -> i32 {
    if step + 1 >= plan.len() {
        return 100;
    }
    plan.iter().take(step + 1).rev().find_map(|s| if let Step::Weight(w) = s { Some(*w) } else { None }).unwrap_or(0)
}

/// Decides the next move of a rollout.
pub fn decide(plan: &[Step], o: &Observed) -> Decision {
    if let Verdict::Failed(why) = &o.analysis {
        return Decision::Fail(Failure::Analysis(why.clone()));
    }
    if o.deadline_missed {
        return Decision::Fail(Failure::Deadline);
    }
    let Some(step) = plan.get(o.step) else {
        return Decision::Promote;
    };
    let weight = weight_at(plan, o.step);
    if let Verdict::Inconclusive(why) = &o.analysis
        && !o.promoted
    {
        let reason = format!("analysis inconclusive: {why}; promote to go on or abort");
        return Decision::Pause { weight, why: PauseReason::AnalysisInconclusive, reason };
    }
    let next = Decision::Advance { step: o.step + 1 };
    let elapsed = Duration::try_from(o.now.duration_since(o.step_started)).unwrap_or_default();
    let blind = |what: &Option<String>| {
        what.as_ref().filter(|_| !o.promoted).map(|why| Decision::Pause {
            weight,
            why: PauseReason::AnalysisInconclusive,
            reason: format!("analysis inconclusive: {why}; promote to go on or abort"),
        })
    };
    match step {
        // The switch gives the candidate all traffic: it needs the rollout's measurements.
        Step::Weight(_) if o.step + 2 == plan.len() && o.pods_ready && blind(&o.unmeasured.rollout).is_some() => {
            blind(&o.unmeasured.rollout).unwrap_or(next)
        }
        Step::Switch if o.pods_ready => Decision::Promote,
        Step::Weight(_) if o.pods_ready => next,
        Step::HeaderRoute(_) | Step::CanaryScale(_) if o.pods_ready => next,
        Step::Weight(_) | Step::Switch | Step::HeaderRoute(_) | Step::CanaryScale(_) => {
            Decision::Hold { weight, wait: None }
        }
        Step::Pause(_) if o.promoted => next,
        Step::Pause(None) => {
            Decision::Pause { weight, why: PauseReason::PauseStep, reason: "paused until promoted".into() }
        }
        Step::Analysis(d) if elapsed >= *d => blind(&o.unmeasured.step).unwrap_or(next),
        Step::Pause(Some(d)) if elapsed >= *d => next,
        Step::Pause(Some(d)) | Step::Analysis(d) => Decision::Hold { weight, wait: Some(*d - elapsed) },
    }
}

/// When to look again at a held step: after its timed `wait`; or, waiting for pods, at the
/// progress deadline, since the Deployment's watch events wake the Release as its pods come up
/// (polling every few seconds instead was most of the reconciles of a large rollout). Never later
/// than the next analysis measurement or `cap`.
pub fn recheck_after(
    wait: Option<Duration>,
    deadline_left: Duration,
    analysis: Option<Duration>,
    cap: Duration,
) -> Duration {
    let wait = wait.unwrap_or(deadline_left) + Duration::from_secs(1);
    analysis.map_or(wait, |a| wait.min(a)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Canary, CanaryStep, Pause, StepAnalysis, StrategyType};

    fn canary(steps: Vec<CanaryStep>) -> Strategy {
        Strategy {
            type_: StrategyType::Canary,
            canary: Some(Canary { steps, traffic_routing: None }),
            ..Default::default()
        }
    }
    fn none() -> CanaryStep {
        CanaryStep { set_weight: None, pause: None, analysis: None, set_header_route: None, set_canary_scale: None }
    }
    fn w(n: i32) -> CanaryStep {
        CanaryStep { set_weight: Some(n), ..none() }
    }
    fn pause(d: Option<&str>) -> CanaryStep {
        CanaryStep { pause: Some(Pause { duration: d.map(|d| d.parse().unwrap()) }), ..none() }
    }
    fn analysis(d: &str) -> CanaryStep {
        CanaryStep { analysis: Some(StepAnalysis { duration: d.parse().unwrap() }), ..none() }
    }
    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }
    fn at(step: usize, started: i64, now: i64) -> Observed {
        Observed {
            step,
            step_started: t(started),
            now: t(now),
            pods_ready: false,
            promoted: false,
            analysis: Verdict::Passing,
            deadline_missed: false,
            unmeasured: Unmeasured::default(),
        }
    }

    #[test]
    fn plans_end_at_full_weight() {
        assert_eq!(plan(&Strategy::default()), [Step::Weight(100), Step::Switch]);
        let s = Strategy { type_: StrategyType::BlueGreen, ..Default::default() };
        assert_eq!(plan(&s), [Step::Weight(100), Step::Switch]);
        let p = plan(&canary(vec![w(10), pause(Some("1m")), analysis("2m"), w(50), pause(None)]));
        assert_eq!(
            p,
            [
                Step::Weight(10),
                Step::Pause(Some(Duration::from_secs(60))),
                Step::Analysis(Duration::from_secs(120)),
                Step::Weight(50),
                Step::Pause(None),
                Step::Weight(100),
                Step::Switch
            ]
        );
        assert_eq!(plan(&canary(vec![w(20), w(100)])), [Step::Weight(20), Step::Weight(100), Step::Switch]);
    }

    #[test]
    fn the_weight_in_force_is_the_last_weight_step() {
        let p = plan(&canary(vec![pause(Some("1m")), w(10), pause(None), w(40)]));
        assert_eq!([0, 1, 2, 3, 4, 5].map(|i| weight_at(&p, i)), [0, 10, 10, 40, 100, 100]);
    }

    #[test]
    fn a_weight_step_waits_for_the_candidate() {
        let p = plan(&canary(vec![w(25)]));
        assert_eq!(decide(&p, &at(0, 0, 5)), Decision::Hold { weight: 25, wait: None });
        let ready = Observed { pods_ready: true, ..at(0, 0, 5) };
        assert_eq!(decide(&p, &ready), Decision::Advance { step: 1 });
    }

    #[test]
    fn waiting_for_pods_rechecks_at_the_progress_deadline_not_by_polling() {
        let (s, cap) = (Duration::from_secs, Duration::from_secs(60));
        assert_eq!(recheck_after(None, s(600), None, cap), cap);
        assert_eq!(recheck_after(None, s(20), None, cap), s(21));
        assert_eq!(recheck_after(None, s(600), Some(s(10)), cap), s(10), "analysis measures on time");
        assert_eq!(recheck_after(Some(s(40)), s(600), None, cap), s(41), "a timed pause ends on time");
    }

    #[test]
    fn timed_pauses_and_analysis_steps_wait_their_time() {
        let p = plan(&canary(vec![w(10), pause(Some("1m")), analysis("30s")]));
        assert_eq!(decide(&p, &at(1, 0, 20)), Decision::Hold { weight: 10, wait: Some(Duration::from_secs(40)) });
        assert_eq!(decide(&p, &at(1, 0, 60)), Decision::Advance { step: 2 });
        assert_eq!(decide(&p, &at(2, 60, 70)), Decision::Hold { weight: 10, wait: Some(Duration::from_secs(20)) });
        assert_eq!(decide(&p, &at(2, 60, 95)), Decision::Advance { step: 3 });
    }

    #[test]
    fn an_open_pause_waits_for_promote() {
        let p = plan(&canary(vec![w(10), pause(None)]));
        assert!(matches!(decide(&p, &at(1, 0, 9999)), Decision::Pause { weight: 10, .. }));
        let promoted = Observed { promoted: true, ..at(1, 0, 5) };
        assert_eq!(decide(&p, &promoted), Decision::Advance { step: 2 });
    }

    #[test]
    fn the_end_of_the_plan_promotes() {
        let p = plan(&Strategy::default());
        assert_eq!(decide(&p, &at(2, 0, 1)), Decision::Promote);
    }

    #[test]
    fn the_switch_waits_for_the_previous_versions_warm_pods() {
        let p = plan(&Strategy::default());
        assert_eq!(decide(&p, &at(1, 0, 1)), Decision::Hold { weight: 100, wait: None });
        assert_eq!(decide(&p, &Observed { pods_ready: true, ..at(1, 0, 1) }), Decision::Promote);
    }

    #[test]
    fn never_promote_blind() {
        // Every query failed, but fewer times than the inconclusive limit: no verdict, no success.
        let p = plan(&canary(vec![w(50), analysis("1m")]));
        let unmeasured = |step: Option<&str>, rollout: Option<&str>| Unmeasured {
            step: step.map(Into::into),
            rollout: rollout.map(Into::into),
        };
        let end_of_analysis =
            Observed { unmeasured: unmeasured(Some("errors: 0 of 1 successful"), None), ..at(1, 0, 60) };
        assert!(
            matches!(decide(&p, &end_of_analysis), Decision::Pause { reason, .. } if reason.contains("errors: 0 of 1"))
        );
        // At full weight, before the switch gives the candidate all traffic.
        let full = Observed {
            pods_ready: true,
            unmeasured: unmeasured(None, Some("errors: 0 of 1 successful")),
            ..at(2, 0, 61)
        };
        assert!(matches!(decide(&p, &full), Decision::Pause { .. }));
        // A person may go on anyway.
        assert_eq!(decide(&p, &Observed { promoted: true, ..full }), Decision::Advance { step: 3 });
    }

    #[test]
    fn failed_analysis_and_missed_deadlines_abort_at_any_step() {
        let p = plan(&canary(vec![w(10), pause(None)]));
        for step in 0..3 {
            let failed = Observed { analysis: Verdict::Failed("errors 0.3 > 0.01".into()), ..at(step, 0, 1) };
            assert!(matches!(decide(&p, &failed), Decision::Fail(Failure::Analysis(m)) if m.contains("errors")));
            let late = Observed { deadline_missed: true, ..at(step, 0, 1) };
            assert_eq!(decide(&p, &late), Decision::Fail(Failure::Deadline));
        }
    }

    #[test]
    fn inconclusive_analysis_pauses_until_a_person_decides() {
        let p = plan(&canary(vec![w(10), pause(Some("1m"))]));
        let unsure = Observed { analysis: Verdict::Inconclusive("no data".into()), ..at(1, 0, 120) };
        assert!(matches!(decide(&p, &unsure), Decision::Pause { reason, .. } if reason.contains("no data")));
        let promoted = Observed { promoted: true, ..unsure };
        assert_eq!(decide(&p, &promoted), Decision::Advance { step: 2 });
    }
}
