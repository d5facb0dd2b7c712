//! Environments as code against a real API server and the running operator: namespace, quota,
//! defaults, isolation, infrastructure, seed, branching, TTL, sleep, protection and clean deletion.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    batch::v1::Job,
    core::v1::{ConfigMap, Event, LimitRange, Namespace, ResourceQuota},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn environment(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name}, "spec": spec})
}

fn deployment(name: &str, replicas: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": restricted(json!({"containers": [{"name": name, "image": format!("{name}:1")}]}))}}})
}

fn database_component() -> Value {
    json!({"name": "db", "objects": [
        deployment("postgres", 1),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "postgres"},
         "spec": {"selector": {"app": "postgres"}, "ports": [{"port": 5432}]}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db-config"}, "data": {"DB_NAME": "shop"}},
    ]})
}

async fn wait_phase(api: &Api<Environment>, name: &str, phase: EnvironmentPhase) -> Environment {
    wait_for(api, name, WAIT, move |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(phase))
    })
    .await
    .unwrap()
}

async fn wait_gone<K>(api: &Api<K>, name: &str) -> Duration
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let started = Instant::now();
    eventually(&format!("{name} to be gone"), WAIT, || async {
        api.get_opt(name).await.ok().flatten().is_none().then_some(())
    })
    .await
    .unwrap();
    started.elapsed()
}

fn condition(env: &Environment, type_: &str) -> (String, String, String) {
    let c = env.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_environment_provisions_its_namespace_and_is_deleted_without_leftovers() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("staging-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(
        &name,
        json!({
            "tier": "staging",
            "quota": {"cpu": "4", "memory": "8Gi", "pods": 20},
            "defaults": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "isolation": "Namespace",
            "infrastructure": [database_component()],
            "seed": {"template": {"spec": restricted(json!({"containers": [{"name": "seed", "image": "seed:1"}]}))}},
        }),
    ));
    let env = wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    let status = env.status.clone().unwrap();
    assert!(status.seeded);
    assert_eq!(condition(&env, "InfrastructureReady").0, "True");
    assert_eq!(condition(&env, "Seeded").0, "True");
    assert_eq!(status.components.len(), 1);
    assert_eq!(status.components[0].objects.len(), 3);

    let ns: Namespace = Api::all(client.clone()).get(&name).await.unwrap();
    assert_eq!(ns.labels()["phaseloop.dev/environment"], name);
    assert_eq!(ns.labels()["phaseloop.dev/tier"], "staging");
    let quota: ResourceQuota = Api::namespaced(client.clone(), &name).get("phaseloop-quota").await.unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "20");
    let _: LimitRange = Api::namespaced(client.clone(), &name).get("phaseloop-defaults").await.unwrap();
    let _: NetworkPolicy = Api::namespaced(client.clone(), &name).get("phaseloop-isolation").await.unwrap();
    let db: Deployment = Api::namespaced(client.clone(), &name).get("postgres").await.unwrap();
    assert_eq!(db.labels()["phaseloop.dev/component"], "db");
    assert_eq!(db.owner_references()[0].name, name);
    let seed: Job = Api::namespaced(client.clone(), &name).get("phaseloop-seed").await.unwrap();
    assert_eq!(seed.status.unwrap().succeeded, Some(1));

    // A no-op reconcile (triggered by a metadata change) writes nothing, children included.
    let poked = envs
        .patch(&name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": {"e2e/poke": "1"}}})))
        .await
        .unwrap();
    let db_version = db.resource_version();
    reconciled("environment", None, &name, &poked.resource_version().unwrap()).await;
    assert_eq!(envs.get(&name).await.unwrap().resource_version(), poked.resource_version(), "status rewritten");
    let db_now: Deployment = Api::namespaced(client.clone(), &name).get("postgres").await.unwrap();
    assert_eq!(db_now.resource_version(), db_version, "an unchanged component was rewritten");

    // Someone else's edit of a component is undone at the Environment's next reconcile (a
    // ConfigMap has no generation: the edit shows as a new resourceVersion and as the editor's
    // managed fields).
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
    let edit = json!({"data": {"DB_NAME": "edited"}});
    configmaps.patch("db-config", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "2"}}});
    envs.patch(&name, &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    eventually("the edited component restored", Duration::from_secs(30), || async {
        let data = configmaps.get("db-config").await.ok()?.data?;
        (data.get("DB_NAME").map(String::as_str) == Some("shop")).then_some(())
    })
    .await
    .unwrap();

    // Removing a component deletes its objects.
    let patch = json!({"spec": {"infrastructure": []}});
    envs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_gone(&configmaps, "db-config").await;
    wait_gone(&Api::<Deployment>::namespaced(client.clone(), &name), "postgres").await;

    // Deleting the Environment deletes the namespace first, then the Environment.
    envs.delete(&name, &Default::default()).await.unwrap();
    wait_gone(&envs, &name).await;
    assert!(Api::<Namespace>::all(client.clone()).get_opt(&name).await.unwrap().is_none());
    let left = objects_labelled(&client, &format!("phaseloop.dev/environment={name}")).await;
    assert!(left.is_empty(), "objects left after deleting the Environment: {left:?}");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_test_environment_with_a_20s_ttl_disappears_with_its_namespace() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("ttl-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(&name, json!({"tier": "test", "ttl": "20s"})));
    let env = wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    let created = env.metadata.creation_timestamp.unwrap().0;
    assert_eq!(env.status.unwrap().expires_at.unwrap().0.duration_since(created).as_secs(), 20);
    assert!(Api::<Namespace>::all(client.clone()).get_opt(&name).await.unwrap().is_some());
    wait_gone(&envs, &name).await;
    wait_gone(&Api::<Namespace>::all(client.clone()), &name).await;
    let lived = jiff::Timestamp::now().duration_since(created).as_secs();
    assert!(lived >= 20, "deleted after {lived}s, before its ttl");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_expiry_can_be_extended_by_annotation() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("extend-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(&name, json!({"tier": "preview", "ttl": "1h"})));
    wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    let later = "2099-01-01T00:00:00Z";
    let patch = json!({"metadata": {"annotations": {"phaseloop.dev/expires-at": later}}});
    envs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).and_then(|s| s.expires_at.as_ref()).is_some_and(|t| t.0.to_string() == later)
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_branch_gets_the_parents_database_and_keeps_its_snapshot() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let parent = format!("parent-{}", unique_suffix());
    let branch = format!("branch-{}", unique_suffix());
    let _g1 = EnvironmentGuard::new(&parent);
    let _g2 = EnvironmentGuard::new(&branch);
    create(&environment(
        &parent,
        json!({"tier": "staging", "quota": {"pods": 50}, "infrastructure": [database_component()]}),
    ));
    wait_phase(&envs, &parent, EnvironmentPhase::Ready).await;
    // A live app version in the parent, which the branch gets too.
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop-3", "namespace": parent},
        "spec": {"app": "shop", "version": "3",
                 "template": {"spec": restricted(json!({"containers": [{"name": "app", "image": "shop:3"}]}))}}}));
    let releases: Api<phaseloop::api::Release> = Api::namespaced(client.clone(), &parent);
    wait_for(&releases, "shop-3", WAIT, |r: Option<&phaseloop::api::Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::ReleasePhase::Live))
    })
    .await
    .unwrap();
    create(&environment(&branch, json!({"tier": "preview", "from": parent, "ttl": "1h"})));
    let env = wait_phase(&envs, &branch, EnvironmentPhase::Ready).await;
    assert_eq!(env.status.unwrap().branch.unwrap().parent, parent);
    let branch_releases: Api<phaseloop::api::Release> = Api::namespaced(client.clone(), &branch);
    wait_for(&branch_releases, "shop-3", WAIT, |r: Option<&phaseloop::api::Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(phaseloop::api::ReleasePhase::Live))
    })
    .await
    .unwrap();
    // Both Environments report the live version.
    for name in [&parent, &branch] {
        let poke = json!({"metadata": {"annotations": {"e2e/poke": "apps"}}});
        envs.patch(name, &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
        wait_for(&envs, name, WAIT, |e: Option<&Environment>| {
            e.and_then(|e| e.status.as_ref())
                .is_some_and(|s| s.apps.iter().any(|a| a.app == "shop" && a.version == "3"))
        })
        .await
        .unwrap();
    }
    let db: Deployment = Api::namespaced(client.clone(), &branch).get("postgres").await.unwrap();
    assert_eq!(db.labels()["phaseloop.dev/environment"], branch);
    let quota: ResourceQuota = Api::namespaced(client.clone(), &branch).get("phaseloop-quota").await.unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["pods"].0, "50");

    // A later change of the parent does not rewrite the branch (it does not follow).
    let cache = json!({"name": "cache", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cache-config"}}]});
    let patch = json!({"spec": {"infrastructure": [database_component(), cache]}});
    envs.patch(&parent, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let parent_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &parent);
    eventually("cache-config in the parent", WAIT, || async {
        parent_cms.get_opt("cache-config").await.ok().flatten()
    })
    .await
    .unwrap();
    // Poke the branch so it reconciles, then check, once it has, that it still has only the snapshot.
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    let poked = envs.patch(&branch, &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    reconciled("environment", None, &branch, &poked.resource_version().unwrap()).await;
    let branch_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &branch);
    assert!(branch_cms.get_opt("cache-config").await.unwrap().is_none(), "the branch followed its parent");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_branch_with_follow_parent_follows_its_parents_changes_and_new_live_versions() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let parent = format!("lead-{}", unique_suffix());
    let branch = format!("{parent}-follow");
    let _g1 = EnvironmentGuard::new(&parent);
    let _g2 = EnvironmentGuard::new(&branch);
    create(&environment(&parent, json!({"tier": "staging"})));
    wait_phase(&envs, &parent, EnvironmentPhase::Ready).await;
    let parent_releases: Api<phaseloop::api::Release> = Api::namespaced(client.clone(), &parent);
    create(&release(&parent, "shop", "1", 1, json!({})));
    wait_release_phase(&parent_releases, "shop-1", phaseloop::api::ReleasePhase::Live).await;
    create(&environment(&branch, json!({"tier": "preview", "from": parent, "followParent": true})));
    wait_phase(&envs, &branch, EnvironmentPhase::Ready).await;
    let branch_releases: Api<phaseloop::api::Release> = Api::namespaced(client.clone(), &branch);
    wait_release_phase(&branch_releases, "shop-1", phaseloop::api::ReleasePhase::Live).await;

    // A change of the parent's spec reaches the branch without anything touching the branch.
    let cache = json!({"name": "cache", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cache-config"}}]});
    envs.patch(&parent, &PatchParams::default(), &Patch::Merge(&json!({"spec": {"infrastructure": [cache]}})))
        .await
        .unwrap();
    let branch_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &branch);
    eventually("cache-config in the following branch", WAIT, || async {
        branch_cms.get_opt("cache-config").await.ok().flatten()
    })
    .await
    .unwrap();
    // And so does the parent's next Live version.
    create(&release(&parent, "shop", "2", 1, json!({})));
    wait_release_phase(&parent_releases, "shop-2", phaseloop::api::ReleasePhase::Live).await;
    wait_release_phase(&branch_releases, "shop-2", phaseloop::api::ReleasePhase::Live).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_branching_cycle_is_reported_and_touches_neither_namespace() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let (x, y) = (format!("cx-{}", unique_suffix()), format!("cy-{}", unique_suffix()));
    let (_g1, _g2) = (EnvironmentGuard::new(&x), EnvironmentGuard::new(&y));
    create(&environment(&x, json!({"from": y})));
    create(&environment(&y, json!({"from": x})));
    for (me, other) in [(&x, &y), (&y, &x)] {
        let e = wait_for(&envs, me, WAIT, |e: Option<&Environment>| {
            e.and_then(|e| e.status.as_ref())
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Degraded" && c.reason == "ParentCycle"))
        })
        .await
        .unwrap();
        let status = e.status.unwrap();
        assert_eq!(status.phase, Some(EnvironmentPhase::Failed));
        let c = status.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert!(c.message.contains(other.as_str()), "{}", c.message);
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in [&x, &y] {
        assert!(namespaces.get_opt(name).await.unwrap().is_none(), "namespace {name} was created");
    }
    // Kubernetes' own view: `kubectl wait` on the Ready condition of a healthy Environment works.
    let ok = format!("ok-{}", unique_suffix());
    let _g3 = EnvironmentGuard::new(&ok);
    create(&environment(&ok, json!({})));
    let out = kubectl(&["wait", &format!("env/{ok}"), "--for=condition=Ready", "--timeout=90s"]);
    assert!(out.ok, "{}", out.stderr);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_expiry_only_moves_later() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("short-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(&name, json!({"tier": "preview", "ttl": "1h"})));
    let e = wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    let first = e.status.unwrap().expires_at.unwrap().0;
    let out = kubectl(&["phaseloop", "env", "extend", &name, "2h"]);
    assert!(out.ok, "{}", out.stderr);
    let extended = wait_for(&envs, &name, WAIT, move |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()?.expires_at.as_ref()).is_some_and(|t| t.0 > first)
    })
    .await
    .unwrap()
    .status
    .unwrap()
    .expires_at
    .unwrap()
    .0;
    // An earlier time in the annotation (or none at all) does not bring it back.
    let earlier = first.checked_sub(jiff::SignedDuration::from_mins(30)).unwrap();
    for value in [Value::String(earlier.to_string()), Value::Null] {
        let patch = json!({"metadata": {"annotations": {"phaseloop.dev/expires-at": value}}});
        let changed = envs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        reconciled("environment", None, &name, &changed.resource_version().unwrap()).await;
        let now = envs.get(&name).await.unwrap().status.unwrap().expires_at.unwrap().0;
        assert_eq!(now, extended, "the expiry moved earlier");
    }
}

/// A production Environment, Ready, deleted at the end of the test.
async fn production() -> (kube::Client, Api<Environment>, String, EnvironmentGuard) {
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("prod-{}", unique_suffix());
    let guard = EnvironmentGuard::new(&name);
    create(&environment(&name, json!({"tier": "production"})));
    wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    (client, envs, name, guard)
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn production_cannot_be_downgraded_nor_its_namespace_deleted_directly() {
    let _shared = shared().await;
    let (client, envs, name, _guard) = production().await;
    // Downgrading the tier (to delete it, or give it a ttl) is refused at admission.
    for patch in [json!({"spec": {"tier": "development"}}), json!({"spec": {"tier": "development", "ttl": "1s"}})] {
        let err = envs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap_err();
        assert!(err.to_string().contains("tier production cannot be changed"), "{err}");
    }
    // Its namespace cannot be deleted directly, nor unlabelled to get round that.
    let out = kubectl(&["delete", "namespace", &name, "--wait=false"]);
    assert!(!out.ok && out.stderr.contains("belongs to a production Environment"), "{}", out.stderr);
    let out = kubectl(&["label", "namespace", &name, "phaseloop.dev/tier-"]);
    assert!(!out.ok && out.stderr.contains("cannot be changed"), "{}", out.stderr);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get(&name).await.unwrap().metadata.deletion_timestamp.is_none());
    // With the annotation on the Environment, its deletion takes the namespace with it.
    kubectl(&["annotate", "environment", &name, "phaseloop.dev/allow-delete=true"]);
    let out = kubectl(&["delete", "environment", &name, "--wait=false"]);
    assert!(out.ok, "{}", out.stderr);
    wait_gone(&namespaces, &name).await;
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_bad_component_is_refused_while_the_good_ones_become_ready() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("mixed-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(
        &name,
        json!({"infrastructure": [
            database_component(),
            {"name": "rbac", "objects": [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": format!("{name}-role")}}]},
            {"name": "elsewhere", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}}]},
            {"name": "rejected", "objects": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"}, "spec": {"ports": [{"port": 99999}]}}]},
        ]}),
    ));
    let env = wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.components.iter().any(|c| c.name == "db" && c.ready))
    })
    .await
    .unwrap();
    assert_eq!(env.status.as_ref().unwrap().phase, Some(EnvironmentPhase::Failed));
    let (status, reason, message) = condition(&env, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ComponentRefused"));
    assert!(message.contains("rbac") && message.contains("cluster-scoped"), "{message}");
    assert!(message.contains("elsewhere") && message.contains("kube-system"), "{message}");
    assert!(message.contains("rejected") && message.contains("rejected by the API server"), "{message}");
    // Nothing of the refused components exists; the good one is there.
    let roles = ApiResource::from_gvk(&GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRole"));
    let cluster_roles: Api<DynamicObject> = Api::all_with(client.clone(), &roles);
    assert!(cluster_roles.get_opt(&format!("{name}-role")).await.unwrap().is_none());
    assert!(Api::<ConfigMap>::namespaced(client.clone(), "kube-system").get_opt("x").await.unwrap().is_none());
    assert!(Api::<Deployment>::namespaced(client.clone(), &name).get_opt("postgres").await.unwrap().is_some());
    // And the refusal is an Event.
    let events: Api<Event> = Api::all(client.clone());
    eventually("a ComponentRefused event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some(name.as_str()) && e.reason.as_deref() == Some("ComponentRefused")
        })
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn deleting_a_production_environment_needs_the_annotation() {
    let _shared = shared().await;
    let (client, envs, name, _guard) = production().await;
    let out = kubectl(&["delete", "environment", &name, "--wait=false"]);
    assert!(!out.ok, "production Environment deleted without the annotation");
    assert!(out.stderr.contains("production Environments are protected"), "{}", out.stderr);
    assert!(envs.get_opt(&name).await.unwrap().is_some());
    let out = kubectl(&["annotate", "environment", &name, "phaseloop.dev/allow-delete=true"]);
    assert!(out.ok, "{}", out.stderr);
    let out = kubectl(&["delete", "environment", &name, "--wait=false"]);
    assert!(out.ok, "{}", out.stderr);
    wait_gone(&envs, &name).await;
    assert!(Api::<Namespace>::all(client.clone()).get_opt(&name).await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_idle_environment_sleeps_and_the_wake_annotation_restores_it() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("sleepy-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(
        &name,
        json!({"tier": "development", "sleepAfter": "15s",
        "infrastructure": [{"name": "cache", "objects": [deployment("redis", 1)]}]}),
    ));
    wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    // The app, Live at 3 replicas: its replicas are the Release controller's alone.
    let releases: Api<Release> = Api::namespaced(client.clone(), &name);
    create(&release(&name, "shop", "1", 3, json!({})));
    wait_for(&releases, "shop-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(ReleasePhase::Live))
    })
    .await
    .unwrap();

    wait_phase(&envs, &name, EnvironmentPhase::Sleeping).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &name);
    for d in ["shop-1", "redis"] {
        eventually(&format!("{d} at zero"), WAIT, || async {
            (deployments.get(d).await.ok()?.spec.replicas == Some(0)).then_some(())
        })
        .await
        .unwrap();
    }
    // One writer of the app's replicas: phaseloop's field manager, by server-side apply.
    let managers = deployments.get("shop-1").await.unwrap().metadata.managed_fields.unwrap_or_default();
    let writers: Vec<_> = managers
        .iter()
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some()))
        .map(|m| (m.manager.clone().unwrap_or_default(), m.operation.clone().unwrap_or_default()))
        .collect();
    assert_eq!(writers, [("phaseloop".to_string(), "Apply".to_string())], "writers of spec.replicas");

    let wake = json!({"metadata": {"annotations": {"phaseloop.dev/wake": "now"}}});
    envs.patch(&name, &PatchParams::default(), &Patch::Merge(&wake)).await.unwrap();
    wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    for (d, n) in [("shop-1", 3), ("redis", 1)] {
        eventually(&format!("{d} back at {n}"), WAIT, || async {
            (deployments.get(d).await.ok()?.spec.replicas == Some(n)).then_some(())
        })
        .await
        .unwrap();
    }
    let env = envs.get(&name).await.unwrap();
    assert!(!env.annotations().contains_key("phaseloop.dev/wake"), "the wake annotation is consumed");

    // Asleep again after sleepAfter; a new Release in the namespace wakes it.
    wait_phase(&envs, &name, EnvironmentPhase::Sleeping).await;
    eventually("shop-1 at zero again", WAIT, || async {
        (deployments.get("shop-1").await.ok()?.spec.replicas == Some(0)).then_some(())
    })
    .await
    .unwrap();
    create(&release(&name, "shop", "2", 3, json!({})));
    wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    eventually("shop-2 at 3", WAIT, || async {
        (deployments.get("shop-2").await.ok()?.spec.replicas == Some(3)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_branch_of_a_branch_gets_its_grandparents_component_and_quota() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let prod = format!("chain-prod-{}", unique_suffix());
    let staging = format!("{prod}-staging");
    let pr = format!("{prod}-pr");
    let _guards = [&prod, &staging, &pr].map(|n| EnvironmentGuard::new(n));
    // prod -> staging -> pr: the database and the quota are prod's, the cache is staging's own.
    create(&environment(
        &prod,
        json!({"tier": "production", "quota": {"pods": 50}, "infrastructure": [database_component()]}),
    ));
    let cache = json!({"name": "cache", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cache-config"}}]});
    create(&environment(&staging, json!({"tier": "staging", "from": prod, "infrastructure": [cache]})));
    wait_phase(&envs, &staging, EnvironmentPhase::Ready).await;
    create(&environment(&pr, json!({"tier": "preview", "from": staging, "ttl": "1h"})));
    let env = wait_phase(&envs, &pr, EnvironmentPhase::Ready).await;
    assert_eq!(env.status.unwrap().branch.unwrap().parent, staging);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &pr);
    assert!(configmaps.get_opt("cache-config").await.unwrap().is_some(), "the parent's own component");
    assert!(configmaps.get_opt("db-config").await.unwrap().is_some(), "the grandparent's component");
    let db = Api::<Deployment>::namespaced(client.clone(), &pr).get_opt("postgres").await.unwrap();
    assert_eq!(db.expect("the grandparent's database").labels()["phaseloop.dev/environment"], pr);
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &pr).get_opt("phaseloop-quota").await.unwrap();
    assert_eq!(quota.expect("the grandparent's quota").spec.unwrap().hard.unwrap()["pods"].0, "50");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_unreadable_expiry_is_refused_at_admission() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("garbage-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&environment(&name, json!({"tier": "preview", "ttl": "1h"})));
    let e = wait_phase(&envs, &name, EnvironmentPhase::Ready).await;
    let expiry = e.status.unwrap().expires_at;
    for value in ["not-a-date", "99999-01-01T00:00:00Z", "2030-02-30T00:00:00Z", "tomorrow"] {
        let out = kubectl(&["annotate", "environment", &name, &format!("phaseloop.dev/expires-at={value}")]);
        assert!(!out.ok, "{value} was accepted");
        assert!(out.stderr.contains("phaseloop.dev/expires-at must be an RFC 3339 time"), "{value}: {}", out.stderr);
    }
    // A time phaseloop reads still moves the expiry.
    let out = kubectl(&["annotate", "environment", &name, "phaseloop.dev/expires-at=2099-01-01T00:00:00Z"]);
    assert!(out.ok, "{}", out.stderr);
    let e = wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()?.expires_at.as_ref())
            .is_some_and(|t| t.0.to_string() == "2099-01-01T00:00:00Z")
    })
    .await
    .unwrap();
    assert_ne!(e.status.unwrap().expires_at, expiry);
}

/// An operator of its own instance (`phaseloop.dev/instance`, so the suite's operator leaves its
/// Environments alone) whose clock is offset from the machine's by the test hook
/// `PHASELOOP_TEST_CLOCK_OFFSET`. Its Environments are deleted, and it stopped, when dropped.
struct OperatorWithClock {
    instance: String,
    port: u16,
    child: std::process::Child,
    environments: Vec<String>,
}

impl OperatorWithClock {
    fn start(offset: &str, port: u16) -> Self {
        let state = std::env::var("E2E_STATE").expect("E2E_STATE (env.sh)");
        let instance = format!("clock-{}", unique_suffix());
        let log = std::fs::File::create(format!("{state}/logs/operator-{instance}.log")).unwrap();
        let child = std::process::Command::new(repo_root().join("target/debug/phaseloop-operator"))
            .env("KUBECONFIG", format!("{state}/operator.kubeconfig"))
            .env("PHASELOOP_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("PHASELOOP_INSTANCE_ID", &instance)
            .env("PHASELOOP_TEST_CLOCK_OFFSET", offset)
            .env("POD_NAME", &instance)
            .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap();
        OperatorWithClock { instance, port, child, environments: vec![] }
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        eventually("the operator with an offset clock ready", WAIT, || async {
            reqwest::get(&url).await.ok()?.status().is_success().then_some(())
        })
        .await
        .unwrap();
    }

    /// Creates an Environment of this operator's instance.
    fn create(&mut self, name: &str, spec: Value) {
        let mut env = environment(name, spec);
        env["metadata"]["labels"] = json!({"phaseloop.dev/instance": self.instance});
        self.environments.push(name.to_string());
        create(&env);
    }

    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    async fn reconciles(&self, name: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/debug/reconciles?controller=environment&name={name}", self.port);
        let report: Value = reqwest::get(url).await.unwrap().json().await.unwrap_or_default();
        report["count"].as_u64().unwrap_or(0)
    }
}

impl Drop for OperatorWithClock {
    fn drop(&mut self) {
        // Deleted while this operator still runs (it removes the finalizer once the namespace is
        // gone), else the finalizer is taken off by hand.
        for name in &self.environments {
            let _ = kubectl(&["delete", "environment", name, "--timeout=60s", "--ignore-not-found"]);
            let off = r#"{"metadata":{"finalizers":null}}"#;
            let _ = kubectl(&["patch", "environment", name, "--type=merge", "-p", off]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_operator_whose_clock_runs_hours_ahead_deletes_nothing_before_its_ttl_and_says_why() {
    let _shared = shared().await;
    let client = client().await;
    let envs: Api<Environment> = Api::all(client.clone());
    let mut operator = OperatorWithClock::start("3h", extra_port(10));
    operator.wait_ready().await;
    let name = format!("early-{}", unique_suffix());
    // An hour to live by the API server's clock; by the operator's, it ended two hours ago.
    operator.create(&name, json!({"tier": "preview", "ttl": "1h"}));
    let held = |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Expiring" && c.reason == "ClockSkew"))
    };
    let e = wait_for(&envs, &name, WAIT, held).await.expect("the expiry held for the clock skew, not deleted");
    assert!(e.metadata.deletion_timestamp.is_none(), "deleted although its ttl has not passed");
    let (status, _, message) = condition(&e, "Expiring");
    assert_eq!(status, "False");
    assert!(message.contains("ahead of the API server") && message.contains("3h"), "{message}");
    let events: Api<Event> = Api::all(client.clone());
    let selector = ListParams::default().fields(&format!("involvedObject.name={name}"));
    eventually("a ClockSkew Warning Event", WAIT, || async {
        let list = events.list(&selector).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ClockSkew") && e.type_.as_deref() == Some("Warning"))
    })
    .await
    .unwrap();
    // The skew, as this operator measures it from the API server's Date header.
    let metrics = operator.metrics().await;
    let skew: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("phaseloop_clock_skew_seconds "))
        .unwrap_or_else(|| panic!("no phaseloop_clock_skew_seconds in {metrics}"))
        .parse()
        .unwrap();
    assert!((10_790.0..10_810.0).contains(&skew), "skew {skew}");
    // Looked at again (poked), still there.
    let before = operator.reconciles(&name).await;
    let poke = json!({"metadata": {"annotations": {"e2e/poke": "1"}}});
    envs.patch(&name, &PatchParams::default(), &Patch::Merge(&poke)).await.unwrap();
    eventually("another reconcile", WAIT, || async { (operator.reconciles(&name).await > before).then_some(()) })
        .await
        .unwrap();
    let e = envs.get(&name).await.unwrap();
    assert!(e.metadata.deletion_timestamp.is_none(), "deleted after another look");
    assert_eq!(condition(&e, "Expiring").1, "ClockSkew");
}
