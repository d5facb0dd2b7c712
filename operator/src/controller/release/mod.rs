//! The Release controller: the Test, Release and Deploy phases of the loop, and Operate's total.
//!
//! A reconcile observes, decides, then acts (`reconcile/`). [`decide::decide`] is the whole
//! decision, a pure function of what was observed; its parts, pure too: [`validate`], [`queue`]
//! (who rolls out), [`gate`] (the promotion rule), [`approval`] (whether an approval counts), [`steps`] (the step machine), [`strategy`] (one
//! file per strategy: its steps and how pods are placed), [`traffic`] (what serves, and the routers
//! that carry it out), [`split`] (replicas by weight), [`handover`] (a rolling handover between two
//! versions), [`analysis`] (measurement bookkeeping), [`test_jobs`] and [`workload`] (the objects
//! built, and the verdict of test Jobs).

pub mod analysis;
pub mod approval;
pub mod decide;
pub mod diff;
pub mod gate;
pub mod handover;
pub mod queue;
mod reconcile;
pub mod split;
pub mod steps;
pub mod strategy;
pub mod test_jobs;
pub mod traffic;
pub mod workload;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use reconcile::{controller, run};

use crate::{
    api::{ReleasePhase, ReleaseSpec, ReleaseStatus, Tier},
    promql,
};

/// Name of this controller in metrics and logs.
pub const NAME: &str = "release";
pub use crate::api::annotation::{ABORT, APPROVED_BY, OVERRIDE, PROMOTE, REVERT};
/// Finalizer held while a Release serves (Live, rolling out, or the warm previous version in a
/// revert window), so a deletion waits until it no longer does, as a PersistentVolumeClaim in use
/// waits.
pub const SERVING_FINALIZER: &str = "phaseloop.dev/serving";

/// Spec problems the API server cannot see: each message says what to change. `tier` is the tier
/// of the namespace's Environment, when there is one.
pub fn validate(spec: &ReleaseSpec, tier: Option<Tier>) -> Vec<String> {
    use crate::api::{below, least};
    let mut problems = crate::api::duration_problems(spec);
    let s = &spec.strategy;
    let bounds = [
        below("spec.strategy.progressDeadline", s.progress_deadline, least::PROGRESS_DEADLINE),
        s.analysis.as_ref().and_then(|a| below("spec.strategy.analysis.interval", a.interval, least::INTERVAL)),
        spec.scaling.as_ref().and_then(|sc| below("spec.scaling.interval", sc.interval, least::INTERVAL)),
        spec.test_environment
            .as_ref()
            .and_then(|t| below("spec.testEnvironment.ttl", t.ttl, least::TEST_ENVIRONMENT_TTL)),
    ];
    problems.extend(bounds.into_iter().flatten());
    for t in &spec.tests {
        problems.extend(below(&format!("spec.tests[{}].timeout", t.name), t.timeout, least::INTERVAL));
    }
    for (i, step) in s.canary.iter().flat_map(|c| &c.steps).enumerate() {
        if let Some(a) = &step.analysis {
            problems.extend(below(
                &format!("spec.strategy.canary.steps[{i}].analysis.duration"),
                a.duration,
                least::INTERVAL,
            ));
        }
    }
    if tier == Some(Tier::Production) && spec.scaling.as_ref().is_some_and(|s| s.min_replicas == 0) {
        problems.push("scaling.minReplicas: 0 (scale to zero) is not allowed in a production Environment".into());
    }
    let analysis = spec.strategy.analysis.iter().flat_map(|a| &a.metrics);
    for m in analysis {
        if let Err(e) = promql::check(&m.query) {
            problems.push(format!("strategy.analysis.metrics[{}].query: {e}", m.name));
        }
    }
    if let Some(s) = &spec.scaling
        && let Err(e) = promql::check(&s.metric.query)
    {
        problems.push(format!("scaling.metric.query: {e}"));
    }
    problems
}

/// Moves `status` to `phase`, stamping the time a phase is first entered.
pub fn enter(status: &mut ReleaseStatus, phase: ReleasePhase, now: &Time) {
    if status.phase != Some(phase) {
        status.phase_times.entry(phase.as_str().to_string()).or_insert_with(|| now.clone());
        status.phase = Some(phase);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{Analysis, AnalysisMetric, Release, Strategy, condition, reason},
        controller::conditions,
    };

    /// The status a queued Release's decision writes: validation, phase and conditions.
    fn desired_status(rel: &Release, tier: Option<Tier>, now: &Time) -> ReleaseStatus {
        let siblings = [rel.clone()];
        let o = decide::Observation {
            rel,
            now: now.clone(),
            tier,
            role: queue::Role::Queued(1),
            siblings: &siblings,
            stable: None,
            promotion: None,
            own: Default::default(),
            other: Default::default(),
            others_up: vec![],
            tests: None,
            measurements: None,
            upstream: None,
            scaling: Default::default(),
            clash: None,
            namespace_terminating: false,
            routes: vec![],
            routing_off: None,
            canary_endpoints: 0,
        };
        decide::decide(&o).status
    }

    fn release(spec_json: serde_json::Value) -> Release {
        crate::fixtures::release("shop-1-2-0", spec_json)
    }

    fn minimal() -> serde_json::Value {
        serde_json::json!({"app": "shop", "version": "1.2.0", "template": {"spec": {"containers": [{"name": "app", "image": "shop:1.2.0"}]}}})
    }

    fn now() -> Time {
        Time("2026-11-26T10:00:00Z".parse().unwrap())
    }

    #[test]
    fn defaults_match_the_design() {
        let r = release(minimal());
        assert_eq!(r.spec.replicas, 1);
        assert_eq!(r.spec.strategy, Strategy::default());
        assert_eq!(std::time::Duration::from(r.spec.strategy.progress_deadline).as_secs(), 600);
        assert_eq!(std::time::Duration::from(r.spec.strategy.revert_window).as_secs(), 1800);
        assert!(r.spec.strategy.auto_rollback);
    }

    #[test]
    fn a_new_release_is_pending_and_records_when() {
        let s = desired_status(&release(minimal()), None, &now());
        assert_eq!(s.phase, Some(ReleasePhase::Pending));
        assert_eq!(s.phase_times.get("Pending"), Some(&now()));
        assert_eq!(s.observed_generation, Some(1));
        assert!(!conditions::is_true(&s.conditions, condition::DEGRADED));
    }

    #[test]
    fn an_unknown_query_placeholder_is_degraded_with_a_clear_message() {
        let mut r = release(minimal());
        r.spec.strategy.analysis = Some(Analysis {
            interval: "30s".parse().unwrap(),
            metrics: vec![AnalysisMetric {
                name: "errors".into(),
                query: "rate(errors{pod=\"{{pod}}\"}[1m])".into(),
                min: None,
                max: Some(0.01),
                failure_limit: 0,
                inconclusive_limit: 3,
                min_successful: 1,
            }],
        });
        let s = desired_status(&r, None, &now());
        let c = conditions::find(&s.conditions, condition::DEGRADED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", reason::INVALID_SPEC));
        assert!(c.message.contains("metrics[errors].query") && c.message.contains("{{pod}}"), "{}", c.message);
        assert!(s.message.unwrap().contains("nothing was changed"));
    }

    #[test]
    fn the_decision_of_a_queued_release_is_a_fixed_point() {
        let mut r = release(minimal());
        let first = desired_status(&r, None, &now());
        r.status = Some(first.clone());
        let later = Time("2026-11-26T12:00:00Z".parse().unwrap());
        assert_eq!(desired_status(&r, None, &later), first);
    }

    #[test]
    fn scale_to_zero_is_refused_in_production_only() {
        let mut spec = minimal();
        spec["scaling"] = serde_json::json!({"minReplicas": 0, "maxReplicas": 4,
            "metric": {"query": "sum(load)", "targetPerReplica": 10.0}});
        let r = release(spec);
        let s = desired_status(&r, Some(Tier::Production), &now());
        let c = conditions::find(&s.conditions, condition::DEGRADED).unwrap();
        assert_eq!(c.status, "True");
        assert!(c.message.contains("scaling.minReplicas"), "{}", c.message);
        for tier in [None, Some(Tier::Staging), Some(Tier::Preview)] {
            assert!(!conditions::is_true(&desired_status(&r, tier, &now()).conditions, condition::DEGRADED));
        }
    }

    #[test]
    fn a_stored_out_of_bounds_duration_degrades_that_release_and_decodes_with_the_others() {
        // As a LIST returns them: one object written under a looser schema among good ones.
        let mut bad = minimal();
        bad["strategy"] = serde_json::json!({"revertWindow": "99999999999999999999h"});
        let item = |name: &str, spec: serde_json::Value| {
            serde_json::json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
                "metadata": {"name": name, "namespace": "prod", "generation": 1}, "spec": spec})
        };
        let list = serde_json::json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "ReleaseList",
            "metadata": {}, "items": [item("good", minimal()), item("bad", bad)]});
        let list: kube::core::ObjectList<Release> = serde_json::from_value(list).unwrap();
        let [good, bad] = &list.items[..] else { panic!("two items") };
        assert!(!conditions::is_true(&desired_status(good, None, &now()).conditions, condition::DEGRADED));
        let s = desired_status(bad, None, &now());
        let c = conditions::find(&s.conditions, condition::DEGRADED).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", reason::INVALID_SPEC));
        assert!(c.message.contains("spec.strategy.revertWindow"), "{}", c.message);
    }
}
