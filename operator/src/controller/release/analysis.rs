//! Pure bookkeeping of analysis measurements: one measurement's outcome, the running tally per
//! metric, and the verdict over all metrics.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::steps::Verdict;
use crate::api::{AnalysisMetric, AnalysisResult, Measurement};

/// Outcome of one measurement: `None` (query error, no data) is inconclusive, never a failure.
pub fn outcome(metric: &AnalysisMetric, value: Option<f64>) -> Measurement {
    match value {
        None => Measurement::Inconclusive,
        Some(v) if metric.min.is_some_and(|min| v < min) || metric.max.is_some_and(|max| v > max) => {
            Measurement::Failed
        }
        Some(_) => Measurement::Successful,
    }
}

/// Adds one measurement to a metric's tally.
pub fn record(
    previous: Option<&AnalysisResult>,
    metric: &AnalysisMetric,
    value: Option<f64>,
    now: &Time,
) -> AnalysisResult {
    let mut r = previous.cloned().unwrap_or_else(|| AnalysisResult { name: metric.name.clone(), ..Default::default() });
    let o = outcome(metric, value);
    match o {
        Measurement::Successful => {
            r.successes += 1;
            r.step_successes += 1;
        }
        Measurement::Failed => r.failures += 1,
        Measurement::Inconclusive => r.inconclusive += 1,
    }
    r.value = value.or(r.value);
    r.last_result = Some(o);
    r.measured_at = Some(now.clone());
    r
}

/// The verdict over every metric: a metric failed more than `failureLimit` times fails the
/// analysis; one inconclusive more than `inconclusiveLimit` times makes it inconclusive.
pub fn verdict(metrics: &[AnalysisMetric], results: &[AnalysisResult]) -> Verdict {
    let mut unsure = None;
    for m in metrics {
        let Some(r) = results.iter().find(|r| r.name == m.name) else {
            continue;
        };
        if r.failures > m.failure_limit {
            let value = r.value.map(|v| v.to_string()).unwrap_or_else(|| "?".into());
            return Verdict::Failed(format!(
                "{} = {value} outside {} ({} failures, limit {})",
                m.name,
                bounds(m),
                r.failures,
                m.failure_limit
            ));
        }
        if r.inconclusive > m.inconclusive_limit && unsure.is_none() {
            unsure = Some(format!(
                "{}: {} inconclusive measurements, limit {}",
                m.name, r.inconclusive, m.inconclusive_limit
            ));
        }
    }
    unsure.map(Verdict::Inconclusive).unwrap_or(Verdict::Passing)
}

/// Metrics short of `minSuccessful` successful measurements, during the current step (`step`)
/// and over the tally (`rollout`): promotion past a step with analysis needs them.
pub fn unmeasured(metrics: &[AnalysisMetric], results: &[AnalysisResult]) -> super::steps::Unmeasured {
    let short = |count: fn(&AnalysisResult) -> i32| {
        let missing: Vec<String> = metrics
            .iter()
            .filter_map(|m| {
                let n = results.iter().find(|r| r.name == m.name).map(count).unwrap_or(0);
                (n < m.min_successful)
                    .then(|| format!("{}: {n} of {} successful measurements", m.name, m.min_successful))
            })
            .collect();
        (!missing.is_empty()).then(|| missing.join(", "))
    };
    super::steps::Unmeasured { step: short(|r| r.step_successes), rollout: short(|r| r.successes) }
}

/// A fresh tally (a person promoted past an inconclusive pause, or overrode a failure): the counts
/// start again, the last value stays for reference.
pub fn restart(results: &mut [AnalysisResult]) {
    for r in results {
        (r.successes, r.failures, r.inconclusive, r.step_successes) = (0, 0, 0, 0);
    }
}

/// A new step starts: its own successes count from zero.
pub fn next_step(results: &mut [AnalysisResult]) {
    for r in results {
        r.step_successes = 0;
    }
}

fn bounds(m: &AnalysisMetric) -> String {
    match (m.min, m.max) {
        (Some(a), Some(b)) => format!("[{a}, {b}]"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "any".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(min: Option<f64>, max: Option<f64>, failure_limit: i32, inconclusive_limit: i32) -> AnalysisMetric {
        AnalysisMetric {
            name: "errors".into(),
            query: "q".into(),
            min,
            max,
            failure_limit,
            inconclusive_limit,
            min_successful: 1,
        }
    }
    fn t() -> Time {
        Time("2026-11-26T10:00:00Z".parse().unwrap())
    }

    #[test]
    fn outcomes_follow_the_bounds_and_missing_data_is_inconclusive() {
        let m = metric(Some(0.9), Some(1.0), 0, 0);
        assert_eq!(outcome(&m, Some(0.95)), Measurement::Successful);
        assert_eq!(outcome(&m, Some(0.9)), Measurement::Successful, "bounds are inclusive");
        assert_eq!(outcome(&m, Some(0.5)), Measurement::Failed);
        assert_eq!(outcome(&m, Some(1.5)), Measurement::Failed);
        assert_eq!(outcome(&m, None), Measurement::Inconclusive);
    }

    #[test]
    fn the_tally_counts_and_keeps_the_last_value() {
        let m = metric(None, Some(0.01), 1, 3);
        let r = record(None, &m, Some(0.0), &t());
        let r = record(Some(&r), &m, Some(0.5), &t());
        let r = record(Some(&r), &m, None, &t());
        assert_eq!((r.successes, r.failures, r.inconclusive, r.step_successes), (1, 1, 1, 1));
        assert_eq!(r.value, Some(0.5));
        assert_eq!(r.last_result, Some(Measurement::Inconclusive));
    }

    #[test]
    fn failures_beyond_the_limit_fail_and_inconclusive_beyond_the_limit_pause() {
        let m = metric(None, Some(0.01), 1, 2);
        let mut r = AnalysisResult { name: "errors".into(), failures: 1, value: Some(0.3), ..Default::default() };
        assert_eq!(verdict(std::slice::from_ref(&m), std::slice::from_ref(&r)), Verdict::Passing);
        r.failures = 2;
        assert!(
            matches!(verdict(std::slice::from_ref(&m), std::slice::from_ref(&r)), Verdict::Failed(s) if s.contains("errors = 0.3 outside <= 0.01"))
        );
        let r = AnalysisResult { name: "errors".into(), inconclusive: 3, ..Default::default() };
        assert!(matches!(verdict(&[m], &[r]), Verdict::Inconclusive(_)));
    }

    #[test]
    fn a_metric_that_never_measured_is_unmeasured_in_the_step_and_the_rollout() {
        let m = metric(None, Some(0.01), 0, 5);
        let errors_only = AnalysisResult { name: "errors".into(), inconclusive: 4, ..Default::default() };
        let u = unmeasured(std::slice::from_ref(&m), std::slice::from_ref(&errors_only));
        assert!(u.step.as_deref().is_some_and(|s| s.contains("errors: 0 of 1")) && u.rollout.is_some(), "{u:?}");
        let measured = record(Some(&errors_only), &m, Some(0.0), &t());
        assert_eq!(unmeasured(std::slice::from_ref(&m), std::slice::from_ref(&measured)), Default::default());
        let mut next = vec![measured];
        next_step(&mut next);
        let u = unmeasured(std::slice::from_ref(&m), &next);
        assert!(u.step.is_some() && u.rollout.is_none(), "a new step needs its own measurement: {u:?}");
        restart(&mut next);
        assert_eq!((next[0].successes, next[0].inconclusive, next[0].value), (0, 0, Some(0.0)));
        let zero = AnalysisMetric { min_successful: 0, ..m };
        assert_eq!(unmeasured(&[zero], &[]), Default::default(), "minSuccessful 0 turns it off");
    }
}
