//! API I/O of the Environment controller.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{
    StreamExt, TryStreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use jiff::Timestamp;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::Job,
        core::v1::{LimitRange, Namespace, ResourceQuota},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
    discovery::{ApiCapabilities, Scope, pinned_kind},
    runtime::{Controller, controller::Action, events::EventType, finalizer, reflector::ObjectRef, watcher},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{debug, info};

use super::{
    FINALIZER, Observation, SeedState, desired, desired_status, expires_at,
    infrastructure::{self, Prepared},
    namespace_of,
    sleep::{self, Decision},
    validate,
};
use crate::{
    api::{
        AppliedObject, BranchStatus, ComponentStatus, Environment, EnvironmentPhase, EnvironmentSpec,
        EnvironmentStatus, Release, annotation, label, reason,
    },
    controller::{
        Context, Error, ReleaseChange, caches::EnvironmentWriters, fields, fields::FIELD_MANAGER, publish,
        publish_phase_change, status::apply_status, watch,
    },
};

/// Name of this controller in metrics and logs.
pub const NAME: &str = "environment";
/// Safety-net requeue while something is still coming up (child watches usually come first).
const PROVISIONING_REQUEUE: Duration = Duration::from_secs(10);

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
        // Its own Environment, and the branches following it (they deploy its new Live versions).
        let refs = all
            .iter()
            .filter(|e| {
                owners.contains(&e.name_any())
                    || (e.spec.follow_parent && e.spec.from.as_ref().is_some_and(|p| owners.contains(p)))
            })
            .map(|e| ObjectRef::from_obj(&**e))
            .collect::<Vec<_>>();
        watch::marked(&c, refs)
    })
}

pub async fn run(controller: Controller<Environment>, ctx: Arc<Context>) {
    crate::controller::run_instrumented(NAME, controller, reconcile, ctx).await
}

use crate::controller::now;

/// One reconcile, behind kube-runtime's finalizer helper: the finalizer goes on before anything
/// is created (no namespace a deletion could orphan) and comes off once [`cleanup`] succeeds.
/// What the owner should hear of a failure (a refused child, a quota) is reported on the
/// Environment (see [`crate::controller::reported`]).
async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Environment> = Api::all(ctx.client.clone());
    let result = finalizer::finalizer(&api, FINALIZER, env.clone(), |event| async {
        match event {
            finalizer::Event::Apply(env) => reconcile_environment(env, ctx.clone()).await,
            finalizer::Event::Cleanup(env) => cleanup(&api, &env, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => e.into(),
        other => Error::Internal(other.to_string()),
    });
    crate::controller::reported(&ctx, &api, &*env, env.status.as_ref(), result).await
}

async fn reconcile_environment(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Environment> = Api::all(ctx.client.clone());
    let now = now();
    let now_t = Time(now);
    let mut base = env.status.clone().unwrap_or_default();
    if let Some(action) = stopped(&ctx, &api, &env, &base, &now_t).await? {
        return Ok(action);
    }
    let parent_spec = match resolve_parent(&api, &env, &mut base).await? {
        Parent::Root => None,
        Parent::Inherited(spec) => Some(*spec),
        Parent::NotFound(message) => {
            let obs = Observation::blocked("ParentNotFound", message);
            write_status(&api, &env, &ctx, desired_status(&env, base, &obs, &now_t)).await?;
            return Ok(Action::requeue(PROVISIONING_REQUEUE));
        }
    };
    let spec = desired::effective_spec(&env.spec, parent_spec.as_ref());
    let ns = namespace_of(&env);
    if let Some(message) = provision_namespace(&ctx, &env, &ns, &spec).await? {
        let obs = Observation::blocked("NamespaceConflict", message);
        write_status(&api, &env, &ctx, desired_status(&env, base, &obs, &now_t)).await?;
        return Ok(Action::requeue(PROVISIONING_REQUEUE * 3));
    }

    // Sleep: decided before the infrastructure, which is applied at zero replicas while asleep.
    // One list of the namespace's Releases serves both the sleep clock and `status.apps`.
    let releases = releases_in(&ctx, &ns).await?;
    let wake_requested = env.annotations().contains_key(annotation::WAKE);
    let decision = sleep::decide(
        env.spec.sleep_after.map(Into::into),
        last_activity(&env, &releases, &base),
        base.slept_at.as_ref().map(|t| t.0),
        wake_requested,
        now,
    );
    let sleeping = decision == Decision::Sleep;
    let (components, refused) =
        provision_infrastructure(&ctx, &env, &ns, &spec, &base.components, &releases, sleeping).await?;
    for (component, why) in &refused {
        let was = base.components.iter().find(|c| &c.name == component).and_then(|c| c.message.as_ref());
        if was != Some(why) {
            let note = format!("component {component} refused: {why}");
            publish(&ctx, &*env, EventType::Warning, "ComponentRefused", note).await;
        }
    }
    let infra_ready = refused.is_empty() && components.iter().all(|c| c.ready);
    let seed = seed(&ctx, &env, &ns, &spec, &base, infra_ready).await?;
    apply_sleep(&ctx, &env, decision, &mut base, now).await;
    if let Some(parent) = env.spec.from.as_deref() {
        branch_live_releases(&ctx, &api, parent, &ns, env.spec.follow_parent).await?;
    }
    base.apps = super::live_apps(&releases);
    let obs = Observation { blocked: None, components, refused, seed, sleeping };
    let status = desired_status(&env, base, &obs, &now_t);
    let ready = matches!(status.phase, Some(EnvironmentPhase::Ready | EnvironmentPhase::Sleeping));
    write_status(&api, &env, &ctx, status).await?;
    if wake_requested {
        // Consumed only after the status saying "awake" is written: a reconcile that sees the
        // annotation gone therefore also sees the wake, and cannot put the Environment back to sleep.
        let patch = json!({"metadata": {"annotations": {annotation::WAKE: null}}});
        api.patch(&env.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(next_wake(&env, now, decision, ready))
}

/// What stops an Environment before anything is provisioned: an invalid spec, a reached expiry
/// (then it deletes itself), a branching cycle. `Some` when one did (its status written).
async fn stopped(
    ctx: &Context,
    api: &Api<Environment>,
    env: &Environment,
    base: &EnvironmentStatus,
    now: &Time,
) -> Result<Option<Action>, Error> {
    let mut problems = validate(&env.name_any(), &env.spec);
    problems.extend(super::pod_security_problem(env.spec.pod_security, ctx.config.max_pod_security));
    if !problems.is_empty() {
        let obs = Observation::blocked(reason::INVALID_SPEC, problems.join("; "));
        write_status(api, env, ctx, desired_status(env, base.clone(), &obs, now)).await?;
        return Ok(Some(Action::await_change()));
    }
    if let Some(expiry) = expires_at(env, base.expires_at.as_ref())
        && now.0 >= expiry.0
    {
        let mut status = base.clone();
        if status.phase != Some(EnvironmentPhase::Expiring) {
            ctx.metrics.observe_expiration(env.spec.tier.as_str());
        }
        status.phase = Some(EnvironmentPhase::Expiring);
        write_status(api, env, ctx, status).await?;
        info!(env = %env.name_any(), "ttl reached; deleting");
        api.delete(&env.name_any(), &DeleteParams::background()).await?;
        return Ok(Some(Action::await_change()));
    }
    if let Some(cycle) = cycle_of(ctx, env).await? {
        // Neither namespace is touched: branching has no first Environment to start from.
        let message = format!(
            "spec.from forms a branching cycle ({}): change the from of one of them; nothing was changed",
            cycle.join(" -> ")
        );
        let obs = Observation::blocked("ParentCycle", message);
        write_status(api, env, ctx, desired_status(env, base.clone(), &obs, now)).await?;
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

/// The namespace and its quota, defaults and isolation. `Some(why)` when the namespace exists and
/// is not this Environment's: then nothing is touched.
async fn provision_namespace(
    ctx: &Context,
    env: &Environment,
    ns: &str,
    spec: &EnvironmentSpec,
) -> Result<Option<String>, Error> {
    let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
    // Ours when the cache of phaseloop's namespaces has it with this Environment's label; anything
    // else (a foreign namespace is not in that cache) is looked up.
    ctx.caches.children.synced::<Namespace>().await;
    let cached = ctx.caches.children.get::<Namespace>(None, ns).ok().flatten();
    let ours = cached.is_some_and(|m| m.labels().get(label::ENVIRONMENT) == Some(&env.name_any()));
    if !ours
        && let Some(existing) = ns_api.get_opt(ns).await?
        && existing.labels().get(label::ENVIRONMENT) != Some(&env.name_any())
    {
        return Ok(Some(format!("namespace {ns} exists and is not managed by this Environment; it is left untouched")));
    }
    // Never looser than the operator allows, even when inherited from a parent.
    let level = spec.pod_security.unwrap_or_default().min(ctx.config.max_pod_security);
    ctx.caches.children.apply(&ns_api, desired::namespace(env, ns, level)).await?;
    let quota = spec.quota.as_ref().map(|q| desired::resource_quota(env, ns, q));
    apply_or_delete(ctx, ns, desired::QUOTA_NAME, quota).await?;
    let defaults = spec.defaults.as_ref().map(|d| desired::limit_range(env, ns, d));
    apply_or_delete(ctx, ns, desired::LIMIT_RANGE_NAME, defaults).await?;
    let isolation = (spec.isolation == crate::api::Isolation::Namespace)
        .then(|| desired::network_policy(env, ns, &ctx.config.monitoring_namespace));
    apply_or_delete::<NetworkPolicy>(ctx, ns, desired::NETWORK_POLICY_NAME, isolation).await?;
    Ok(None)
}

/// Timed requeues instead of polling: the next expiry or sleep, whichever is first; shortly again
/// while something is still coming up.
fn next_wake(env: &Environment, now: Timestamp, decision: Decision, ready: bool) -> Action {
    let mut next: Vec<Duration> = vec![];
    if let Some(e) = expires_at(env, env.status.as_ref().and_then(|s| s.expires_at.as_ref())) {
        next.push(until(now, e.0));
    }
    if let Decision::Awake { sleep_at: Some(at) } = decision {
        next.push(until(now, at));
    }
    if !ready {
        next.push(PROVISIONING_REQUEUE);
    }
    next.into_iter().min().map(Action::requeue).unwrap_or_else(Action::await_change)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    // One extra second so the requeue lands after the deadline, not just before it.
    Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_secs(1)
}

async fn write_status(
    api: &Api<Environment>,
    env: &Environment,
    ctx: &Context,
    status: EnvironmentStatus,
) -> Result<(), Error> {
    let old_phase = env.status.as_ref().and_then(|s| s.phase);
    if apply_status(api, &ctx.written, env, env.status.as_ref(), &status).await? {
        let message = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.message.clone());
        publish_phase_change(ctx, env, old_phase, status.phase, message).await;
    }
    Ok(())
}

/// The branching cycle `env` is in, from the Environment cache (else listed).
async fn cycle_of(ctx: &Context, env: &Environment) -> Result<Option<Vec<String>>, Error> {
    if env.spec.from.is_none() {
        return Ok(None);
    }
    let all: Vec<Environment> = match crate::controller::synced_store(ctx.caches.environments.as_ref()).await {
        Some(store) => store.state().iter().map(|e| (**e).clone()).collect(),
        None => Api::<Environment>::all(ctx.client.clone()).list(&ListParams::default()).await?.items,
    };
    let from_of = |name: &str| -> Option<String> {
        if name == env.name_any() {
            return env.spec.from.clone();
        }
        all.iter().find(|e| e.name_any() == name).and_then(|e| e.spec.from.clone())
    };
    Ok(super::parent_cycle(&env.name_any(), from_of))
}

/// What an Environment inherits from its parent.
enum Parent {
    /// No parent: not a branch.
    Root,
    /// The parent's inheritable spec.
    Inherited(Box<EnvironmentSpec>),
    /// The parent is needed but missing (why, for the status).
    NotFound(String),
}

/// The parent's inheritable spec: the snapshot in status, refreshed when the branch is new or
/// follows its parent.
async fn resolve_parent(
    api: &Api<Environment>,
    env: &Environment,
    status: &mut EnvironmentStatus,
) -> Result<Parent, Error> {
    let Some(parent_name) = env.spec.from.as_deref() else {
        status.branch = None;
        return Ok(Parent::Root);
    };
    let snapshot_of_this_parent = status.branch.as_ref().filter(|b| b.parent == parent_name);
    if let Some(b) = snapshot_of_this_parent
        && !env.spec.follow_parent
    {
        return Ok(Parent::Inherited(Box::new(b.snapshot.clone())));
    }
    match api.get_opt(parent_name).await? {
        Some(parent) => {
            let generation = parent.metadata.generation.unwrap_or(0);
            if snapshot_of_this_parent.is_none_or(|b| b.parent_generation != generation) {
                status.branch = Some(BranchStatus {
                    parent: parent_name.to_string(),
                    parent_generation: generation,
                    snapshot: desired::inheritable(&parent.spec),
                });
            }
            Ok(status.branch.as_ref().map_or(Parent::Root, |b| Parent::Inherited(Box::new(b.snapshot.clone()))))
        }
        None => match snapshot_of_this_parent {
            // A following branch keeps its last snapshot when the parent goes away.
            Some(b) => Ok(Parent::Inherited(Box::new(b.snapshot.clone()))),
            None => Ok(Parent::NotFound(format!("parent Environment {parent_name} not found"))),
        },
    }
}

/// The Releases of `ns`: from the Release controller's cache once it is synced, else listed.
async fn releases_in(ctx: &Context, ns: &str) -> Result<Vec<Release>, Error> {
    if let Some(store) = crate::controller::synced_store(Some(&ctx.caches.releases)).await {
        let mut releases: Vec<Release> = store
            .state()
            .into_iter()
            .filter(|r| r.namespace().as_deref() == Some(ns))
            .map(|r| (*ctx.written.freshest(r)).clone())
            .collect();
        releases.sort_by_key(|r| r.name_any());
        return Ok(releases);
    }
    Ok(Api::<Release>::namespaced(ctx.client.clone(), ns).list(&ListParams::default()).await?.items)
}

/// Server-side apply of a typed object under phaseloop's field manager.
async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await?)
}

/// Applies `desired` in `ns`, or deletes the object named `name` when nothing is desired.
async fn apply_or_delete<K>(ctx: &Context, ns: &str, name: &str, desired: Option<K>) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match desired {
        Some(obj) => ctx.caches.children.apply(&api, obj).await.map(|_| ())?,
        None => ctx.caches.children.delete(&api, Some(ns), name).await?,
    }
    Ok(())
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Discovery results for one reconcile, so each kind is looked up once.
#[derive(Default)]
struct Kinds(HashMap<GroupVersionKind, Result<(ApiResource, ApiCapabilities), String>>);

impl Kinds {
    async fn get(&mut self, ctx: &Context, gvk: &GroupVersionKind) -> Result<(ApiResource, ApiCapabilities), String> {
        if !self.0.contains_key(gvk) {
            let found = pinned_kind(&ctx.client, gvk)
                .await
                .map_err(|e| format!("unknown kind {}/{} {}: {e}", gvk.group, gvk.version, gvk.kind));
            self.0.insert(gvk.clone(), found);
        }
        self.0[gvk].clone()
    }
}

type Refused = Vec<(String, String)>;

/// Applies every component, each on its own: a refused component never stops the others. Objects
/// no longer declared (or of components removed) are deleted.
async fn provision_infrastructure(
    ctx: &Context,
    env: &Environment,
    ns: &str,
    spec: &EnvironmentSpec,
    old: &[ComponentStatus],
    releases: &[Release],
    sleeping: bool,
) -> Result<(Vec<ComponentStatus>, Refused), Error> {
    let mut kinds = Kinds::default();
    let mut statuses = Vec::new();
    let mut refused = Vec::new();
    for component in &spec.infrastructure {
        let previous = old.iter().find(|c| c.name == component.name).map(|c| c.objects.clone()).unwrap_or_default();
        match apply_component(ctx, &mut kinds, env, ns, component, releases, sleeping).await? {
            Applied::Done { objects: applied, ready, waiting } => {
                let gone: Vec<&AppliedObject> = previous.iter().filter(|o| !applied.contains(o)).collect();
                delete_objects(ctx, &mut kinds, ns, gone).await?;
                statuses.push(ComponentStatus {
                    name: component.name.clone(),
                    ready,
                    message: (!ready).then(|| format!("waiting for {}", waiting.join(", "))),
                    objects: applied,
                });
            }
            Applied::Refused(why) => {
                // Refused: what was applied before stays as it is (it may be serving).
                statuses.push(ComponentStatus {
                    name: component.name.clone(),
                    ready: false,
                    message: Some(why.clone()),
                    objects: previous,
                });
                refused.push((component.name.clone(), why));
            }
        }
    }
    for removed in old.iter().filter(|c| !spec.infrastructure.iter().any(|s| s.name == c.name)) {
        info!(env = %env.name_any(), component = %removed.name, "component removed; deleting its objects");
        delete_objects(ctx, &mut kinds, ns, removed.objects.iter().collect()).await?;
    }
    Ok((statuses, refused))
}

/// What became of one infrastructure component.
enum Applied {
    /// Applied: its objects, whether all are ready, and those not ready yet.
    Done { objects: Vec<AppliedObject>, ready: bool, waiting: Vec<String> },
    /// Refused (why), nothing of it applied: a kind outside the allow-list, a cluster-scoped or
    /// unknown kind, an object the API server rejects.
    Refused(String),
}

async fn apply_component(
    ctx: &Context,
    kinds: &mut Kinds,
    env: &Environment,
    ns: &str,
    component: &crate::api::Component,
    releases: &[Release],
    sleeping: bool,
) -> Result<Applied, Error> {
    let prepared = match infrastructure::prepare(env, ns, component) {
        Ok(p) => p,
        Err(why) => return Ok(Applied::Refused(why)),
    };
    // Check every object before applying any, so a refused component changes nothing.
    let mut resolved: Vec<(Prepared, ApiResource)> = Vec::new();
    for p in prepared {
        let (ar, caps) = match kinds.get(ctx, &p.gvk).await {
            Ok(found) => found,
            Err(why) => return Ok(Applied::Refused(why)),
        };
        if caps.scope == Scope::Cluster {
            return Ok(Applied::Refused(format!(
                "{} is cluster-scoped; infrastructure may only hold namespaced objects",
                p.gvk.kind
            )));
        }
        if let Err(why) = crate::controller::infrastructure_allowed(
            &ctx.config.infrastructure_kinds,
            &ar.group,
            &ar.plural,
            &p.gvk.kind,
        ) {
            return Ok(Applied::Refused(why));
        }
        resolved.push((p, ar));
    }
    let prepared: Vec<Prepared> = resolved.iter().map(|(p, _)| p.clone()).collect();
    if let Some(why) = infrastructure::clash_with_apps(&prepared, releases) {
        return Ok(Applied::Refused(why));
    }
    // Read back first: an object of that name must be this Environment's (one owner per name:
    // never one of a Release, nor anyone else's), and one that already is what phaseloop applied
    // is not written again (a read failing for any reason just means applying, which reports
    // the problem).
    let mut current = Vec::new();
    for (p, ar) in &resolved {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
        let name = p.object.metadata.name.clone().unwrap_or_default();
        let live = api.get_opt(&name).await.ok().flatten();
        if let Some(other) = live.as_ref().and_then(|l| infrastructure::owned_by_another(l, env)) {
            return Ok(Applied::Refused(format!(
                "{} {name} exists and belongs to {other}: an Environment never takes over an object it did not create",
                p.gvk.kind
            )));
        }
        current.push(live);
    }
    let mut applied = Vec::new();
    let mut waiting = Vec::new();
    for ((mut p, ar), current) in resolved.into_iter().zip(current) {
        if sleeping && matches!(p.gvk.kind.as_str(), "Deployment" | "StatefulSet") {
            p.object.data["spec"]["replicas"] = json!(0);
        }
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
        let name = p.object.metadata.name.clone().unwrap_or_default();
        fields::stamp(&mut p.object);
        let live = match current {
            Some(live) if ctx.caches.children.unchanged_dynamic(&p.object, &p.gvk.kind, &live) => live,
            _ => match api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&p.object)).await {
                Ok(live) => {
                    ctx.caches.children.record_dynamic(&live, &p.gvk.kind);
                    live
                }
                Err(kube::Error::Api(e)) if (400..500).contains(&e.code) => {
                    return Ok(Applied::Refused(format!(
                        "{} {name} rejected by the API server: {}",
                        p.gvk.kind, e.message
                    )));
                }
                Err(e) => return Err(e.into()),
            },
        };
        applied.push(p.applied());
        match infrastructure::readiness(&p.gvk.kind, &live) {
            Ok(true) => {}
            Ok(false) => waiting.push(format!("{} {name}", p.gvk.kind)),
            Err(why) => return Ok(Applied::Refused(why)),
        }
    }
    applied.sort();
    Ok(Applied::Done { objects: applied, ready: waiting.is_empty(), waiting })
}

async fn delete_objects(ctx: &Context, kinds: &mut Kinds, ns: &str, objects: Vec<&AppliedObject>) -> Result<(), Error> {
    for o in objects {
        let types = kube::api::TypeMeta { api_version: o.api_version.clone(), kind: o.kind.clone() };
        let Ok(gvk) = GroupVersionKind::try_from(&types) else {
            continue;
        };
        let Ok((ar, _)) = kinds.get(ctx, &gvk).await else {
            continue;
        };
        debug!(kind = %o.kind, name = %o.name, "pruning");
        delete_if_present(&Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, &ar), &o.name).await?;
    }
    Ok(())
}

/// Runs the seed Job once, after the infrastructure is ready.
async fn seed(
    ctx: &Context,
    env: &Environment,
    ns: &str,
    spec: &EnvironmentSpec,
    status: &EnvironmentStatus,
    infra_ready: bool,
) -> Result<SeedState, Error> {
    let Some(seed) = &spec.seed else {
        return Ok(SeedState::NotConfigured);
    };
    if status.seeded {
        return Ok(SeedState::Succeeded);
    }
    if !infra_ready {
        return Ok(SeedState::Waiting);
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let job = match jobs.get_opt(desired::SEED_JOB_NAME).await? {
        Some(job) => job,
        // Created once; never re-applied, so a finished Job is not mutated (its template is immutable).
        None => apply(&jobs, &desired::seed_job(env, ns, seed)).await?,
    };
    let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t && c.status == "True");
    Ok(if has("Complete") {
        SeedState::Succeeded
    } else if has("Failed") {
        SeedState::Failed(format!("seed Job {} failed after {} retries", desired::SEED_JOB_NAME, seed.retries))
    } else {
        SeedState::Running
    })
}

/// Last Release activity in the namespace: the Environment's creation, the newest Release's
/// creation, or the last wake, whichever is latest.
fn last_activity(env: &Environment, releases: &[Release], status: &EnvironmentStatus) -> Timestamp {
    let created = env.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_else(now);
    let release_times = releases.iter().filter_map(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));
    status.last_activity.iter().map(|t| t.0).chain(release_times).fold(created, Timestamp::max)
}

/// Branching: the parent's Live app versions are deployed into the branch, once per app (a branch
/// that already has a Release of an app keeps it), or, with `followParent`, each new Live version
/// of the parent as it comes (a Release of the same name, which then rolls out in the branch).
async fn branch_live_releases(
    ctx: &Context,
    envs: &Api<Environment>,
    parent: &str,
    ns: &str,
    follow: bool,
) -> Result<(), Error> {
    let parent = match crate::controller::synced_store(ctx.caches.environments.as_ref()).await {
        Some(store) => store.get(&ObjectRef::new(parent)).map(|e| (*e).clone()),
        None => envs.get_opt(parent).await?,
    };
    let Some(parent) = parent else { return Ok(()) };
    let to: Api<Release> = Api::namespaced(ctx.client.clone(), ns);
    let existing: Vec<(String, String, String)> = releases_in(ctx, ns)
        .await?
        .into_iter()
        .map(|r| (r.name_any(), r.spec.app.clone(), r.spec.version.clone()))
        .collect();
    for live in releases_in(ctx, &namespace_of(&parent)).await? {
        let is_live = live.status.as_ref().and_then(|s| s.phase) == Some(crate::api::ReleasePhase::Live);
        let has_app = existing.iter().any(|(_, app, _)| *app == live.spec.app);
        let has_version = existing
            .iter()
            .any(|(n, app, v)| *n == live.name_any() || (*app == live.spec.app && *v == live.spec.version));
        if !is_live || has_version || (has_app && !follow) {
            continue;
        }
        // The same version, template and Service; rolled out plainly (it was tested upstream).
        let mut spec = live.spec.clone();
        spec.tests.clear();
        spec.test_environment = None;
        spec.approval = None;
        spec.strategy = Default::default();
        let mut labels = json!({"phaseloop.dev/branched-from": namespace_of(&parent)});
        // The branch's Releases belong to this install, as the branch does.
        if let Some(id) = &ctx.config.instance_id {
            labels[label::INSTANCE] = json!(id);
        }
        let copy = json!({
            "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": live.name_any(), "namespace": ns, "labels": labels},
            "spec": spec,
        });
        info!(release = %live.name_any(), namespace = %ns, "deploying the parent's live version into the branch");
        to.patch(&live.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&copy)).await?;
    }
    Ok(())
}

/// Records the sleep decision in status. The app workloads follow from there: their replicas are
/// the Release controller's alone (a Release of a sleeping Environment holds its app at zero, and
/// at its last total again on wake), so no two writers fight over `spec.replicas`. Infrastructure
/// is applied at zero by the apply above.
async fn apply_sleep(
    ctx: &Context,
    env: &Environment,
    decision: Decision,
    status: &mut EnvironmentStatus,
    now: Timestamp,
) {
    match decision {
        Decision::Sleep if status.slept_at.is_none() => {
            info!(env = %env.name_any(), "sleepAfter reached without activity; scaling to zero");
            status.slept_at = Some(Time(now));
            let note = "no Release activity for sleepAfter: app workloads and infrastructure held at zero".into();
            publish(ctx, env, EventType::Normal, "Slept", note).await;
        }
        Decision::Wake => {
            info!(env = %env.name_any(), "waking up");
            status.slept_at = None;
            status.last_activity = Some(Time(now));
            publish(ctx, env, EventType::Normal, "Woken", "workloads return to their replicas before the sleep".into())
                .await;
        }
        Decision::Sleep | Decision::Awake { .. } => {}
    }
}

/// Deletion: the namespace goes first (phase `Terminating` while it does); the finalizer helper
/// removes the finalizer once this returns `Ok`, so it waits (an error) until the namespace is gone.
async fn cleanup(api: &Api<Environment>, env: &Environment, ctx: &Context) -> Result<Action, Error> {
    if env.status.as_ref().and_then(|s| s.phase) != Some(EnvironmentPhase::Terminating) {
        let mut status = env.status.clone().unwrap_or_default();
        status.phase = Some(EnvironmentPhase::Terminating);
        write_status(api, env, ctx, status).await?;
    }
    let ns = namespace_of(env);
    let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
    if let Some(existing) = ns_api.get_opt(&ns).await?
        && existing.labels().get(label::ENVIRONMENT) == Some(&env.name_any())
    {
        if existing.metadata.deletion_timestamp.is_none() {
            info!(env = %env.name_any(), namespace = %ns, "deleting namespace");
            if env.spec.tier == crate::api::Tier::Production {
                // The admission policy protects a production namespace; this Environment's own
                // deletion was allowed (it carried the annotation), so its namespace's is too.
                let patch = json!({"metadata": {"annotations": {annotation::ALLOW_DELETE: "true"}}});
                ns_api.patch(&ns, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
            ns_api.delete(&ns, &DeleteParams::background()).await?;
        }
        return Err(Error::Waiting(format!("namespace {ns} is being deleted")));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests;
