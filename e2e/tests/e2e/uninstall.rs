//! Uninstall, on the real node (where the chart's pods run: the operator from its image, and the
//! chart's pre-delete hook Job from the same image): after `helm uninstall`, a namespace holding a
//! serving Release, an Environment and the CRDs are all deleted within a minute; nothing waits for
//! the operator that is gone. Run by run-e2e.sh after the real node's scenarios, last: it removes
//! the operator and the CRDs.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::Namespace, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, ResourceExt};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);
/// How long a deletion may take once the operator is gone.
const GONE: Duration = Duration::from_secs(60);

async fn gone<K>(api: &Api<K>, name: &str) -> f64
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    eventually(&format!("{name} deleted"), GONE, || async { api.get_opt(name).await.ok()?.is_none().then_some(()) })
        .await
        .unwrap();
    started.elapsed().as_secs_f64()
}

#[tokio::test]
#[ignore = "needs the real node: E2E_TEST=real_node make e2e"]
async fn after_helm_uninstall_namespaces_and_crds_are_deleted_without_waiting() {
    let client = client().await;
    // What holds a finalizer of phaseloop's: a serving Release, and an Environment.
    let ns = TestNamespace::new(&client, "e2e-uninstall").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&ready_at_once(release(&ns.name, "kept", "1", 1, json!({}))));
    let live = wait_release_phase(&api, "kept-1", ReleasePhase::Live).await;
    assert!(live.finalizers().iter().any(|f| f == "phaseloop.dev/serving"), "{:?}", live.finalizers());
    let env = format!("un-{}", unique_suffix());
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": env},
        "spec": {"tier": "preview"}}));
    let envs: Api<Environment> = Api::all(client.clone());
    wait_for(&envs, &env, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();

    let namespace = std::env::var("PHASELOOP_NAMESPACE").unwrap_or_else(|_| "phaseloop-system".into());
    let started = Instant::now();
    let out = Command::new("helm")
        .args(["uninstall", "phaseloop", "-n", &namespace, "--wait", "--timeout", "5m"])
        .output()
        .expect("helm on PATH (env.sh)");
    assert!(out.status.success(), "helm uninstall: {}", String::from_utf8_lossy(&out.stderr));
    println!(
        "FIGURE uninstall: helm uninstall (the let-go hook included) took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let r = api.get("kept-1").await.unwrap();
    assert!(r.finalizers().is_empty(), "the hook left {:?}", r.finalizers());
    assert_eq!(r.status.unwrap().phase, Some(ReleasePhase::Live), "the Release keeps serving");

    // Nothing waits for the operator any more.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(kubectl(&["delete", "namespace", &ns.name, "--wait=false"]).ok);
    let ns_s = gone(&namespaces, &ns.name).await;
    assert!(kubectl(&["delete", "environment", &env, "--wait=false"]).ok);
    let env_s = gone(&envs, &env).await;
    let env_ns_s = gone(&namespaces, &env).await;
    let crds = repo_root().join("crds");
    assert!(kubectl(&["delete", "-f", crds.to_str().unwrap(), "--wait=false"]).ok);
    let definitions: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_s =
        gone(&definitions, "releases.phaseloop.dev").await.max(gone(&definitions, "environments.phaseloop.dev").await);
    println!(
        "FIGURE uninstall: deleted after the uninstall in {ns_s:.1}s (namespace with a serving Release), {env_s:.1}s \
         (Environment) and {env_ns_s:.1}s (its namespace), {crd_s:.1}s (the CRDs)"
    );
}
