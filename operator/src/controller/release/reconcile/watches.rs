//! What wakes a Release: its own watch, the workloads and Services it owns, the autoscalers that
//! target its app, and the Environment of its namespace.

use std::sync::Arc;

use futures::{
    StreamExt, TryStreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Service};
use kube::{
    ResourceExt,
    runtime::{Controller, WatchStreamExt, reflector::ObjectRef, watcher},
};

use crate::{
    api::{Environment, Release, ReleasePhase},
    controller::{Context, ReleaseChange, caches::ReleaseWriters, environment::namespace_of, release::workload, watch},
};

/// The Release controller, ready to run, its watches filling the caches through `w`: Releases,
/// the Deployments they own (re-running every Release of an app when one changes: the queue is per
/// app), their Services, and HorizontalPodAutoscalers. Each Release change, once cached, also goes
/// to `release_changes` (the Environment controller's); each Environment change from
/// `environments_changed` wakes the Releases of its namespace (sleep, freeze, promotion).
pub fn controller(
    ctx: Arc<Context>,
    w: ReleaseWriters,
    release_changes: Option<UnboundedSender<ReleaseChange>>,
    environments_changed: UnboundedReceiver<Environment>,
) -> Controller<Release> {
    let wc = watcher::Config::default().page_size(ctx.config.page_size);
    let scope = ctx.config.watch_namespace.as_deref();
    let (changes, changed) = futures::channel::mpsc::unbounded::<Release>();
    let mine = wc.clone().labels(&crate::controller::instance_selector(&ctx.config));
    let releases = watch::objects(watch::scoped::<Release>(&ctx.client, scope), mine, w.releases, ctx.clone())
        .inspect_ok(move |r| {
            if let Some(tx) = &release_changes {
                let metadata = kube::api::ObjectMeta {
                    name: r.metadata.name.clone(),
                    namespace: r.metadata.namespace.clone(),
                    ..Default::default()
                };
                drop(tx.unbounded_send(ReleaseChange { types: None, metadata, _phantom: Default::default() }));
            }
            drop(changes.unbounded_send(r.clone()))
        });
    let controller =
        Controller::for_stream(releases, ctx.caches.releases.clone()).with_config(watch::controller_config(&ctx));
    let controller = wake_on_autoscalers(controller, &ctx, &wc, w.autoscalers);
    let controller = wake_on_children(controller, &ctx, &wc, w.deployments, w.deployment_meta, w.service_meta);
    let controller = match w.routes {
        Some(writer) => wake_on_routes(controller, &ctx, &wc, writer),
        None => controller,
    };
    // An Environment's change (it fell asleep, woke, froze, its promotion rules changed) re-runs
    // the Releases of its namespace, from the Environment controller's cache.
    let c = ctx.clone();
    let controller = controller.watches_stream(environments_changed.map(Ok::<_, watcher::Error>), move |env| {
        let ns = namespace_of(&env);
        let refs = c.caches.releases.state().into_iter().filter(|r| r.namespace().as_deref() == Some(ns.as_str()));
        watch::marked(&c, refs.map(|r| ObjectRef::from_obj(&*r)).collect())
    });
    // Every Release of an app re-runs when one of them changes (the queue is per app). The changes
    // come from this controller's own watch, after its cache has taken them in: a sibling woken by
    // a deletion no longer sees the deleted Release, and no second watch of Releases is needed.
    let c = ctx.clone();
    controller.watches_stream(changed.map(Ok::<_, watcher::Error>), move |r: Release| {
        let refs = c
            .caches
            .releases
            .state()
            .into_iter()
            .filter(|o| o.namespace() == r.namespace() && o.name_any() != r.name_any() && o.spec.app == r.spec.app);
        watch::marked(&c, refs.map(|o| ObjectRef::from_obj(&*o)).collect())
    })
}

/// HorizontalPodAutoscalers fill their cache and wake the Releases of the app they target.
fn wake_on_autoscalers(
    controller: Controller<Release>,
    ctx: &Arc<Context>,
    wc: &watcher::Config,
    writer: kube::runtime::reflector::store::Writer<HorizontalPodAutoscaler>,
) -> Controller<Release> {
    let scope = ctx.config.watch_namespace.as_deref();
    let autoscalers = watcher(watch::scoped::<HorizontalPodAutoscaler>(&ctx.client, scope), wc.clone())
        .default_backoff()
        .modify(watch::lean)
        .reflect(writer);
    let c = ctx.clone();
    controller.watches_stream(autoscalers.touched_objects(), move |hpa: HorizontalPodAutoscaler| {
        let target = hpa.spec.scale_target_ref.name;
        let refs = c.caches.releases.state().into_iter().filter(|r| {
            r.namespace() == hpa.metadata.namespace && workload::deployment_name(&r.spec.app, &r.spec.version) == target
        });
        watch::marked(&c, refs.map(|r| ObjectRef::from_obj(&*r)).collect())
    })
}

/// Owned Deployments and Services. Deployments' status is what rollouts wait for, so these are
/// full objects, lean: without the pod template (the largest part, which phaseloop builds and never
/// reads back) and managed fields; their metadata also feeds the children cache. Services:
/// metadata only. A Deployment wakes its owner, and the app's Releases rolling out or Live: a
/// rollout also waits for the other version's pods (the warm pods of the switch, a handover back),
/// and so does a revert.
fn wake_on_children(
    controller: Controller<Release>,
    ctx: &Arc<Context>,
    wc: &watcher::Config,
    deployments: kube::runtime::reflector::store::Writer<Deployment>,
    mut deployment_meta: kube::runtime::reflector::store::Writer<watch::Meta<Deployment>>,
    service_meta: kube::runtime::reflector::store::Writer<watch::Meta<Service>>,
) -> Controller<Release> {
    let scope = ctx.config.watch_namespace.as_deref();
    let owned = wc.clone().labels(&format!("{}={}", crate::api::label::MANAGED_BY, crate::api::label::MANAGER));
    let deployment_events = watcher(watch::scoped::<Deployment>(&ctx.client, scope), owned.clone())
        .default_backoff()
        .modify(|d| {
            watch::lean(d);
            d.spec.template = Default::default();
        })
        .map_ok(move |event| {
            deployment_meta.apply_watcher_event(&crate::controller::children::metadata_event(&event));
            event
        })
        .reflect(deployments)
        .touched_objects();
    let services =
        watch::metadata(watch::scoped::<watch::Meta<Service>>(&ctx.client, scope), owned, Some(service_meta));
    let owner = |meta: &kube::api::ObjectMeta| {
        watch::owner(meta, "Release").map(|(name, ns)| ObjectRef::new(&name).within(&ns.unwrap_or_default()))
    };
    let c = ctx.clone();
    let deployment_owners = move |d: Deployment| {
        let mut refs: Vec<_> = owner(&d.metadata).into_iter().collect();
        let app = d.labels().get(crate::api::label::NAME);
        let rolling = c.caches.releases.state().into_iter().filter(|r| {
            r.namespace() == d.namespace()
                && Some(&r.spec.app) == app
                && matches!(
                    r.status.as_ref().and_then(|s| s.phase),
                    Some(ReleasePhase::Progressing | ReleasePhase::Paused | ReleasePhase::Live)
                )
        });
        for r in rolling.map(|r| ObjectRef::from_obj(&*r)).collect::<Vec<_>>() {
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
        watch::marked(&c, refs)
    };
    let c = ctx.clone();
    controller
        .watches_stream(deployment_events, deployment_owners)
        .watches_stream(services, move |s| watch::marked(&c, owner(&s.metadata).into_iter().collect()))
}

/// HTTPRoutes (with `--gateway-api`) fill their cache and wake the Releases that steer them: a
/// route written, accepted by its Gateway, or rewritten by someone else.
fn wake_on_routes(
    controller: Controller<Release>,
    ctx: &Arc<Context>,
    wc: &watcher::Config,
    writer: kube::runtime::reflector::store::Writer<kube::api::DynamicObject>,
) -> Controller<Release> {
    use crate::controller::release::traffic::{gateway, routing};
    let ar = gateway::api_resource();
    let api: kube::Api<kube::api::DynamicObject> = match ctx.config.watch_namespace.as_deref() {
        Some(ns) => kube::Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => kube::Api::all_with(ctx.client.clone(), &ar),
    };
    let routes =
        watcher(api, wc.clone()).default_backoff().modify(gateway::lean_route).reflect(writer).touched_objects();
    let c = ctx.clone();
    controller.watches_stream_with(
        routes,
        move |route: kube::api::DynamicObject| {
            let name = route.name_any();
            let refs = c.caches.releases.state().into_iter().filter(|r| {
                r.namespace() == route.namespace()
                    && routing(r).is_some_and(|t| t.gateway_api.http_routes.iter().any(|h| h.name == name))
            });
            watch::marked(&c, refs.map(|r| ObjectRef::from_obj(&*r)).collect())
        },
        ar,
    )
}
