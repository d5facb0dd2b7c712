//! The examples in deploy/examples are applied as they are, and do what their comments say.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::Service,
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams},
};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use phaseloop_e2e::*;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_shop_example_provisions_its_environments_and_starts_its_releases() {
    let _shared = shared().await;
    let client = client().await;
    let guards: Vec<EnvironmentGuard> =
        ["shop-pr-1234", "shop-production", "shop-staging"].iter().map(|n| EnvironmentGuard::new(n)).collect();
    let dir = repo_root().join("deploy/examples/shop");
    // Environments first: the Releases' namespaces are theirs.
    let out = kubectl(&["apply", "-f", &dir.join("00-environments.yaml").to_string_lossy()]);
    assert!(out.ok, "{}", out.stderr);
    let envs: Api<Environment> = Api::all(client.clone());
    for name in ["shop-production", "shop-staging", "shop-pr-1234"] {
        wait_for(&envs, name, WAIT, |e: Option<&Environment>| {
            e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // The database runs in staging and, branched, in the preview.
    for ns in ["shop-staging", "shop-pr-1234"] {
        assert!(
            Api::<StatefulSet>::namespaced(client.clone(), ns).get_opt("postgres").await.unwrap().is_some(),
            "{ns}"
        );
    }
    let pr = envs.get("shop-pr-1234").await.unwrap().status.unwrap();
    assert!(pr.expires_at.is_some(), "the preview has an expiry");

    let out = kubectl(&["apply", "-f", &dir.to_string_lossy()]);
    assert!(out.ok, "{}", out.stderr);
    // Staging: tested, then the canary starts (its analysis has no traffic here: inconclusive).
    let staging: Api<Release> = Api::namespaced(client.clone(), "shop-staging");
    wait_for(&staging, "shop-1-4-0", WAIT, |r: Option<&Release>| {
        let phase = r.and_then(|r| r.status.as_ref()).and_then(|s| s.phase);
        matches!(phase, Some(ReleasePhase::Progressing | ReleasePhase::Paused | ReleasePhase::Live))
    })
    .await
    .unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), "shop-staging").get("shop-1-4-0").await.unwrap();
    assert!(d.spec.replicas.unwrap_or(0) >= 2, "autoscaled within [2, 20]");
    assert!(Api::<Service>::namespaced(client.clone(), "shop-staging").get_opt("shop").await.unwrap().is_some());
    // Production waits for 1.4.0 to soak in staging.
    let production: Api<Release> = Api::namespaced(client.clone(), "shop-production");
    let r = wait_for(&production, "shop-1-4-0", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(ReleasePhase::AwaitingApproval))
    })
    .await
    .unwrap();
    assert!(r.status.unwrap().message.unwrap_or_default().contains("shop-staging"));
    assert!(
        Api::<Deployment>::namespaced(client.clone(), "shop-production").get_opt("shop-1-4-0").await.unwrap().is_none()
    );

    // Clean up now rather than at drop: production needs its deletion allowed.
    let allow = serde_json::json!({"metadata": {"annotations": {"phaseloop.dev/allow-delete": "true"}}});
    envs.patch("shop-production", &PatchParams::default(), &Patch::Merge(&allow)).await.unwrap();
    for g in &guards {
        let _ = envs.delete(&g.name, &DeleteParams::background()).await;
    }
}
