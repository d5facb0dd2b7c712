//! Promotion pipelines in one cluster: development → staging → production, each Environment
//! promoting automatically from the one before (`promotion.mode: Automatic`), approval only for
//! production. A version going Live upstream opens its Release downstream once, also across a
//! restart of the operator, and a newer version supersedes a request that has not started.

use std::time::Duration;

use kube::{Api, ResourceExt, api::ListParams};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use phaseloop_e2e::{
    operator::{RestoreSuiteOperator, run_operator},
    *,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn environment(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name}, "spec": spec})
}

async fn ready(envs: &Api<Environment>, name: &str) {
    wait_for(envs, name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
}

/// The Releases of app `shop` in `ns`, by name.
async fn shops(api: &Api<Release>) -> Vec<String> {
    let mut names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|r| r.spec.app == "shop")
        .map(|r| r.name_any())
        .collect();
    names.sort();
    names
}

/// Ships shop `version` in development and waits until it is Live there and in staging.
async fn ship(ns: &str, dev: &Api<Release>, staging: &Api<Release>, version: &str) {
    create(&ready_at_once(release(ns, "shop", version, 1, json!({}))));
    let name = release_name("shop", version);
    wait_release_phase(dev, &name, ReleasePhase::Live).await;
    wait_release_phase(staging, &name, ReleasePhase::Live).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_version_live_upstream_is_requested_downstream_once_and_a_newer_one_supersedes_it() {
    // Alone: it restarts the suite's operator.
    let _alone = alone().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let s = unique_suffix();
    let (dev, staging, prod) = (format!("pl-dev-{s}"), format!("pl-stg-{s}"), format!("pl-prd-{s}"));
    let _guards = [&prod, &staging, &dev].map(|n| EnvironmentGuard::new(n));
    create(&environment(&dev, json!({"tier": "development"})));
    create(&environment(&staging, json!({"tier": "staging", "promotion": {"from": dev, "mode": "Automatic"}})));
    create(&environment(
        &prod,
        json!({"tier": "production", "promotion": {"from": staging, "mode": "Automatic", "soak": "5s",
               "requireApproval": true, "overlay": {"replicas": 2}}}),
    ));
    for name in [&dev, &staging, &prod] {
        ready(&envs, name).await;
    }
    let (dev_rel, stg_rel, prd_rel): (Api<Release>, Api<Release>, Api<Release>) = (
        Api::namespaced(client.clone(), &dev),
        Api::namespaced(client.clone(), &staging),
        Api::namespaced(client.clone(), &prod),
    );

    // shop 1, created by hand in development only: staging gets it without approval, production
    // after its 5s soak in staging, waiting for approval there, with production's replicas.
    ship(&dev, &dev_rel, &stg_rel, "1").await;
    let opened = wait_release_phase(&prd_rel, "shop-1", ReleasePhase::AwaitingApproval).await;
    assert_eq!(opened.labels().get("phaseloop.dev/promoted-from"), Some(&staging));
    assert_eq!(opened.spec.replicas, 2, "the overlay's replicas");
    let staged = stg_rel.get("shop-1").await.unwrap();
    let soaked = staged.status.as_ref().unwrap().phase_times["Live"].0;
    let at = opened.metadata.creation_timestamp.as_ref().unwrap().0;
    assert!(at.duration_since(soaked).as_secs_f64() >= 4.0, "opened {at} before the soak since {soaked} ended");
    let recorded = envs.get(&prod).await.unwrap().status.unwrap().promotions;
    assert_eq!((recorded[0].app.as_str(), recorded[0].version.as_str()), ("shop", "1"));

    // A restart opens nothing twice: once the new process has reconciled production, still one.
    {
        let _restore = RestoreSuiteOperator;
        run_operator("stop");
        run_operator("start");
        reconciled_again("environment", None, &prod, 0, 1).await;
        assert_eq!(shops(&prd_rel).await, ["shop-1"]);
    }

    // Approved with the plugin, it rolls out in production.
    let out = kubectl(&["phaseloop", "approve", "shop-1", "-n", &prod]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&prd_rel, "shop-1", ReleasePhase::Live).await;

    // shop 2 is requested and waits for approval; shop 3 arrives before anyone approves it: the
    // request for 2, not started, gives way to 3.
    ship(&dev, &dev_rel, &stg_rel, "2").await;
    wait_release_phase(&prd_rel, "shop-2", ReleasePhase::AwaitingApproval).await;
    ship(&dev, &dev_rel, &stg_rel, "3").await;
    wait_release_phase(&prd_rel, "shop-3", ReleasePhase::AwaitingApproval).await;
    eventually("shop-2's request gone from production", WAIT, || async {
        prd_rel.get_opt("shop-2").await.unwrap().is_none().then_some(())
    })
    .await
    .unwrap();
    assert_eq!(shops(&prd_rel).await, ["shop-1", "shop-3"]);
    let recorded = envs.get(&prod).await.unwrap().status.unwrap().promotions;
    assert_eq!(recorded.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(), ["3"]);
    // The pipeline in one view: upstream first, what is Live, what waits and for what.
    let out = kubectl(&["phaseloop", "pipeline", "shop"]);
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().filter(|l| l.contains(&s)).collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[0].starts_with(&dev) && lines[1].starts_with(&staging) && lines[2].starts_with(&prod), "{lines:?}");
    let words: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&words[..5], [prod.as_str(), staging.as_str(), "(automatic)", "1", "3:"], "{lines:?}");
    assert!(lines[2].contains("AwaitingApproval"), "{lines:?}");
    // What approving it would change in production, against shop-1 there.
    let out = kubectl(&["phaseloop", "diff", "shop-3", "-n", &prod]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with("--- shop-1 (Live)\n+++ shop-3\n"), "{}", out.stdout);
    assert!(out.stdout.contains("version: \"1\" -> \"3\""), "{}", out.stdout);
    assert!(out.stdout.contains("image: \"shop:1\" -> \"shop:3\""), "{}", out.stdout);
    assert!(!out.stdout.contains("replicas"), "both have production's replicas: {}", out.stdout);
    // Counted since the restart: 2 and 3 opened in staging and in production, 1 approved, 1 superseded.
    let metrics = reqwest::get(format!("{}/metrics", operator_url())).await.unwrap().text().await.unwrap();
    let count = |result: &str| {
        let line = format!("phaseloop_promotion_requests_total{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&line)?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert_eq!((count("opened"), count("approved"), count("superseded")), (4.0, 1.0, 1.0), "{metrics}");
    // Staging, without approval, rolled every version out in turn.
    assert_eq!(wait_release_phase(&stg_rel, "shop-3", ReleasePhase::Live).await.spec.replicas, 1);
}
