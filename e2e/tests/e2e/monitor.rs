//! The Monitor phase: a real Prometheus scrapes the operator while a scripted history of Releases
//! runs (Live, rolled back, restored, reverted); PromQL over the HTTP API gives the DORA keys, and
//! an operator restart changes none of them. The shipped alert rules load in that Prometheus.

use std::{collections::BTreeSet, time::Duration};

use kube::Api;
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

/// A Release of the app `dora`, one replica Ready at once.
fn dora(ns: &str, version: &str, strategy: Value) -> Value {
    ready_at_once(release(ns, "dora", version, 1, strategy))
}

/// The single value of an instant query, once Prometheus returns one that `want` accepts. On a
/// timeout the panic names the last answer and the health of the operator's scrape target, so a
/// failure says whether the value was wrong or missing.
async fn prom_value_becomes(query: &str, want: impl Fn(f64) -> bool) -> f64 {
    let last = std::sync::Mutex::new(String::from("no answer"));
    let found = eventually(&format!("{query} in Prometheus"), WAIT, || async {
        let result = prom_query(query).await;
        *last.lock().unwrap() = format!("{result:?}");
        let v = result.ok()?.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
        want(v).then_some(v)
    })
    .await;
    match found {
        Ok(v) => v,
        Err(e) => {
            let target = operator_target().await;
            panic!("{e}; last answer: {}; operator target: {target}", last.lock().unwrap())
        }
    }
}

/// Prometheus's view of its scrapes of the operator: health, last error, duration.
async fn operator_target() -> String {
    let targets: Value = match reqwest::get(format!("{}/api/v1/targets", prometheus_url())).await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => return e.to_string(),
    };
    let active = targets["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
    let op = active.iter().find(|t| t["labels"]["job"] == "phaseloop-operator");
    op.map(|t| {
        format!("health {} lastError {:?} lastScrapeDuration {}", t["health"], t["lastError"], t["lastScrapeDuration"])
    })
    .unwrap_or_else(|| "not found".into())
}

/// The operator's `phaseloop_dora_*` lines about namespace `ns`.
async fn dora_lines(ns: &str) -> BTreeSet<String> {
    let text = reqwest::get(format!("{}/metrics", operator_url())).await.unwrap().text().await.unwrap();
    let needle = format!("namespace=\"{ns}\"");
    text.lines().filter(|l| l.starts_with("phaseloop_dora_") && l.contains(&needle)).map(str::to_string).collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn dora_keys_come_out_of_promql_and_survive_an_operator_restart() {
    let _alone = alone().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-dora").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);

    // v1 goes Live, its commit ten minutes before the Release. In whole seconds, as phase times
    // are (metav1.Time): a commit at 12:00:00.6 and Live at 12:10:00.9, recorded as 12:10:00,
    // would be a lead time of 599.4s, and v1 often goes Live within the second it was created.
    let committed = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 600).unwrap();
    let mut v1 = dora(&ns.name, "1", json!({}));
    v1["metadata"]["annotations"] = json!({"phaseloop.dev/commit-time": committed.to_string()});
    create(&v1);
    wait_release_phase(&api, "dora-1", ReleasePhase::Live).await;
    // v2's canary is aborted: rolled back, a change failure.
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    create(&dora(&ns.name, "2", canary));
    wait_release_phase(&api, "dora-2", ReleasePhase::Paused).await;
    annotate(&api, "dora-2", "phaseloop.dev/abort", ADMIN).await;
    wait_release_phase(&api, "dora-2", ReleasePhase::RolledBack).await;
    // v3 goes Live: the app is restored.
    create(&dora(&ns.name, "3", json!({})));
    wait_release_phase(&api, "dora-3", ReleasePhase::Live).await;
    // v4 goes Live and is reverted to v3: a success, then a change failure restored at once.
    create(&dora(&ns.name, "4", json!({})));
    wait_release_phase(&api, "dora-4", ReleasePhase::Live).await;
    annotate(&api, "dora-4", "phaseloop.dev/revert", ADMIN).await;
    wait_release_phase(&api, "dora-4", ReleasePhase::Reverted).await;
    wait_release_phase(&api, "dora-3", ReleasePhase::Live).await;

    let sel = format!("namespace=\"{}\",app=\"dora\"", ns.name);
    let deployments = |result: &str| format!("sum(phaseloop_dora_deployments_total{{{sel},result=\"{result}\"}})");
    let check = || async {
        assert_eq!(prom_value_becomes(&deployments("success"), |v| v == 3.0).await, 3.0);
        assert_eq!(prom_value_becomes(&deployments("rolled_back"), |v| v == 1.0).await, 1.0);
        assert_eq!(prom_value_becomes(&deployments("reverted"), |v| v == 1.0).await, 1.0);
        // Change failure rate: (rolled back + reverted) over attempts (3 successes + 1 rollback).
        let cfr = format!(
            "sum(phaseloop_dora_change_failures_total{{{sel}}}) / \
             sum(phaseloop_dora_deployments_total{{{sel},result=~\"success|failed|rolled_back\"}})"
        );
        assert_eq!(prom_value_becomes(&cfr, |v| (v - 0.5).abs() < 1e-9).await, 0.5);
        // Lead time: three Live versions; v1's alone took at least its 600s since the commit.
        prom_value_becomes(&format!("sum(phaseloop_dora_lead_time_seconds_count{{{sel}}})"), |v| v == 3.0).await;
        prom_value_becomes(&format!("sum(phaseloop_dora_lead_time_seconds_sum{{{sel}}})"), |v| v >= 600.0).await;
        let p50 = format!("histogram_quantile(0.5, sum by (le) (phaseloop_dora_lead_time_seconds_bucket{{{sel}}}))");
        prom_value_becomes(&p50, |v| v > 0.0 && v <= 600.0).await;
        // Time to restore: v2's rollback until v3, and v4 from Live until its revert.
        prom_value_becomes(&format!("sum(phaseloop_dora_time_to_restore_seconds_count{{{sel}}})"), |v| v == 2.0).await;
    };
    check().await;
    let before = dora_lines(&ns.name).await;
    assert!(before.len() > 10, "{before:?}");

    let restart = repo_root().join("e2e/scripts/run-operator.sh");
    assert!(std::process::Command::new("bash").arg(restart).arg("start").status().unwrap().success());
    let after = eventually("the DORA series after the restart", WAIT, || async {
        let after = dora_lines(&ns.name).await;
        (!after.is_empty()).then_some(after)
    })
    .await
    .unwrap();
    assert_eq!(before, after, "rebuilt from Release status: nothing lost, nothing counted twice");
    check().await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_shipped_alert_and_recording_rules_load_in_prometheus() {
    let _shared = shared().await;
    let rules_file = repo_root().join("deploy/monitoring/phaseloop-rules.yaml");
    let out = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rules_file).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The rules' own unit tests: alerts fire when they should and only then.
    let out = std::process::Command::new("promtool")
        .args(["test", "rules", "phaseloop-rules.test.yaml"])
        .current_dir(repo_root().join("deploy/monitoring"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // The e2e Prometheus loads the same file (rule_files in its config): every rule is there, none
    // fails, and the alerts (evaluated every 2s here; the DORA group only every 5m) are healthy.
    let groups = eventually("the shipped rules loaded and the alerts evaluated", WAIT, || async {
        let body: Value = reqwest::get(format!("{}/api/v1/rules", prometheus_url())).await.ok()?.json().await.ok()?;
        let groups = body["data"]["groups"].as_array().cloned()?;
        let alerts = groups.iter().find(|g| g["name"] == "phaseloop-alerts")?;
        let evaluated = alerts["rules"].as_array()?.iter().all(|r| r["health"] != "unknown");
        evaluated.then_some(groups)
    })
    .await
    .unwrap();
    let names: BTreeSet<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["phaseloop-alerts", "phaseloop-dora"]));
    let rules: Vec<&Value> = groups.iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    let text = std::fs::read_to_string(&rules_file).unwrap();
    let in_file = text.matches("\n      - alert:").count() + text.matches("\n      - record:").count();
    assert_eq!(rules.len(), in_file, "every rule of the file is loaded");
    for r in rules {
        assert_ne!(r["health"].as_str(), Some("err"), "{r}");
        if r["type"] == "alerting" {
            assert_eq!(r["health"].as_str(), Some("ok"), "{r}");
        }
    }
}
