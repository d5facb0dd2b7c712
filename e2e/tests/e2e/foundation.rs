//! The ground everything else stands on: the CRDs in a real API server, admission rejecting bad
//! input with clear messages, the operator reconciling status, kwok running workloads, and
//! Prometheus scraping the operator. Needs the local control plane and a running operator
//! (`make e2e` sets both up).

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// Release `name` of `shop` 1.0.0 with `fields` laid over its spec, as YAML (JSON) for kubectl.
fn release_yaml(ns: &str, name: &str, fields: serde_json::Value) -> String {
    named(with_spec(release(ns, "shop", "1.0.0", 1, json!({})), fields), name).to_string()
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn crds_install_with_a_plain_kubectl_apply() {
    let _shared = shared().await;
    let out = kubectl(&["apply", "-f", "crds/"]);
    assert!(out.ok, "plain kubectl apply -f crds/ failed: {}", out.stderr);
    let out = kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/releases.phaseloop.dev",
        "crd/environments.phaseloop.dev",
    ]);
    assert!(out.ok, "{}", out.stderr);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn kubectl_explain_shows_our_docs() {
    let _shared = shared().await;
    let out = kubectl(&["explain", "release.spec.strategy"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("How the Release rolls out"), "{}", out.stdout);
    assert!(out.stdout.contains("revertWindow"), "{}", out.stdout);
    let out = kubectl(&["explain", "environment.spec.ttl"]);
    assert!(out.stdout.contains("deletes itself"), "{}", out.stdout);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn admission_rejects_invalid_objects_with_clear_messages() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-admission").await;

    let cases = [
        (
            json!({"strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 150}]}}}),
            "less than or equal to 100",
        ),
        (
            json!({"strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}}),
            "canary setWeight values must not decrease",
        ),
        (
            json!({"scaling": {"minReplicas": 5, "maxReplicas": 2, "metric": {"query": "q", "targetPerReplica": 1.0}}}),
            "scaling.minReplicas must not be above scaling.maxReplicas",
        ),
        (json!({"strategy": {"progressDeadline": "ten minutes"}}), "progressDeadline"),
    ];
    for (i, (spec, message)) in cases.into_iter().enumerate() {
        let out = kubectl_stdin(&["create", "-f", "-"], &release_yaml(&ns.name, &format!("bad-{i}"), spec));
        assert!(!out.ok, "case {i} was accepted");
        assert!(out.stderr.contains(message), "case {i}: expected {message:?} in {}", out.stderr);
    }

    // Immutability: version cannot change on an existing Release.
    let out = kubectl_stdin(&["create", "-f", "-"], &release_yaml(&ns.name, "shop-1", json!({})));
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl(&[
        "patch",
        "release",
        "shop-1",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"spec":{"version":"2.0.0"}}"#,
    ]);
    assert!(!out.ok && out.stderr.contains("version is immutable"), "{}", out.stderr);

    // ttl on a production Environment.
    let name = format!("prod-{}", unique_suffix());
    let env = json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
                     "metadata": {"name": name}, "spec": {"tier": "production", "ttl": "4h"}});
    let out = kubectl_stdin(&["create", "-f", "-"], &env.to_string());
    assert!(!out.ok && out.stderr.contains("ttl is not allowed on a production Environment"), "{}", out.stderr);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_operator_reconciles_releases_and_writes_nothing_on_a_no_op() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-reconcile").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);

    let out = kubectl_stdin(&["create", "-f", "-"], &release_yaml(&ns.name, "shop-1", json!({})));
    assert!(out.ok, "{}", out.stderr);
    let rel = wait_for(&api, "shop-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.phase == Some(ReleasePhase::Live) && s.observed_generation == Some(1))
    })
    .await
    .unwrap();
    let status = rel.status.unwrap();
    assert!(status.phase_times.contains_key("Pending"));
    let degraded = status.conditions.iter().find(|c| c.type_ == "Degraded").expect("Degraded condition");
    assert_eq!((degraded.status.as_str(), degraded.observed_generation), ("False", Some(1)));

    // The transition is an Event on the Release.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    eventually("a Live event for shop-1", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.involved_object.name.as_deref() == Some("shop-1") && e.reason.as_deref() == Some("Live"))
    })
    .await
    .unwrap();

    // A no-op reconcile (triggered by a metadata change) writes nothing.
    let patched = api
        .patch(
            "shop-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"e2e/poke": "1"}}})),
        )
        .await
        .unwrap();
    reconciled("release", Some(&ns.name), "shop-1", &patched.resource_version().unwrap()).await;
    let after = api.get("shop-1").await.unwrap();
    assert_eq!(after.resource_version(), patched.resource_version(), "the operator wrote on a no-op reconcile");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn invalid_specs_admission_cannot_see_are_reported_in_status() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-invalid").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let spec = json!({"strategy": {"analysis": {"metrics": [{"name": "errors", "query": "rate(x{pod=\"{{pod}}\"}[1m])", "max": 1.0}]}}});
    let out = kubectl_stdin(&["create", "-f", "-"], &release_yaml(&ns.name, "shop-bad", spec));
    assert!(out.ok, "{}", out.stderr);
    let rel = wait_for(&api, "shop-bad", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True"))
    })
    .await
    .unwrap();
    let c = rel.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(c.reason, "InvalidSpec");
    assert!(c.message.contains("{{pod}}"), "{}", c.message);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn environments_get_status_and_printer_columns() {
    let _shared = shared().await;
    let client = client().await;
    let api: Api<Environment> = Api::all(client.clone());
    let name = format!("preview-{}", unique_suffix());
    let env: Environment = serde_json::from_value(json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name}, "spec": {"tier": "preview", "ttl": "4h"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &env).await.unwrap();
    let env = wait_for(&api, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let status = env.status.unwrap();
    assert_eq!(status.namespace.as_deref(), Some(name.as_str()));
    let created = env.metadata.creation_timestamp.unwrap().0;
    assert_eq!(status.expires_at.as_ref().unwrap().0.duration_since(created).as_secs(), 4 * 3600);

    let out = kubectl(&["get", "env", &name]);
    let header = out.header();
    assert_eq!(header, ["NAME", "TIER", "NAMESPACE", "PHASE", "EXPIRES", "AGE"], "{}", out.stdout);
    assert!(out.stdout.contains("preview") && out.stdout.contains("Ready"), "{}", out.stdout);
    // The expiry is in the future: shown as the time it is (a `date` column would say <invalid>).
    let expiry = status.expires_at.as_ref().unwrap().0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert!(out.stdout.contains(&expiry) && !out.stdout.contains("<invalid>"), "{}", out.stdout);

    let ns = TestNamespace::new(&client, "e2e-columns").await;
    assert!(kubectl_stdin(&["create", "-f", "-"], &release_yaml(&ns.name, "shop-1", json!({}))).ok);
    let out = kubectl(&["get", "rel", "-n", &ns.name]);
    let header = out.header();
    assert_eq!(header, ["NAME", "APP", "VERSION", "PHASE", "WEIGHT", "REPLICAS", "AGE"], "{}", out.stdout);
    // The category lists both kinds.
    let out = kubectl(&["get", "phaseloop", "-A"]);
    assert!(out.ok && out.stdout.contains(&name) && out.stdout.contains("shop-1"), "{} {}", out.stdout, out.stderr);

    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn kwok_runs_deployments_and_jobs() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-kwok").await;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments.create(&PostParams::default(), &deploy).await.unwrap();
    wait_for(&deployments, "web", WAIT, |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.available_replicas == Some(2))
    })
    .await
    .unwrap();

    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "once", "image": "job:1"}]}}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_for(&jobs, "once", WAIT, |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()).is_some_and(|s| s.succeeded == Some(1))
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn prometheus_scrapes_the_operator() {
    let _shared = shared().await;
    let base = operator_url();
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("phaseloop_reconcile_duration_seconds"), "{metrics}");

    let up = eventually("Prometheus reports the operator up", Duration::from_secs(60), || async {
        let r = prom_query(r#"up{job="phaseloop-operator"} == 1"#).await.ok()?;
        (!r.is_empty()).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(up.len(), 1);
    // The operator's own series made it into Prometheus too.
    eventually("phaseloop_reconciles_total in Prometheus", Duration::from_secs(60), || async {
        let r = prom_query("phaseloop_reconciles_total").await.ok()?;
        (!r.is_empty()).then_some(())
    })
    .await
    .unwrap();
}
