//! The operator's Prometheus metrics, on its own Registry (not the process-global default one), so
//! `/metrics` shows exactly what phaseloop defines. Labels are bounded: controller names, error
//! reasons, the namespace and app of a Release (one series set per app, not per version, pod or
//! request), an Environment's name and tier. See docs/operations.md for the list.

pub mod requests;
mod state;

use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
    core::Collector,
};

pub use state::StateCollector;

use crate::dora::Record;

pub struct Metrics {
    registry: Registry,
    reconcile_duration: HistogramVec,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    scaling_observed: GaugeVec,
    scaling_desired: IntGaugeVec,
    scaling_events: IntCounterVec,
    prometheus_queries: IntCounterVec,
    dora_deployments: IntCounterVec,
    dora_change_failures: IntCounterVec,
    dora_lead_time: HistogramVec,
    dora_time_to_restore: HistogramVec,
    environment_expirations: IntCounterVec,
    promotion_requests: IntCounterVec,
    leader: prometheus::IntGauge,
    api_requests: IntCounterVec,
    watch_to_reconcile: HistogramVec,
    bookkeeping: IntGaugeVec,
    clock_skew: prometheus::Gauge,
    /// The last skew measured, for the decisions that depend on it.
    skew: std::sync::Mutex<Option<jiff::SignedDuration>>,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid metric")
}

/// Lead time and time to restore: one minute to one week.
const DORA_BUCKETS: &[f64] =
    &[60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0];

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
        let prometheus_queries = counter(
            "prometheus_queries_total",
            "Queries to Prometheus by purpose (analysis, scaling) and result (ok, unreachable, rejected, empty).",
            &["purpose", "result"],
        );
        let dora_deployments = counter(
            "dora_deployments_total",
            "Deployments by result: success (went Live), failed, rolled_back, reverted (after a success).",
            &["namespace", "app", "result"],
        );
        let dora_change_failures =
            counter("dora_change_failures_total", "Deployments rolled back, reverted, or failed during rollout.", APP);
        let dora_lead_time = histogram(
            "dora_lead_time_seconds",
            "Commit (phaseloop.dev/commit-time) or Release creation to Live.",
            DORA_BUCKETS,
            APP,
        );
        let dora_time_to_restore = histogram(
            "dora_time_to_restore_seconds",
            "A failed deployment to the next Live of the same app (a revert restores at once).",
            DORA_BUCKETS,
            APP,
        );
        let environment_expirations =
            counter("environment_expirations_total", "Environments deleted because their ttl was reached.", &["tier"]);
        let promotion_requests = counter(
            "promotion_requests_total",
            "Promotion requests by result: opened (a Release created for a version Live upstream), approved (its rollout started after an approval), superseded.",
            &["result"],
        );
        let leader = prometheus::IntGauge::new(
            "leader",
            "1 while this process runs the controllers (the leader, or the only one).",
        )
        .expect("valid metric");
        let api_requests = counter(
            "kube_requests_total",
            "Requests to the Kubernetes API server by verb (get, list, watch, create, patch, update, delete) and resource.",
            &["verb", "resource"],
        );
        let watch_to_reconcile = histogram(
            "watch_to_reconcile_seconds",
            "From a watch event that concerns an object to the start of its reconcile (queueing and debounce).",
            &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            &["controller"],
        );
        let bookkeeping = IntGaugeVec::new(
            Opts::new(
                "bookkeeping_entries",
                "Entries of the operator's per-object bookkeeping by map, as of the last sweep (they end where they started when objects come and go).",
            ),
            &["map"],
        )
        .expect("valid metric");
        let clock_skew = prometheus::Gauge::new(
            "clock_skew_seconds",
            "This operator's clock minus the API server's, from the Date header of its last response (about a second of it is measurement). Beyond 5s either way, no ttl deletion happens.",
        )
        .expect("valid metric");
        let metrics = Metrics {
            registry,
            clock_skew,
            skew: Default::default(),
            bookkeeping,
            leader,
            api_requests,
            watch_to_reconcile,
            reconcile_duration,
            reconciles,
            reconcile_errors,
            scaling_observed,
            scaling_desired,
            scaling_events,
            prometheus_queries,
            dora_deployments,
            dora_change_failures,
            dora_lead_time,
            dora_time_to_restore,
            environment_expirations,
            promotion_requests,
        };
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.reconcile_duration.clone()),
            Box::new(metrics.reconciles.clone()),
            Box::new(metrics.reconcile_errors.clone()),
            Box::new(metrics.scaling_observed.clone()),
            Box::new(metrics.scaling_desired.clone()),
            Box::new(metrics.scaling_events.clone()),
            Box::new(metrics.prometheus_queries.clone()),
            Box::new(metrics.dora_deployments.clone()),
            Box::new(metrics.dora_change_failures.clone()),
            Box::new(metrics.dora_lead_time.clone()),
            Box::new(metrics.dora_time_to_restore.clone()),
            Box::new(metrics.environment_expirations.clone()),
            Box::new(metrics.promotion_requests.clone()),
            Box::new(metrics.leader.clone()),
            Box::new(metrics.api_requests.clone()),
            Box::new(metrics.watch_to_reconcile.clone()),
            Box::new(metrics.bookkeeping.clone()),
            Box::new(metrics.clock_skew.clone()),
            // Resident memory, CPU seconds, open files of this process (Linux).
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            metrics.register(c);
        }
        metrics
    }

    /// Records `skew`, this operator's clock minus the API server's (see `crate::client`).
    pub fn observe_clock_skew(&self, skew: jiff::SignedDuration) {
        self.clock_skew.set(skew.as_secs_f64());
        if let Ok(mut s) = self.skew.lock() {
            *s = Some(skew);
        }
    }

    /// The skew last recorded (`None`: no response has carried a `Date` header yet).
    pub fn clock_skew(&self) -> Option<jiff::SignedDuration> {
        self.skew.lock().ok().and_then(|s| *s)
    }

    /// The size of one bookkeeping map (see `controller::memory`).
    pub fn set_bookkeeping(&self, map: &str, entries: usize) {
        self.bookkeeping.with_label_values(&[map]).set(entries as i64);
    }

    /// Removes the series of apps other than `live` (namespace, app): an app whose last Release
    /// is gone (a deleted test or preview namespace, say) leaves nothing behind. Returns the apps
    /// that keep series.
    pub fn retain_apps(&self, live: &std::collections::HashSet<(String, String)>) -> usize {
        use prometheus::core::Collector;
        let mut seen: std::collections::HashSet<(String, String)> = Default::default();
        let app_metrics: [&dyn Collector; 7] = [
            &self.scaling_observed,
            &self.scaling_desired,
            &self.scaling_events,
            &self.dora_deployments,
            &self.dora_change_failures,
            &self.dora_lead_time,
            &self.dora_time_to_restore,
        ];
        for family in app_metrics.iter().flat_map(|c| c.collect()) {
            for m in family.get_metric() {
                let label = |name: &str| m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string());
                if let (Some(ns), Some(app)) = (label("namespace"), label("app")) {
                    seen.insert((ns, app));
                }
            }
        }
        for (ns, app) in seen.iter().filter(|a| !live.contains(*a)) {
            let (ns, app) = (ns.as_str(), app.as_str());
            let _ = self.scaling_observed.remove_label_values(&[ns, app]);
            let _ = self.scaling_desired.remove_label_values(&[ns, app]);
            for direction in ["up", "down"] {
                let _ = self.scaling_events.remove_label_values(&[ns, app, direction]);
            }
            for result in crate::dora::Outcome::ALL {
                let _ = self.dora_deployments.remove_label_values(&[ns, app, result.as_str()]);
            }
            let _ = self.dora_change_failures.remove_label_values(&[ns, app]);
            let _ = self.dora_lead_time.remove_label_values(&[ns, app]);
            let _ = self.dora_time_to_restore.remove_label_values(&[ns, app]);
        }
        seen.iter().filter(|a| live.contains(*a)).count()
    }

    /// Adds a collector (the gauges computed from the caches at scrape time).
    pub fn register(&self, c: Box<dyn Collector>) {
        self.registry.register(c).expect("metric registered once");
    }

    /// Creates an app's DORA counters at zero, so that `increase()` sees its first deployment (a
    /// series born at 1 would count as no increase) and the rates exist before anything happens.
    pub fn touch_dora(&self, namespace: &str, app: &str) {
        for result in ["success", "failed", "rolled_back", "reverted"] {
            self.dora_deployments.with_label_values(&[namespace, app, result]);
        }
        self.dora_change_failures.with_label_values(&[namespace, app]);
    }

    /// Adds DORA records to the counters and histograms.
    pub fn record_dora(&self, records: &[Record]) {
        for r in records {
            match r {
                Record::Deployment { namespace, app, result } => {
                    self.dora_deployments.with_label_values(&[namespace, app, result.as_str()]).inc()
                }
                Record::ChangeFailure { namespace, app } => {
                    self.dora_change_failures.with_label_values(&[namespace, app]).inc()
                }
                Record::LeadTime { namespace, app, seconds } => {
                    self.dora_lead_time.with_label_values(&[namespace, app]).observe(*seconds)
                }
                Record::TimeToRestore { namespace, app, seconds } => {
                    self.dora_time_to_restore.with_label_values(&[namespace, app]).observe(*seconds)
                }
            }
        }
    }

    /// Counts one Prometheus query of `purpose` (`analysis`, `scaling`).
    pub fn observe_query(&self, purpose: &str, result: &Result<f64, crate::prometheus::QueryError>) {
        use crate::prometheus::QueryError::*;
        let label = match result {
            Ok(_) => "ok",
            Err(Unreachable(_)) => "unreachable",
            Err(Rejected(_)) => "rejected",
            Err(Empty | Ambiguous(_) | NotANumber(_)) => "empty",
        };
        self.prometheus_queries.with_label_values(&[purpose, label]).inc();
    }

    /// Whether this process runs the controllers.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(leading.into());
    }

    /// Counts an Environment deleted at the end of its ttl.
    pub fn observe_expiration(&self, tier: &str) {
        self.environment_expirations.with_label_values(&[tier]).inc();
    }

    /// Counts a promotion request opened or superseded.
    pub fn observe_promotion_request(&self, result: &str) {
        self.promotion_requests.with_label_values(&[result]).inc();
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

    /// Counts one request to the API server.
    pub fn observe_request(&self, verb: &str, resource: &str) {
        self.api_requests.with_label_values(&[verb, resource]).inc();
    }

    /// Records how long a watch event waited for the reconcile it triggered.
    pub fn observe_watch_to_reconcile(&self, controller: &str, waited: Duration) {
        self.watch_to_reconcile.with_label_values(&[controller]).observe(waited.as_secs_f64());
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
