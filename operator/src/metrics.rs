//! The operator's Prometheus metrics, on its own Registry (not the process-global default one), so
//! `/metrics` shows exactly what phaseloop defines. Labels are bounded: controller names, error
//! reasons, and the namespace and app of a Release (one series set per app, not per version, pod or
//! request).

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    reconcile_duration: HistogramVec,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    scaling_observed: GaugeVec,
    scaling_desired: IntGaugeVec,
    scaling_events: IntCounterVec,
}

/// Labels of per-app series.
const APP: &[&str] = &["namespace", "app"];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("phaseloop".into()), None).expect("valid prefix");
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Time a reconcile took.")
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["controller"],
        )
        .expect("valid metric");
        let reconciles = IntCounterVec::new(Opts::new("reconciles_total", "Reconciles run."), &["controller"])
            .expect("valid metric");
        let reconcile_errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Reconciles that failed."),
            &["controller", "reason"],
        )
        .expect("valid metric");
        let scaling_observed =
            GaugeVec::new(Opts::new("scaling_observed_value", "Last load read by the autoscaler of an app."), APP)
                .expect("valid metric");
        let scaling_desired = IntGaugeVec::new(
            Opts::new("scaling_desired_replicas", "Total replicas the autoscaler wants for an app."),
            APP,
        )
        .expect("valid metric");
        let scaling_events = IntCounterVec::new(
            Opts::new("scaling_events_total", "Changes of an app's total replicas by the autoscaler."),
            &["namespace", "app", "direction"],
        )
        .expect("valid metric");
        for c in [
            Box::new(reconcile_duration.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(reconciles.clone()),
            Box::new(reconcile_errors.clone()),
            Box::new(scaling_observed.clone()),
            Box::new(scaling_desired.clone()),
            Box::new(scaling_events.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            reconcile_duration,
            reconciles,
            reconcile_errors,
            scaling_observed,
            scaling_desired,
            scaling_events,
        }
    }

    /// Records one autoscaler decision for an app: its reading (if any), its total, and the change.
    pub fn observe_scaling(&self, namespace: &str, app: &str, observed: Option<f64>, from: i32, to: i32) {
        if let Some(v) = observed {
            self.scaling_observed.with_label_values(&[namespace, app]).set(v);
        }
        self.scaling_desired.with_label_values(&[namespace, app]).set(to.into());
        if to != from {
            let direction = if to > from { "up" } else { "down" };
            self.scaling_events.with_label_values(&[namespace, app, direction]).inc();
        }
    }

    /// Records one reconcile of `controller`; `error` is the error reason when it failed.
    pub fn observe_reconcile(&self, controller: &str, took: Duration, error: Option<&str>) {
        self.reconcile_duration.with_label_values(&[controller]).observe(took.as_secs_f64());
        self.reconciles.with_label_values(&[controller]).inc();
        if let Some(reason) = error {
            self.reconcile_errors.with_label_values(&[controller, reason]).inc();
        }
    }

    /// Text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_and_errors_are_counted_per_controller() {
        let m = Metrics::new();
        m.observe_reconcile("release", Duration::from_millis(3), None);
        m.observe_reconcile("release", Duration::from_millis(3), Some("conflict"));
        let text = m.render();
        assert!(text.contains("phaseloop_reconciles_total{controller=\"release\"} 2"), "{text}");
        assert!(text.contains("phaseloop_reconcile_errors_total{controller=\"release\",reason=\"conflict\"} 1"));
        assert!(text.contains("phaseloop_reconcile_duration_seconds_count{controller=\"release\"} 2"));
    }

    #[test]
    fn scaling_decisions_set_gauges_and_count_changes_by_direction() {
        let m = Metrics::new();
        m.observe_scaling("shop", "web", Some(420.0), 2, 5);
        m.observe_scaling("shop", "web", None, 5, 5);
        m.observe_scaling("shop", "web", Some(10.0), 5, 1);
        let text = m.render();
        assert!(text.contains("phaseloop_scaling_observed_value{app=\"web\",namespace=\"shop\"} 10"), "{text}");
        assert!(text.contains("phaseloop_scaling_desired_replicas{app=\"web\",namespace=\"shop\"} 1"));
        assert!(text.contains("phaseloop_scaling_events_total{app=\"web\",direction=\"up\",namespace=\"shop\"} 1"));
        assert!(text.contains("phaseloop_scaling_events_total{app=\"web\",direction=\"down\",namespace=\"shop\"} 1"));
    }
}
