//! What wakes an Environment: its own watch, the watches of what it owns, its parent's changes,
//! the Releases of its namespace, and those of the Environment it promotes from automatically.

use std::sync::Arc;

use futures::{
    StreamExt, TryStreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    batch::v1::Job,
    core::v1::{LimitRange, Namespace, ResourceQuota},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, ResourceExt,
    runtime::{Controller, reflector::ObjectRef, watcher},
};

use crate::{
    api::{Environment, label},
    controller::{Context, ReleaseChange, caches::EnvironmentWriters, environment::namespace_of, watch},
};

/// The Environment controller, ready to run, its watches filling the caches through `w`: the
/// namespaces and workloads it owns, and the Releases (from `released`, the Release controller's
/// watch) whose activity keeps an Environment awake. Each Environment change, once cached, also
/// goes to `environment_changes` (the Release controller's).
pub fn controller(
    ctx: Arc<Context>,
    w: EnvironmentWriters,
    released: UnboundedReceiver<ReleaseChange>,
    environment_changes: UnboundedSender<Environment>,
) -> Controller<Environment> {
    let client = ctx.client.clone();
    let wc = watcher::Config::default().page_size(ctx.config.page_size);
    let owned = wc.clone().labels(&format!("{}={}", label::MANAGED_BY, label::MANAGER));
    let store = ctx.caches.environments.clone().expect("the Environment cache exists when its writers do");
    // A changed Environment also wakes its branches (they follow their parent with `followParent`,
    // and a branching cycle involves both sides), once this controller's cache has the change.
    let (changes, changed) = futures::channel::mpsc::unbounded::<Environment>();
    let mine = wc.clone().labels(&crate::controller::instance_selector(&ctx.config));
    let environments = watch::objects(Api::<Environment>::all(client.clone()), mine, w.environments, ctx.clone())
        .inspect_ok(move |e| {
            drop(changes.unbounded_send(e.clone()));
            drop(environment_changes.unbounded_send(e.clone()));
        });
    let controller = Controller::for_stream(environments, store.clone()).with_config(watch::controller_config(&ctx));
    let c = ctx.clone();
    let branches = store.clone();
    let controller = controller.watches_stream(changed.map(Ok::<_, watcher::Error>), move |parent: Environment| {
        let refs = branches
            .state()
            .into_iter()
            .filter(|e| e.spec.from.as_deref() == Some(parent.name_any().as_str()))
            .map(|e| ObjectRef::from_obj(&*e))
            .collect::<Vec<_>>();
        watch::marked(&c, refs)
    });
    // Children are namespaced, their owner cluster-scoped: they map to their owner by hand. All
    // metadata-only, each into its children cache; Deployments' cache is the Release controller's
    // (its watch of managed Deployments has the Environments' too), so this watch only wakes.
    let c = ctx.clone();
    let owner = move |meta: &kube::api::ObjectMeta| {
        let refs = watch::owner(meta, "Environment").map(|(name, _)| ObjectRef::new(&name)).into_iter().collect();
        watch::marked(&c, refs)
    };
    macro_rules! children {
        ($controller:expr, $(($kind:ty, $writer:expr)),+) => {{
            let mut controller = $controller;
            $(
                let stream = watch::metadata(Api::<watch::Meta<$kind>>::all(client.clone()), owned.clone(), $writer);
                let mapper = owner.clone();
                controller = controller.watches_stream(stream, move |o| mapper(&o.metadata));
            )+
            controller
        }};
    }
    let controller = children!(
        controller,
        (Namespace, Some(w.namespaces)),
        (Deployment, None),
        (StatefulSet, Some(w.statefulsets)),
        (Job, Some(w.jobs)),
        (ResourceQuota, Some(w.quotas)),
        (LimitRange, Some(w.limit_ranges)),
        (NetworkPolicy, Some(w.network_policies))
    );
    // A Release's activity keeps its Environment awake and shows in `status.apps`. The changes
    // come from the Release controller's watch once its cache (which this reconcile reads) has
    // them; the namespace is all the mapping needs.
    let c = ctx.clone();
    controller.watches_stream(released.map(Ok::<_, watcher::Error>), move |rel| {
        let ns = rel.metadata.namespace.unwrap_or_default();
        let all = store.state();
        let owners: Vec<String> = all.iter().filter(|e| namespace_of(e) == ns).map(|e| e.name_any()).collect();
        // Its own Environment, the branches following it (they deploy its new Live versions) and
        // the Environments promoting from it automatically (they request its new Live versions).
        let refs = all
            .iter()
            .filter(|e| {
                owners.contains(&e.name_any())
                    || (e.spec.follow_parent && e.spec.from.as_ref().is_some_and(|p| owners.contains(p)))
                    || super::observe::automatic_from(e).is_some_and(|f| owners.iter().any(|o| o == f))
            })
            .map(|e| ObjectRef::from_obj(&**e))
            .collect::<Vec<_>>();
        watch::marked(&c, refs)
    })
}
