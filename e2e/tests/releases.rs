//! Releases against a real API server and the running operator: the deploy queue, the approval
//! gate, rolling, canary and blue-green rollouts, promotion, abort and rollback on analysis.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn release(ns: &str, app: &str, version: &str, replicas: i32, strategy: Value) -> Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("{app}-{}", version.replace('.', "-")), "namespace": ns},
        "spec": {"app": app, "version": version, "replicas": replicas,
                 "template": {"spec": {"containers": [{"name": "app", "image": format!("{app}:{version}")}]}},
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]},
                 "strategy": strategy}})
}

async fn replicas(client: &kube::Client, ns: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(client.clone(), ns).get(name).await.unwrap().spec.replicas
}

async fn service_selects(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let svc: Service = Api::namespaced(client.clone(), ns).get(name).await.unwrap();
    svc.spec.unwrap().selector.unwrap().get("app.kubernetes.io/version").cloned()
}

async fn annotate(api: &Api<Release>, name: &str, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_rolling_release_goes_live_and_supersedes_the_previous_one() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-rolling").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "shop", "1.0.0", 2, json!({})));
    let r1 = wait_release_phase(&api, "shop-1-0-0", ReleasePhase::Live).await;
    assert_eq!(r1.status.unwrap().replicas, Some(2));
    assert_eq!(replicas(&client, &ns.name, "shop-1-0-0").await, Some(2));
    assert_eq!(service_selects(&client, &ns.name, "shop").await.as_deref(), Some("1.0.0"));

    create(&release(&ns.name, "shop", "1.1.0", 2, json!({})));
    let r2 = wait_release_phase(&api, "shop-1-1-0", ReleasePhase::Live).await;
    let status = r2.status.unwrap();
    assert_eq!(status.stable_release.as_deref(), Some("shop-1-0-0"));
    assert!(status.revert_window_ends_at.is_some());
    wait_release_phase(&api, "shop-1-0-0", ReleasePhase::Superseded).await;
    assert_eq!(service_selects(&client, &ns.name, "shop").await.as_deref(), Some("1.1.0"));
    assert_eq!(replicas(&client, &ns.name, "shop-1-1-0").await, Some(2));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_canary_splits_replicas_by_weight_pauses_and_is_promoted() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-canary").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "cart", "1", 4, json!({})));
    wait_release_phase(&api, "cart-1", ReleasePhase::Live).await;

    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}});
    create(&release(&ns.name, "cart", "2", 4, canary));
    let r2 = wait_release_phase(&api, "cart-2", ReleasePhase::Paused).await;
    let status = r2.status.unwrap();
    assert_eq!((status.weight, status.candidate_replicas, status.stable_replicas), (Some(25), Some(1), Some(3)));
    assert_eq!(replicas(&client, &ns.name, "cart-2").await, Some(1));
    assert_eq!(replicas(&client, &ns.name, "cart-1").await, Some(3));
    assert_eq!(service_selects(&client, &ns.name, "cart").await, None, "both versions serve during the canary");

    // A third Release queues behind the rollout in flight.
    create(&release(&ns.name, "cart", "3", 4, json!({})));
    let r3 = wait_for(&api, "cart-3", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.queue_position == Some(1))
    })
    .await
    .unwrap();
    assert_eq!(r3.status.unwrap().phase, Some(ReleasePhase::Pending));

    annotate(&api, "cart-2", "phaseloop.dev/promote", "e2e").await;
    wait_release_phase(&api, "cart-2", ReleasePhase::Superseded).await; // went Live, then cart-3 took over
    let r3 = wait_release_phase(&api, "cart-3", ReleasePhase::Live).await;
    assert_eq!(r3.status.unwrap().stable_release.as_deref(), Some("cart-2"));
    let r2 = api.get("cart-2").await.unwrap();
    assert!(r2.status.unwrap().phase_times.contains_key("Live"), "cart-2 was Live before being superseded");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_approval_gate_holds_until_approved() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-approval").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let mut r = release(&ns.name, "api", "7", 1, json!({}));
    r["spec"]["approval"] = json!({"required": true});
    create(&r);
    wait_release_phase(&api, "api-7", ReleasePhase::AwaitingApproval).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns.name).get_opt("api-7").await.unwrap().is_none());
    let out = kubectl(&["phaseloop", "status", "api-7", "-n", &ns.name]);
    assert!(out.ok && out.stdout.contains("phase:    AwaitingApproval"), "{} {}", out.stdout, out.stderr);
    // Approve through the kubectl plugin: it records who the API server says we are.
    let out = kubectl(&["phaseloop", "approve", "api-7", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_release_phase(&api, "api-7", ReleasePhase::Live).await;
    assert_eq!(r.status.unwrap().approval.unwrap().approved_by, "phaseloop-e2e-admin");
    let out = kubectl(&["phaseloop", "status", "api-7", "-n", &ns.name]);
    assert!(out.stdout.contains("steps:    [#] 1/1"), "{}", out.stdout);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_aborted_canary_rolls_back_to_the_stable_version() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-abort").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "web", "1", 2, json!({})));
    wait_release_phase(&api, "web-1", ReleasePhase::Live).await;
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}});
    create(&release(&ns.name, "web", "2", 2, canary));
    wait_release_phase(&api, "web-2", ReleasePhase::Paused).await;
    annotate(&api, "web-2", "phaseloop.dev/abort", "e2e").await;
    let r = wait_release_phase(&api, "web-2", ReleasePhase::RolledBack).await;
    assert!(r.status.unwrap().message.unwrap().contains("aborted"));
    assert_eq!(replicas(&client, &ns.name, "web-2").await, Some(0));
    assert_eq!(replicas(&client, &ns.name, "web-1").await, Some(2));
    assert_eq!(service_selects(&client, &ns.name, "web").await.as_deref(), Some("1"));
    assert_eq!(api.get("web-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_canary_whose_error_rate_goes_bad_is_rolled_back() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-analysis").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let app = format!("pay{}", unique_suffix());
    create(&release(&ns.name, &app, "1", 2, json!({})));
    wait_release_phase(&api, &format!("{app}-1"), ReleasePhase::Live).await;

    // The candidate's error rate, as the app would export it, through the pushgateway.
    let body = format!("e2e_error_ratio{{app=\"{app}\",version=\"2\"}} 0.5\n");
    let url = format!("{}/metrics/job/e2e/instance/{app}", pushgateway_url());
    reqwest::Client::new().put(url).body(body).send().await.unwrap().error_for_status().unwrap();

    let series = format!("e2e_error_ratio{{app=\"{app}\"}}");
    eventually("the pushed error ratio in Prometheus", WAIT, || async {
        (!prom_query(&series).await.ok()?.is_empty()).then_some(())
    })
    .await
    .unwrap();
    let canary = json!({"type": "Canary",
        "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "5m"}}]},
        "analysis": {"interval": "2s", "metrics": [{"name": "errors", "max": 0.1, "failureLimit": 1,
            "query": "max(e2e_error_ratio{app=\"{{app}}\",version=\"{{version}}\"})"}]}});
    create(&release(&ns.name, &app, "2", 2, canary));
    let r = wait_release_phase(&api, &format!("{app}-2"), ReleasePhase::RolledBack).await;
    let status = r.status.unwrap();
    assert!(status.message.as_deref().unwrap_or("").contains("errors = 0.5"), "{:?}", status.message);
    let tally = status.analysis.iter().find(|a| a.name == "errors").unwrap();
    assert!(tally.failures >= 2 && tally.value == Some(0.5), "{tally:?}");
    assert_eq!(replicas(&client, &ns.name, &format!("{app}-1")).await, Some(2));
    assert_eq!(service_selects(&client, &ns.name, &app).await.as_deref(), Some("1"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn blue_green_previews_the_candidate_then_switches_at_once() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-bluegreen").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "blog", "1", 2, json!({})));
    wait_release_phase(&api, "blog-1", ReleasePhase::Live).await;
    create(&release(&ns.name, "blog", "2", 2, json!({"type": "BlueGreen"})));
    wait_release_phase(&api, "blog-2", ReleasePhase::Live).await;
    assert_eq!(service_selects(&client, &ns.name, "blog").await.as_deref(), Some("2"));
    assert_eq!(service_selects(&client, &ns.name, "blog-preview").await.as_deref(), Some("2"));
    assert_eq!(replicas(&client, &ns.name, "blog-2").await, Some(2));
    // The previous version is kept warm (full size) for the revert window.
    assert_eq!(replicas(&client, &ns.name, "blog-1").await, Some(2));
}

fn with_test(mut r: Value, fail: bool) -> Value {
    let annotations = if fail { json!({"e2e.phaseloop.dev/fail": "true"}) } else { json!({}) };
    r["spec"]["tests"] = json!([{"name": "smoke", "retries": 1, "timeout": "1m",
        "template": {"metadata": {"annotations": annotations},
                     "spec": {"containers": [{"name": "smoke", "image": "curl"}]}}}]);
    r
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn tests_pass_before_the_rollout_and_a_failing_test_leaves_the_stable_version_serving() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-tests").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&with_test(release(&ns.name, "shop", "1", 2, json!({})), false));
    let r1 = wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    let status = r1.status.unwrap();
    assert_eq!(status.tests[0].phase, "Succeeded");
    assert!(status.phase_times.contains_key("Testing"));
    let job: k8s_openapi::api::batch::v1::Job =
        Api::namespaced(client.clone(), &ns.name).get("shop-1-test-smoke-1").await.unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let url = env.iter().find(|e| e.name == "PHASELOOP_CANDIDATE_URL").unwrap().value.clone().unwrap();
    assert_eq!(url, format!("http://shop-preview.{}.svc:80", ns.name));

    create(&with_test(release(&ns.name, "shop", "2", 2, json!({})), true));
    let r2 = wait_release_phase(&api, "shop-2", ReleasePhase::Failed).await;
    let status = r2.status.unwrap();
    assert_eq!((status.tests[0].phase.as_str(), status.tests[0].attempts), ("Failed", 2), "one retry, then failed");
    assert_eq!(replicas(&client, &ns.name, "shop-2").await, Some(0));
    assert_eq!(replicas(&client, &ns.name, "shop-1").await, Some(2));
    assert_eq!(service_selects(&client, &ns.name, "shop").await.as_deref(), Some("1"));
    assert_eq!(api.get("shop-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_revert_within_the_window_restores_the_previous_version_at_once() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-revert").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "shop", "1", 3, json!({})));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    create(&release(&ns.name, "shop", "2", 3, json!({})));
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    wait_release_phase(&api, "shop-1", ReleasePhase::Superseded).await;

    let started = std::time::Instant::now();
    let out = kubectl(&["phaseloop", "revert", "shop-2", "-n", &ns.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "shop-2", ReleasePhase::Reverted).await;
    let r1 = wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    let took = started.elapsed();
    assert!(r1.status.unwrap().message.unwrap().contains("revert of shop-2"));
    assert_eq!(service_selects(&client, &ns.name, "shop").await.as_deref(), Some("1"));
    assert_eq!(replicas(&client, &ns.name, "shop-1").await, Some(3));
    assert_eq!(replicas(&client, &ns.name, "shop-2").await, Some(0));
    // Measured, not asserted (timings belong to benchmarks): printed for the closing note.
    eprintln!("revert: previous version serving again {:.2}s after the request", took.as_secs_f64());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn promotion_waits_for_the_version_to_soak_upstream_and_a_freeze_holds_rollouts() {
    let client = client().await;
    let staging = format!("stg-{}", unique_suffix());
    let prod = format!("prd-{}", unique_suffix());
    let _g1 = EnvironmentGuard::new(&staging);
    let _g2 = EnvironmentGuard::new(&prod);
    let env = |name: &str, spec: Value| json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name}, "spec": spec});
    create(&env(&staging, json!({"tier": "staging"})));
    create(&env(&prod, json!({"tier": "production", "promotion": {"from": staging, "soak": "5s"}})));
    let envs: Api<phaseloop::api::Environment> = Api::all(client.clone());
    for name in [&staging, &prod] {
        wait_for(&envs, name, WAIT, |e: Option<&phaseloop::api::Environment>| {
            e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
        })
        .await
        .unwrap();
    }
    let prod_api: Api<Release> = Api::namespaced(client.clone(), &prod);
    let staging_api: Api<Release> = Api::namespaced(client.clone(), &staging);

    create(&release(&prod, "shop", "1", 1, json!({})));
    let r = wait_release_phase(&prod_api, "shop-1", ReleasePhase::AwaitingApproval).await;
    assert!(r.status.unwrap().message.unwrap().contains(&format!("to be Live in {staging}")));
    create(&release(&staging, "shop", "1", 1, json!({})));
    wait_release_phase(&staging_api, "shop-1", ReleasePhase::Live).await;
    let r = wait_release_phase(&prod_api, "shop-1", ReleasePhase::Live).await;
    let times = r.status.unwrap().phase_times;
    let live_staging = staging_api.get("shop-1").await.unwrap().status.unwrap().phase_times["Live"].0;
    assert!(times["Live"].0.duration_since(live_staging).as_secs() >= 5, "promoted before the soak time");

    // A freeze holds new rollouts.
    let patch = json!({"spec": {"promotion": {"freeze": true}}});
    envs.patch(&prod, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    create(&release(&prod, "shop", "2", 1, json!({})));
    let r = wait_release_phase(&prod_api, "shop-2", ReleasePhase::AwaitingApproval).await;
    assert!(r.status.unwrap().message.unwrap().contains("frozen"));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_operator_killed_mid_canary_finishes_the_same_rollout_after_a_restart() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-crash").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "mail", "1", 4, json!({})));
    wait_release_phase(&api, "mail-1", ReleasePhase::Live).await;
    let canary = json!({"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 75}]}});
    create(&release(&ns.name, "mail", "2", 4, canary));
    wait_release_phase(&api, "mail-2", ReleasePhase::Paused).await;

    let out = std::process::Command::new("bash")
        .arg(repo_root().join("e2e/scripts/run-operator.sh"))
        .arg("crash")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = api.get("mail-2").await.unwrap().status.unwrap();
    assert_eq!((before.current_step, before.weight), (Some(1), Some(50)), "the restarted operator kept the step");

    annotate(&api, "mail-2", "phaseloop.dev/promote", "e2e").await;
    wait_release_phase(&api, "mail-2", ReleasePhase::Live).await;
    // One Deployment per Release, nothing duplicated.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = deployments
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|d| kube::ResourceExt::name_any(&d))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(replicas(&client, &ns.name, "mail-2").await, Some(4));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn tests_run_in_an_ephemeral_branch_of_the_environment_which_is_deleted_afterwards() {
    let client = client().await;
    let name = format!("dev-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"infrastructure": [{"name": "db", "objects": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config"}, "data": {"DB": "x"}}]}]}}));
    let envs: Api<phaseloop::api::Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&phaseloop::api::Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    let mut r = with_test(release(&name, "shop", "1", 1, json!({})), false);
    r["spec"]["testEnvironment"] = json!({"ttl": "10m"});
    create(&r);

    // The branch exists while the tests run, with the parent's infrastructure and the candidate.
    let test_env = format!("{name}-shop-1-test");
    let branch = wait_for(&envs, &test_env, WAIT, |e: Option<&phaseloop::api::Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    assert_eq!(branch.spec.from.as_deref(), Some(name.as_str()));
    assert_eq!(branch.spec.tier, phaseloop::api::Tier::Test);

    let r = wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    assert_eq!(r.status.unwrap().tests[0].phase, "Succeeded");
    eventually("the test Environment to be gone", WAIT, || async {
        envs.get_opt(&test_env).await.ok().flatten().is_none().then_some(())
    })
    .await
    .unwrap();
}
