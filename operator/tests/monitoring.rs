//! Every metric the shipped dashboard and alert rules use exists in the operator's `/metrics`
//! output, rendered here with a little of everything recorded (no cluster needed).

use std::collections::BTreeSet;

use kube::runtime::{reflector, watcher};
use phaseloop::{
    api::{Environment, Release},
    dora::{Outcome, Record},
    metrics::{Metrics, StateCollector},
};
use serde_json::json;

fn rendered() -> String {
    let metrics = Metrics::new();
    let (releases, mut rw) = reflector::store::<Release>();
    let (environments, mut ew) = reflector::store::<Environment>();
    let release: Release = serde_json::from_value(json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop-2", "namespace": "prod", "uid": "u2"},
        "spec": {"app": "shop", "version": "2", "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}},
                 "scaling": {"minReplicas": 1, "maxReplicas": 5, "metric": {"query": "q", "targetPerReplica": 1.0}}},
        "status": {"phase": "Progressing", "weight": 25, "replicas": 4,
                   "phaseTimes": {"Live": "2026-11-26T10:00:00Z"},
                   "analysis": [{"name": "errors", "successes": 1, "failures": 0, "inconclusive": 1}]}}))
    .unwrap();
    let env: Environment = serde_json::from_value(json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": "pr-1"}, "spec": {"tier": "preview", "ttl": "4h"},
        "status": {"phase": "Ready", "expiresAt": "2026-11-26T14:00:00Z"}}))
    .unwrap();
    rw.apply_watcher_event(&watcher::Event::Apply(release));
    ew.apply_watcher_event(&watcher::Event::Apply(env));
    metrics.register(Box::new(StateCollector::new(releases, environments)));
    metrics.observe_reconcile("release", std::time::Duration::from_millis(2), Some("api"));
    metrics.observe_scaling("prod", "shop", Some(3.0), 2, 4);
    metrics.observe_query("scaling", &Ok(1.0));
    metrics.observe_query("analysis", &Err(phaseloop::prometheus::QueryError::Unreachable("down".into())));
    metrics.observe_expiration("preview");
    metrics.observe_promotion_request("opened");
    let (ns, app) = ("prod".to_string(), "shop".to_string());
    metrics.record_dora(&[
        Record::Deployment { namespace: ns.clone(), app: app.clone(), result: Outcome::Success },
        Record::ChangeFailure { namespace: ns.clone(), app: app.clone() },
        Record::LeadTime { namespace: ns.clone(), app: app.clone(), seconds: 60.0 },
        Record::TimeToRestore { namespace: ns, app, seconds: 60.0 },
    ]);
    metrics.render()
}

/// `phaseloop_*` metric names used in a file (recording rules are `phaseloop:*`, not matched).
fn names_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("phaseloop_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let preceded_by_word = i > 0 && rest[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if !preceded_by_word {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_metric_of_the_dashboard_and_the_rules_is_exposed() {
    let exposed: BTreeSet<String> = rendered()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring");
    let mut checked = 0;
    for file in ["grafana-dashboard.json", "phaseloop-rules.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let used = names_used(&text);
        assert!(!used.is_empty(), "{file} uses no phaseloop metric");
        for name in used {
            // A histogram is also named by its base name (in descriptions, say).
            let histogram = exposed.contains(&format!("{name}_bucket"));
            assert!(
                exposed.contains(&name) || histogram,
                "{file} uses {name}, which /metrics does not expose:\n{exposed:#?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} metric references found");
}

#[test]
fn the_chart_carries_real_copies_of_the_monitoring_files() {
    // `make deploy` copies them; a packaged chart must not depend on links out of it.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["grafana-dashboard.json", "phaseloop-rules.yaml"] {
        let copy = root.join("charts/phaseloop/files").join(file);
        assert!(!std::fs::symlink_metadata(&copy).unwrap().file_type().is_symlink(), "{file}: run `make deploy`");
        let source = std::fs::read_to_string(root.join("deploy/monitoring").join(file)).unwrap();
        assert!(
            std::fs::read_to_string(&copy).unwrap() == source,
            "charts/phaseloop/files/{file} drifted: run `make deploy`"
        );
    }
}
