//! Gauges computed at scrape time from the controllers' caches: release phases, canary weights,
//! deploy markers, scaling bounds and actual replicas, environments by tier and phase, expiries.
//! Computed rather than maintained, they can never drift from the objects, survive restarts for
//! free, and a deleted object's series disappear with it.

use std::{collections::BTreeMap, sync::Arc};

use kube::{ResourceExt, runtime::reflector::Store};
use prometheus::{GaugeVec, IntGaugeVec, Opts, core::Collector, core::Desc, proto::MetricFamily};

use crate::api::{Environment, Release, ReleasePhase};

/// Deploy markers kept per app: the newest versions that went Live.
const MARKERS_PER_APP: usize = 3;

struct Gauges {
    releases: IntGaugeVec,
    canary_weight: IntGaugeVec,
    inconclusive: IntGaugeVec,
    live_timestamp: GaugeVec,
    actual_replicas: IntGaugeVec,
    max_replicas: IntGaugeVec,
    environments: IntGaugeVec,
    expires: GaugeVec,
}

const APP: &[&str] = &["namespace", "app"];

impl Gauges {
    fn new() -> Self {
        let int = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let float = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        Gauges {
            releases: int("releases", "Releases of an app by phase.", &["namespace", "app", "phase"]),
            canary_weight: int("release_canary_weight", "Traffic weight (%) of the app's newest version.", APP),
            inconclusive: int(
                "release_analysis_inconclusive",
                "Inconclusive analysis measurements of the app's rollout in flight.",
                APP,
            ),
            live_timestamp: float(
                "release_live_timestamp_seconds",
                "When a version went Live (deploy marker; the newest 3 per app).",
                &["namespace", "app", "version"],
            ),
            actual_replicas: int("scaling_actual_replicas", "Replicas of an autoscaled app, all versions.", APP),
            max_replicas: int("scaling_max_replicas", "maxReplicas of an autoscaled app.", APP),
            environments: int("environments", "Environments by tier and phase.", &["tier", "phase"]),
            expires: float(
                "environment_expires_timestamp_seconds",
                "When an Environment with a ttl will be deleted.",
                &["environment", "tier"],
            ),
        }
    }

    /// The families with at least one series (an empty family is invalid in the text format).
    fn families(&self) -> Vec<MetricFamily> {
        self.collectors().iter().flat_map(|c| c.collect()).filter(|f| !f.get_metric().is_empty()).collect()
    }

    fn collectors(&self) -> [&dyn Collector; 8] {
        [
            &self.releases,
            &self.canary_weight,
            &self.inconclusive,
            &self.live_timestamp,
            &self.actual_replicas,
            &self.max_replicas,
            &self.environments,
            &self.expires,
        ]
    }

    fn fill(&self, releases: &[Arc<Release>], environments: &[Arc<Environment>]) {
        let mut apps: BTreeMap<(String, String), Vec<&Release>> = BTreeMap::new();
        for r in releases {
            apps.entry((r.ns().to_string(), r.spec.app.clone())).or_default().push(r);
        }
        for ((ns, app), rels) in &apps {
            let phase = |r: &Release| r.status.as_ref().and_then(|s| s.phase).unwrap_or(ReleasePhase::Pending);
            let mut by_phase: BTreeMap<&str, i64> = BTreeMap::new();
            for r in rels {
                *by_phase.entry(phase(r).as_str()).or_default() += 1;
            }
            for (p, n) in by_phase {
                self.releases.with_label_values(&[ns, app, p]).set(n);
            }
            // The owner of the app's traffic and total: the rollout in flight, else the Live one.
            let flying = rels.iter().find(|r| matches!(phase(r), ReleasePhase::Progressing | ReleasePhase::Paused));
            let owner = flying.or_else(|| rels.iter().find(|r| phase(r) == ReleasePhase::Live));
            if let Some(owner) = owner {
                let status = owner.status.clone().unwrap_or_default();
                self.canary_weight.with_label_values(&[ns, app]).set(status.weight.unwrap_or(100).into());
                if let Some(scaling) = &owner.spec.scaling {
                    self.max_replicas.with_label_values(&[ns, app]).set(scaling.max_replicas.into());
                    self.actual_replicas.with_label_values(&[ns, app]).set(status.replicas.unwrap_or(0).into());
                }
            }
            if let Some(f) = flying {
                let n: i32 = f.status.as_ref().map(|s| s.analysis.iter().map(|a| a.inconclusive).sum()).unwrap_or(0);
                self.inconclusive.with_label_values(&[ns, app]).set(n.into());
            }
            let mut lives: Vec<(jiff::Timestamp, &str)> = rels
                .iter()
                .filter_map(|r| Some((r.status.as_ref()?.phase_times.get("Live")?.0, r.spec.version.as_str())))
                .collect();
            lives.sort_by(|a, b| b.cmp(a));
            for (at, version) in lives.into_iter().take(MARKERS_PER_APP) {
                self.live_timestamp.with_label_values(&[ns, app, version]).set(at.as_second() as f64);
            }
        }
        for e in environments {
            let tier = e.spec.tier.as_str();
            let phase = e.status.as_ref().and_then(|s| s.phase).map_or("Pending", |p| p.as_str());
            self.environments.with_label_values(&[tier, phase]).inc();
            if let Some(at) = e.status.as_ref().and_then(|s| s.expires_at.as_ref()) {
                self.expires.with_label_values(&[&e.name_any(), tier]).set(at.0.as_second() as f64);
            }
        }
    }
}

/// The scrape-time gauges over the controllers' caches.
pub struct StateCollector {
    releases: Store<Release>,
    environments: Store<Environment>,
    descs: Vec<Desc>,
}

impl StateCollector {
    pub fn new(releases: Store<Release>, environments: Store<Environment>) -> Self {
        let descs = Gauges::new().collectors().iter().flat_map(|c| c.desc().into_iter().cloned()).collect();
        StateCollector { releases, environments, descs }
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauges = Gauges::new();
        gauges.fill(&self.releases.state(), &self.environments.state());
        gauges.families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EnvironmentPhase, EnvironmentStatus, ReleaseStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn release(version: &str, phase: ReleasePhase, weight: i32, live_at: Option<i64>) -> Arc<Release> {
        let mut r = crate::fixtures::release(
            &format!("shop-{version}"),
            json!({"version": version,
            "scaling": {"minReplicas": 1, "maxReplicas": 12, "metric": {"query": "q", "targetPerReplica": 1.0}}}),
        );
        let mut status =
            ReleaseStatus { phase: Some(phase), weight: Some(weight), replicas: Some(8), ..Default::default() };
        if let Some(at) = live_at {
            status.phase_times.insert("Live".into(), Time(jiff::Timestamp::from_second(at).unwrap()));
        }
        r.status = Some(status);
        Arc::new(r)
    }

    fn render(g: &Gauges) -> String {
        let families = g.families();
        let mut buf = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn release_gauges_describe_each_app_from_its_releases() {
        let releases = vec![
            release("1", ReleasePhase::Superseded, 0, Some(100)),
            release("2", ReleasePhase::Superseded, 0, Some(200)),
            release("3", ReleasePhase::Live, 100, Some(300)),
            release("4", ReleasePhase::Live, 100, Some(400)),
            release("5", ReleasePhase::Paused, 25, None),
        ];
        let g = Gauges::new();
        g.fill(&releases, &[]);
        let text = render(&g);
        for line in [
            "releases{app=\"shop\",namespace=\"prod\",phase=\"Superseded\"} 2",
            "releases{app=\"shop\",namespace=\"prod\",phase=\"Paused\"} 1",
            "release_canary_weight{app=\"shop\",namespace=\"prod\"} 25",
            "release_analysis_inconclusive{app=\"shop\",namespace=\"prod\"} 0",
            "scaling_max_replicas{app=\"shop\",namespace=\"prod\"} 12",
            "scaling_actual_replicas{app=\"shop\",namespace=\"prod\"} 8",
            "release_live_timestamp_seconds{app=\"shop\",namespace=\"prod\",version=\"4\"} 400",
            "release_live_timestamp_seconds{app=\"shop\",namespace=\"prod\",version=\"2\"} 200",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("version=\"1\""), "only the newest 3 markers per app");
    }

    #[test]
    fn environments_are_counted_by_tier_and_phase_with_their_expiry() {
        let env = |name: &str, tier: &str, expires: Option<i64>| {
            let spec = serde_json::from_value(json!({"tier": tier})).unwrap();
            let mut e = Environment::new(name, spec);
            e.status = Some(EnvironmentStatus {
                phase: Some(EnvironmentPhase::Ready),
                expires_at: expires.map(|s| Time(jiff::Timestamp::from_second(s).unwrap())),
                ..Default::default()
            });
            Arc::new(e)
        };
        let g = Gauges::new();
        g.fill(
            &[],
            &[env("prod", "production", None), env("pr-1", "preview", Some(5000)), env("pr-2", "preview", None)],
        );
        let text = render(&g);
        assert!(text.contains("environments{phase=\"Ready\",tier=\"preview\"} 2"), "{text}");
        assert!(text.contains("environments{phase=\"Ready\",tier=\"production\"} 1"));
        assert!(text.contains("environment_expires_timestamp_seconds{environment=\"pr-1\",tier=\"preview\"} 5000"));
    }
}
