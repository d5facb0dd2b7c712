//! Single-namespace mode: the operator's rights in its namespace come from one RoleBinding (of a
//! ClusterRole; the chart's), which carries the finalizer `phaseloop.dev/access`.
//!
//! Deleting the namespace deletes everything in it at once, in no particular order: that binding
//! too. Without it the operator could not let go of the Releases still serving there, and the
//! namespace would wait for ever. So the binding stays until nothing in the namespace holds a
//! phaseloop finalizer any more; then the operator removes the binding's own. A ClusterRole rather
//! than a Role: a Role would be deleted with the namespace, finalizer or not on the binding.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tracing::{info, warn};

use super::{Context, Error, release::SERVING_FINALIZER};
use crate::{api::Release, uninstall::ACCESS_FINALIZER};

/// Removes the access finalizer from this operator's RoleBinding in `ns` once none of this
/// install's Releases there holds the serving finalizer any more (a fresh LIST, not the cache: of two Releases let go at once,
/// the later one's LIST sees both). Nothing outside single-namespace mode, and nothing while the
/// binding is not being deleted.
pub async fn let_go_when_done(ctx: &Context, ns: &str) -> Result<(), Error> {
    let (Some(name), Some(watched)) = (&ctx.config.role_binding, &ctx.config.watch_namespace) else { return Ok(()) };
    if watched != ns {
        return Ok(());
    }
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), ns);
    let Some(binding) = bindings.get_opt(name).await? else { return Ok(()) };
    if binding.metadata.deletion_timestamp.is_none() || !binding.finalizers().iter().any(|f| f == ACCESS_FINALIZER) {
        return Ok(());
    }
    // This install's Releases only: another install's (beside it in the namespace) are let go by
    // that install, and would never tell this one when.
    let releases: Api<Release> = Api::namespaced(ctx.client.clone(), ns);
    let mine = ListParams::default().labels(&super::instance_selector(&ctx.config));
    let holding = releases
        .list_metadata(&mine)
        .await?
        .items
        .into_iter()
        .any(|r| r.metadata.finalizers.unwrap_or_default().iter().any(|f| f == SERVING_FINALIZER));
    if holding {
        return Ok(());
    }
    let rest: Vec<&String> = binding.finalizers().iter().filter(|f| *f != ACCESS_FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": binding.resource_version()}});
    match bindings.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            info!(namespace = ns, binding = %name, "nothing left to let go of: the access RoleBinding goes");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Watches this operator's RoleBinding (single-namespace mode): once it is being deleted (its
/// namespace going, or an uninstall) and nothing holds a serving finalizer, it is let go; a
/// namespace without any Release gets no other signal.
pub async fn run(ctx: Arc<Context>) {
    let (Some(name), Some(ns)) = (ctx.config.role_binding.clone(), ctx.config.watch_namespace.clone()) else {
        return;
    };
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), &ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(bindings, config).default_backoff().applied_objects().boxed();
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            event = events.next() => match event {
                None => return,
                Some(Ok(b)) if b.metadata.deletion_timestamp.is_some() => {
                    if let Err(e) = let_go_when_done(&ctx, &ns).await {
                        warn!(error = %e, binding = %name, "could not let go of the access RoleBinding");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => warn!(error = %e, binding = %name, "watching the access RoleBinding"),
            },
        }
    }
}
