//! Letting go before an uninstall (`phaseloop-operator let-go`, the chart's pre-delete hook).
//!
//! phaseloop's finalizers (a serving Release's, an Environment's, the single-namespace
//! RoleBinding's) are removed by a running operator only. Once it is uninstalled nothing would
//! remove them, and deleting a namespace, an Environment or the CRDs would wait for ever. So the
//! hook first stops the operator (a running one would put them back), then removes them from
//! everything of this install. What they protected stays as it is: Releases keep serving, and an
//! Environment deleted later takes its namespace with it through its owner reference (the
//! garbage collector; a production namespace still needs its `allow-delete` annotation).

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod, rbac::v1::RoleBinding};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use tracing::info;

use crate::{
    api::{Environment, Release},
    controller::{Config, environment::FINALIZER, instance_selector, release::SERVING_FINALIZER},
};

/// The finalizer on a single-namespace install's RoleBinding (see [`Config::role_binding`]).
pub const ACCESS_FINALIZER: &str = "phaseloop.dev/access";

/// Stops the operator's Deployment (`namespace/name`, when given), then removes phaseloop's
/// finalizers from this install's objects.
pub async fn let_go(client: &Client, config: &Config, deployment: Option<&str>) -> Result<(), String> {
    if let Some(d) = deployment {
        stop(client, d).await?;
    }
    let selector = ListParams::default().labels(&instance_selector(config));
    let releases: Api<Release> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut released = 0;
    for r in releases.list(&selector).await.map_err(|e| format!("listing Releases: {e}"))? {
        released += usize::from(remove(&Api::namespaced(client.clone(), r.ns()), &r, SERVING_FINALIZER).await?);
    }
    if config.watch_namespace.is_none() {
        let envs: Api<Environment> = Api::all(client.clone());
        for e in envs.list(&selector).await.map_err(|e| format!("listing Environments: {e}"))? {
            released += usize::from(remove(&envs, &e, FINALIZER).await?);
        }
    }
    if let (Some(ns), Some(name)) = (&config.watch_namespace, &config.role_binding) {
        let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), ns);
        if let Some(b) = bindings.get_opt(name).await.map_err(|e| format!("reading RoleBinding {name}: {e}"))? {
            released += usize::from(remove(&bindings, &b, ACCESS_FINALIZER).await?);
        }
    }
    info!(released, "phaseloop's finalizers removed; nothing waits for the operator any more");
    Ok(())
}

/// Scales the Deployment to zero and waits until none of its pods is left.
async fn stop(client: &Client, deployment: &str) -> Result<(), String> {
    let Some((ns, name)) = deployment.split_once('/') else {
        return Err(format!("--stop-deployment takes <namespace>/<name>, not {deployment:?}"));
    };
    let failed = |e: kube::Error| format!("stopping {deployment}: {e}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Some(d) = deployments.get_opt(name).await.map_err(failed)? else { return Ok(()) };
    let zero = json!({"spec": {"replicas": 0}});
    deployments.patch(name, &PatchParams::default(), &Patch::Merge(&zero)).await.map_err(failed)?;
    let labels = d.spec.selector.match_labels.unwrap_or_default();
    let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for _ in 0..120 {
        if pods.list(&ListParams::default().labels(&selector.join(","))).await.map_err(failed)?.items.is_empty() {
            info!(deployment, "operator stopped");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("the pods of {deployment} are still there after 2 minutes"))
}

/// Removes `finalizer` from `obj`: a merge patch carrying the resourceVersion it was read at, so
/// another finalizer added meanwhile is never dropped (on a conflict the object is read again).
/// Whether it was there.
async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<bool, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut current = obj.clone();
    for _ in 0..5 {
        if !current.finalizers().iter().any(|f| f == finalizer) {
            return Ok(false);
        }
        let rest: Vec<&String> = current.finalizers().iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": current.resource_version()}});
        match api.patch(&current.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.is_not_found() => return Ok(false),
            Err(kube::Error::Api(e)) if e.is_conflict() => match api.get_opt(&current.name_any()).await {
                Ok(Some(again)) => current = again,
                Ok(None) => return Ok(false),
                Err(e) => return Err(format!("reading {} again: {e}", obj.name_any())),
            },
            Err(e) => return Err(format!("removing {finalizer} from {}: {e}", obj.name_any())),
        }
    }
    Err(format!("{} kept changing: {finalizer} not removed", obj.name_any()))
}
