//! API I/O of the Release controller.

use std::{sync::Arc, time::Duration};

use futures::{
    StreamExt, TryStreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, batch::v1::Job, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{Controller, WatchStreamExt, controller::Action, events::EventType, reflector::ObjectRef, watcher},
};
use serde_json::json;

use super::{
    NAME, SERVING_FINALIZER, desired_status, operate, phase,
    queue::{self, Entry, Role},
    test_jobs, workload,
};
use crate::{
    api::{Environment, EnvironmentPhase, Release, ReleasePhase, ReleaseStatus, condition},
    controller::{
        Context, Error, ReleaseChange, caches::ReleaseWriters, conditions, environment::namespace_of,
        fields::FIELD_MANAGER, publish_phase_change, status::apply_status, watch,
    },
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
/// metadata only. A Deployment wakes its owner, and the Release of the app rolling out: a rollout
/// also waits for the other version's pods (the warm pods of the switch, a handover back).
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
                    Some(ReleasePhase::Progressing | ReleasePhase::Paused)
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

pub async fn run(controller: Controller<Release>, ctx: Arc<Context>) {
    crate::controller::run_instrumented(NAME, controller, reconcile, ctx).await
}

use crate::controller::now;

/// One reconcile; what its owner should hear of a failure (a refused child, a quota) is reported
/// on the Release (see [`crate::controller::reported`]).
async fn reconcile(rel: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = reconcile_release(rel.clone(), ctx.clone()).await;
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
    crate::controller::reported(&ctx, &api, &*rel, rel.status.as_ref(), result).await
}

async fn reconcile_release(rel: Arc<Release>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = rel.ns().to_string();
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(action) = let_go_with_namespace(&ctx, &rel).await? {
        return Ok(action);
    }
    ctx.count_dora(&rel);
    let now_t = Time(now());
    let finished = rel.status.as_ref().and_then(|s| s.phase).is_some_and(ReleasePhase::is_terminal);
    let env = if finished { None } else { environment_of(&ctx, &ns).await? };
    let mut status = desired_status(&rel, env.as_ref().map(|e| e.spec.tier), &now_t);

    // Observe. Pod counts come from the Deployments cache: after a start, wait for its first list
    // (an empty cache would read as "no pods Ready" and rewrite every status).
    crate::controller::synced_store(Some(&ctx.caches.deployments)).await;
    let siblings = siblings(&ctx, &rel);
    let place = Place::of(&rel, &siblings, &status);
    let sleeping = env.as_ref().and_then(|e| e.status.as_ref()).is_some_and(|s| s.slept_at.is_some());
    // The owner of the app's total reads the load (see `operate`): the Release rolling out, else
    // the Live one. Everyone else holds the last decision.
    let (total, scale_again) = if place.owns_total() {
        let stable_version = place.stable.as_ref().filter(|_| place.role == Role::Active).map(|s| &s.spec.version);
        let stable_version = stable_version.map(String::as_str).unwrap_or("");
        operate::total(&ctx, &rel, &siblings, stable_version, sleeping, &mut status, &now_t).await
    } else {
        (operate::held_total(&rel, &siblings, sleeping), None)
    };
    let acts = (place.active() || place.role == Role::Stable) && !place.invalid;
    let clash = if acts { name_clash(&ctx, &rel, &siblings).await? } else { None };
    if report_name_clash(&ctx, &rel, clash, &mut status, &now_t).await {
        write(&api, &rel, &ctx, status).await?;
        // A foreign object going away sends no event phaseloop watches: look again now and then.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    let other_name = match place.role {
        Role::Active => place.stable.as_ref().map(|s| s.name_any()),
        _ => status.stable_release.clone(),
    };
    let other = other_name.as_ref().and_then(|n| siblings.iter().find(|s| &s.name_any() == n));
    let tested = conditions::is_true(&status.conditions, condition::TESTED);
    let tests = if place.active() && place.gated && !rel.spec.tests.is_empty() && !tested {
        Some(observe_tests(&ctx, &rel, env.as_ref(), &status).await?)
    } else {
        None
    };
    let promotion = env.as_ref().and_then(|e| e.spec.promotion.clone());
    let upstream = match promotion.as_ref().and_then(|p| p.from.as_deref()) {
        Some(from) if place.active() && place.gated => upstream_releases(&ctx, &rel, from).await?,
        _ => None,
    };
    let measurements = if place.active() && place.rolling {
        measure(&ctx, &rel, place.stable.as_ref(), &status, &now_t).await
    } else {
        None
    };
    let observation = phase::Observation {
        rel: &rel,
        status,
        now: now_t,
        role: place.role.clone(),
        siblings: &siblings,
        stable: place.stable.as_ref(),
        promotion: promotion.as_ref(),
        total,
        own: deployed(&ctx, &rel),
        other: other.map(|o| deployed(&ctx, o)).unwrap_or_default(),
        tests,
        measurements,
        upstream: upstream.as_deref(),
    };
    let outcome = phase::decide(&observation);
    let requeue = sooner(outcome.requeue, scale_again);
    carry_out(&ctx, &api, &rel, &siblings, outcome).await?;
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// A serving Release's deletion waits (its finalizer), unless its whole namespace is going: then
/// everything in it goes anyway (nothing can be written there any more), and holding on would
/// only keep the namespace stuck. `Some` when the finalizer was let go.
async fn let_go_with_namespace(ctx: &Context, rel: &Release) -> Result<Option<Action>, Error> {
    if rel.metadata.deletion_timestamp.is_none() || !rel.finalizers().iter().any(|f| f == SERVING_FINALIZER) {
        return Ok(None);
    }
    if namespace_going(ctx, rel).await? {
        finalizer(ctx, rel, false).await?;
        crate::controller::access::let_go_when_done(ctx, rel.ns()).await?;
        return Ok(Some(Action::await_change()));
    }
    Ok(None)
}

/// Whether `rel`'s namespace is being deleted (or gone), asked without reading anything
/// cluster-scoped (a single-namespace install has no rights on Namespaces): a dry run of creating
/// an Event about `rel` there, which the API server's namespace lifecycle admission refuses in a
/// namespace being deleted (403 `NamespaceTerminating`) and which finds no namespace once it is
/// gone (404). Nothing is stored.
pub(super) async fn namespace_going(ctx: &Context, rel: &Release) -> Result<bool, Error> {
    use k8s_openapi::api::core::v1::{Event, EventSource};
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), rel.ns());
    let probe = Event {
        metadata: kube::api::ObjectMeta { generate_name: Some("phaseloop-probe-".into()), ..Default::default() },
        involved_object: kube::Resource::object_ref(rel, &()),
        reason: Some("NamespaceProbe".into()),
        message: Some("is the namespace being deleted?".into()),
        type_: Some("Normal".into()),
        source: Some(EventSource { component: Some("phaseloop".into()), ..Default::default() }),
        ..Default::default()
    };
    let dry_run = kube::api::PostParams { dry_run: true, ..Default::default() };
    match events.create(&dry_run, &probe).await.map_err(Error::from) {
        Ok(_) | Err(Error::Refused(_)) => Ok(false),
        Err(Error::NamespaceTerminating(_)) => Ok(true),
        Err(Error::Api(kube::Error::Api(s))) if s.code == 404 => Ok(true),
        Err(e) => Err(e),
    }
}

/// Where a Release stands among its app's Releases, from the cache: its role in the queue, the
/// Live Release, and what its phase allows.
struct Place {
    role: Role,
    stable: Option<Release>,
    /// Its spec is invalid (`Degraded`/`InvalidSpec`): it acts on nothing.
    invalid: bool,
    /// Progressing or Paused.
    rolling: bool,
    /// Before the rollout: Pending, Testing or AwaitingApproval.
    gated: bool,
    /// Another Release of the app is rolling out.
    sibling_rolling: bool,
}

impl Place {
    fn of(rel: &Release, siblings: &[Release], status: &ReleaseStatus) -> Place {
        let entries: Vec<Entry> = siblings.iter().map(entry).collect();
        let roles = queue::roles(&entries);
        let me = siblings.iter().position(|s| s.name_any() == rel.name_any());
        let role = me.map(|i| roles[i].clone()).unwrap_or(Role::Queued(1));
        let stable = siblings.iter().zip(&roles).find(|(_, r)| **r == Role::Stable).map(|(s, _)| s.clone());
        let phase = status.phase.unwrap_or(ReleasePhase::Pending);
        let rolling_phase =
            |p: Option<ReleasePhase>| matches!(p, Some(ReleasePhase::Progressing | ReleasePhase::Paused));
        Place {
            role,
            stable,
            invalid: conditions::find(&status.conditions, condition::DEGRADED)
                .is_some_and(|c| c.status == "True" && c.reason == crate::api::reason::INVALID_SPEC),
            rolling: rolling_phase(Some(phase)),
            gated: matches!(phase, ReleasePhase::Pending | ReleasePhase::Testing | ReleasePhase::AwaitingApproval),
            sibling_rolling: siblings
                .iter()
                .any(|s| s.name_any() != rel.name_any() && rolling_phase(s.status.as_ref().and_then(|s| s.phase))),
        }
    }

    /// The Release the queue lets go, with a valid spec.
    fn active(&self) -> bool {
        self.role == Role::Active && !self.invalid
    }

    /// Whether this Release decides the app's total: the one rolling out, else the Live one.
    fn owns_total(&self) -> bool {
        !self.invalid
            && ((self.role == Role::Active && self.rolling) || (self.role == Role::Stable && !self.sibling_rolling))
    }
}

/// A name clash (`clash`) in `status`: `Degraded`/`NameClash` and, the first time, a Warning
/// Event; a clash that is gone clears the condition. Whether there is one (then nothing else is
/// done).
async fn report_name_clash(
    ctx: &Context,
    rel: &Release,
    clash: Option<String>,
    status: &mut ReleaseStatus,
    now: &Time,
) -> bool {
    let reported = conditions::find(&status.conditions, condition::DEGRADED).is_some_and(|c| c.reason == "NameClash");
    let desired = match &clash {
        Some(clash) => {
            if !reported {
                crate::controller::publish(ctx, rel, EventType::Warning, "NameClash", clash.clone()).await;
            }
            status.message = Some(format!("nothing was changed: {clash}"));
            conditions::Desired {
                type_: condition::DEGRADED,
                status: true,
                reason: "NameClash",
                message: clash.clone(),
            }
        }
        None if reported => conditions::Desired {
            type_: condition::DEGRADED,
            status: false,
            reason: crate::api::reason::AS_EXPECTED,
            message: "spec is valid".into(),
        },
        None => return false,
    };
    conditions::upsert(&mut status.conditions, desired, rel.metadata.generation, now);
    clash.is_some()
}

/// Acts on the decision: its effects, then the status (and the restored status of the Release a
/// revert returned to). One-shot annotations are consumed after the status is written: whoever
/// sees the request gone also sees its outcome.
async fn carry_out(
    ctx: &Context,
    api: &Api<Release>,
    rel: &Release,
    siblings: &[Release],
    outcome: phase::Outcome,
) -> Result<(), Error> {
    let (consume, effects): (Vec<_>, Vec<_>) =
        outcome.effects.iter().partition(|e| matches!(e, phase::Effect::Consume(_)));
    // The status write is conditional on the version it was decided from, moved on by this
    // reconcile's own writes to the Release (a finalizer, cleared fields) and by nothing else.
    let mut me = rel.clone();
    for effect in effects {
        if let Some(version) = act(ctx, &me, siblings, effect).await? {
            me.metadata.resource_version = Some(version);
        }
    }
    write(api, &me, ctx, outcome.status).await?;
    if let Some((name, restored)) = outcome.restored
        && let Some(previous) = siblings.iter().find(|s| s.name_any() == name)
    {
        write(api, previous, ctx, restored).await?;
    }
    for effect in consume {
        act(ctx, &me, siblings, effect).await?;
    }
    Ok(())
}

/// The earlier of two wake-ups.
fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn entry(r: &Release) -> Entry {
    let phase = r.status.as_ref().and_then(|s| s.phase);
    let approved = r.spec.approval.as_ref().is_none_or(|a| !a.required) || super::approval::present(r);
    let created = r.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
    Entry { name: r.name_any(), created: (created, r.name_any()), phase, approved }
}

/// The Releases of `rel`'s app in its namespace (itself included), from the cache, each as this
/// process last wrote it when the cache has not caught up yet.
fn siblings(ctx: &Context, rel: &Release) -> Vec<Release> {
    let store = &ctx.caches.releases;
    let ns = rel.namespace();
    let mut siblings: Vec<Release> = store
        .state()
        .into_iter()
        .filter(|r| r.namespace() == ns && r.spec.app == rel.spec.app)
        .map(|r| (*ctx.written.freshest(r)).clone())
        .collect();
    siblings.sort_by_key(|r| r.name_any());
    siblings
}

async fn environment_of(ctx: &Context, ns: &str) -> Result<Option<Environment>, Error> {
    // Single-namespace mode cannot read the cluster-scoped Environments: there are none to see.
    if ctx.config.watch_namespace.is_some() {
        return Ok(None);
    }
    // From the Environment controller's cache once it is synced (awaited after a start); from the
    // API server if it is not, since "no Environment" would change the gates.
    if let Some(store) = crate::controller::synced_store(ctx.caches.environments.as_ref()).await {
        return Ok(store.find(|e| namespace_of(e) == ns).map(|e| (*ctx.written.freshest(e)).clone()));
    }
    // An Environment's namespace defaults to its name: one GET in the common case, a LIST otherwise.
    let envs: Api<Environment> = Api::all(ctx.client.clone());
    if let Some(env) = envs.get_opt(ns).await?.filter(|e| namespace_of(e) == ns) {
        return Ok(Some(env));
    }
    Ok(envs.list(&ListParams::default()).await?.items.into_iter().find(|e| namespace_of(e) == ns))
}

async fn write(api: &Api<Release>, rel: &Release, ctx: &Context, status: ReleaseStatus) -> Result<(), Error> {
    let old = rel.status.as_ref().and_then(|s| s.phase);
    if apply_status(api, &ctx.written, rel, rel.status.as_ref(), &status).await? {
        let mut after = rel.clone();
        after.status = Some(status.clone());
        ctx.count_dora(&after);
        let new = status.phase.map(ReleasePhase::as_str);
        publish_phase_change(ctx, rel, old.map(ReleasePhase::as_str), new, status.message.clone()).await;
    }
    Ok(())
}

/// A Deployment of `rel` as the cache has it (the watch's latest), for the phase machine.
fn deployed(ctx: &Context, rel: &Release) -> phase::Deployed {
    let ns = rel.ns().to_string();
    let name = workload::deployment_name(&rel.spec.app, &rel.spec.version);
    deployed_in(ctx, &ns, &name)
}

fn deployed_in(ctx: &Context, ns: &str, name: &str) -> phase::Deployed {
    let Some(d) = ctx.caches.deployments.get(&ObjectRef::new(name).within(ns)) else {
        return Default::default();
    };
    let status = d.status.clone().unwrap_or_default();
    phase::Deployed {
        replicas: d.spec.replicas.unwrap_or(1),
        available: status.available_replicas.unwrap_or(0).min(status.updated_replicas.unwrap_or(0)),
        settled: status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0),
    }
}

/// The analysis values due this reconcile (`None` when the interval has not passed). A failing or
/// empty query is `None` for that metric: inconclusive, never a failure.
async fn measure(
    ctx: &Context,
    rel: &Release,
    stable: Option<&Release>,
    status: &ReleaseStatus,
    now: &Time,
) -> Option<Vec<(String, Option<f64>)>> {
    let analysis = rel.spec.strategy.analysis.as_ref()?;
    let interval: Duration = analysis.interval.into();
    let last = status.analysis.iter().filter_map(|r| r.measured_at.as_ref()).map(|t| t.0).max();
    if last.is_some_and(|l| (now.0.duration_since(l).as_secs() as u64) < interval.as_secs()) {
        return None;
    }
    let ns = rel.ns().to_string();
    let vars = crate::promql::Vars {
        app: &rel.spec.app,
        version: &rel.spec.version,
        namespace: &ns,
        stable_version: stable.map(|s| s.spec.version.as_str()).unwrap_or(""),
    };
    let mut values = Vec::new();
    for m in &analysis.metrics {
        let value = match (&ctx.prometheus, crate::promql::render(&m.query, &vars)) {
            (Some(p), Ok(q)) => {
                let result = p.query_scalar(&q).await;
                ctx.metrics.observe_query("analysis", &result);
                result.ok()
            }
            _ => None,
        };
        values.push((m.name.clone(), value));
    }
    Some(values)
}

/// Where the tests run and how far they are.
async fn observe_tests(
    ctx: &Context,
    rel: &Release,
    parent: Option<&Environment>,
    status: &ReleaseStatus,
) -> Result<phase::TestsObserved, Error> {
    use phase::TestGround;
    let ns = rel.ns().to_string();
    let ground = match (&rel.spec.test_environment, parent) {
        (None, _) => TestGround::Ready(ns),
        (Some(_), None) => TestGround::Refused(format!(
            "testEnvironment branches from the Environment of namespace {ns}, and there is none"
        )),
        (Some(_), Some(_)) => {
            let envs: Api<Environment> = Api::all(ctx.client.clone());
            let name = test_environment_name(rel);
            match envs.get_opt(&name).await? {
                None => TestGround::Missing,
                // Another Release's (the name is made of namespace and Release names): never adopted.
                Some(env) if !is_test_environment_of(&env, rel) => TestGround::Refused(format!(
                    "the test Environment name {name} is taken by an Environment that is not this Release's"
                )),
                Some(env) if env.status.as_ref().and_then(|s| s.phase) == Some(EnvironmentPhase::Ready) => {
                    TestGround::Ready(namespace_of(&env))
                }
                Some(_) => TestGround::Provisioning,
            }
        }
    };
    let mut observed = phase::TestsObserved { ground, candidate_ready: false, jobs: Default::default() };
    let phase::TestGround::Ready(test_ns) = &observed.ground else { return Ok(observed) };
    let name = workload::deployment_name(&rel.spec.app, &rel.spec.version);
    observed.candidate_ready = deployed_in(ctx, test_ns, &name).ready(1);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), test_ns);
    for test in &rel.spec.tests {
        let attempt = status.tests.iter().find(|t| t.name == test.name).map(|t| t.attempts).unwrap_or(0);
        let job = match attempt {
            0 => None,
            n => jobs.get_opt(&test_jobs::job_name(rel, test, n)).await?,
        };
        if let Some(job) = job.as_ref().filter(|j| j.labels().get(workload::RELEASE_LABEL) != Some(&rel.name_any())) {
            let why = format!("the test Job name {} is taken by a Job that is not this Release's", job.name_any());
            observed.ground = phase::TestGround::Refused(why);
            return Ok(observed);
        }
        observed.jobs.insert(test.name.clone(), job.map(|j| test_jobs::job_phase(&j)));
    }
    Ok(observed)
}

fn is_test_environment_of(env: &Environment, rel: &Release) -> bool {
    let labels = env.labels();
    labels.get(workload::RELEASE_LABEL) == Some(&rel.name_any())
        && labels.get("phaseloop.dev/release-namespace").map(String::as_str) == rel.metadata.namespace.as_deref()
}

/// The first generated name of `rel` that something else holds: its Deployment
/// `<app>-<version slug>` (another Release's, or not phaseloop's), the Service `<app>` or the
/// preview Service `<app>-preview` (not this app's), or a version that slugs to an older sibling's
/// Deployment name. phaseloop never adopts an object by name: the Release is Degraded instead,
/// and nothing is written.
async fn name_clash(ctx: &Context, rel: &Release, siblings: &[Release]) -> Result<Option<String>, Error> {
    let ns = rel.ns().to_string();
    let app = &rel.spec.app;
    let deployment = workload::deployment_name(app, &rel.spec.version);
    let key = |r: &Release| (r.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), r.name_any());
    if let Some(older) = siblings.iter().find(|s| {
        s.name_any() != rel.name_any()
            && s.spec.version != rel.spec.version
            && workload::deployment_name(&s.spec.app, &s.spec.version) == deployment
            && key(s) < key(rel)
    }) {
        return Ok(Some(format!(
            "version {} maps to the Deployment name {deployment}, which version {} (Release {}) already uses: \
             versions of an app must differ in more than punctuation and case",
            rel.spec.version,
            older.spec.version,
            older.name_any()
        )));
    }
    let ours = |d: &Deployment| d.owner_references().iter().any(|o| Some(&o.uid) == rel.metadata.uid.as_ref());
    let cached = ctx.caches.deployments.get(&ObjectRef::new(&deployment).within(&ns));
    let found = match cached {
        Some(d) => Some((*d).clone()),
        None => Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .get_metadata_opt(&deployment)
            .await?
            .map(|m| Deployment { metadata: m.metadata, ..Default::default() }),
    };
    if let Some(d) = found.filter(|d| !ours(d)) {
        let owner = d.owner_references().first().map(|o| format!("{} {}", o.kind, o.name));
        return Ok(Some(format!(
            "the Deployment {deployment} belongs to {}; it is left untouched",
            owner.unwrap_or_else(|| "someone else (not phaseloop)".into())
        )));
    }
    let preview = rel.spec.strategy.type_ == crate::api::StrategyType::BlueGreen || !rel.spec.tests.is_empty();
    let services = [Some(app.clone()), preview.then(|| format!("{app}-preview"))];
    for name in services.into_iter().flatten().filter(|_| rel.spec.service.is_some()) {
        let meta = match ctx.caches.children.get::<Service>(Some(&ns), &name) {
            Ok(Some(cached)) => Some(cached.metadata.clone()),
            _ => Api::<Service>::namespaced(ctx.client.clone(), &ns).get_metadata_opt(&name).await?.map(|m| m.metadata),
        };
        if let Some(whose) = meta.as_ref().and_then(|m| workload::service_of_another(m, app)) {
            return Ok(Some(format!("the Service {name} belongs to {whose}; it is left untouched")));
        }
    }
    Ok(None)
}

/// The Releases of `rel`'s app in the namespace of Environment `from`: `None` when it does not exist.
async fn upstream_releases(ctx: &Context, rel: &Release, from: &str) -> Result<Option<Vec<Release>>, Error> {
    let env = match crate::controller::synced_store(ctx.caches.environments.as_ref()).await {
        Some(store) => store.get(&ObjectRef::new(from)).map(|e| (*e).clone()),
        None => Api::<Environment>::all(ctx.client.clone()).get_opt(from).await?,
    };
    let Some(env) = env else { return Ok(None) };
    let ns = namespace_of(&env);
    if let Some(store) = Some(&ctx.caches.releases).filter(|_| ctx.config.watch_namespace.is_none()) {
        let cached = store.state().into_iter().filter(|r| r.namespace().as_deref() == Some(ns.as_str()));
        return Ok(Some(cached.filter(|r| r.spec.app == rel.spec.app).map(|r| (*r).clone()).collect()));
    }
    let releases: Api<Release> = Api::namespaced(ctx.client.clone(), &ns);
    let list = releases.list(&ListParams::default().fields(&format!("spec.app={}", rel.spec.app))).await?;
    Ok(Some(list.items))
}

/// Carries out one effect of the phase machine; the Release's new resourceVersion when the effect
/// wrote the Release itself.
async fn act(
    ctx: &Context,
    rel: &Release,
    siblings: &[Release],
    effect: &phase::Effect,
) -> Result<Option<String>, Error> {
    use phase::Effect;
    let find = |name: &str| siblings.iter().find(|s| s.name_any() == name).or((rel.name_any() == name).then_some(rel));
    let ns = rel.ns().to_string();
    match effect {
        Effect::Scale { release, replicas } => {
            if let Some(r) = find(release) {
                apply_deployment(ctx, r, *replicas).await?;
            }
        }
        Effect::Services { serving, preview } => {
            let selected: Vec<&Release> = match serving {
                phase::Serving::Only(r) => find(r).into_iter().collect(),
                phase::Serving::Both { stable, candidate } => {
                    [find(stable), find(candidate)].into_iter().flatten().collect()
                }
            };
            let Some(first) = selected.first() else { return Ok(None) };
            // The ports of the Release serving (the candidate's, while both do).
            let source = selected.last().copied().unwrap_or(first);
            if let Some(ports) = &source.spec.service {
                let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
                let selector = match serving {
                    phase::Serving::Only(_) => workload::selector(first),
                    phase::Serving::Both { .. } => workload::app_selector(&rel.spec.app),
                };
                ctx.caches.children.apply(&api, workload::service(&selected, &rel.spec.app, ports, selector)).await?;
                if *preview && let Some(own_ports) = &rel.spec.service {
                    let name = format!("{}-preview", rel.spec.app);
                    let svc = workload::service(&[rel], &name, own_ports, workload::selector(rel));
                    ctx.caches.children.apply(&api, svc).await?;
                }
            }
        }
        Effect::Consume(key) => consume(ctx, rel, key).await?,
        Effect::Event { warning, reason, note } => {
            let type_ = if *warning { EventType::Warning } else { EventType::Normal };
            crate::controller::publish(ctx, rel, type_, reason, note.clone()).await;
        }
        Effect::Finalizer(add) => return finalizer(ctx, rel, *add).await,
        Effect::ClearStatus(fields) => {
            let nulls: serde_json::Map<String, serde_json::Value> =
                fields.iter().map(|f| (f.to_string(), serde_json::Value::Null)).collect();
            let api: Api<Release> = Api::namespaced(ctx.client.clone(), &ns);
            // Conditional, as every status write (see `apply_status`).
            let patch = json!({"metadata": {"resourceVersion": rel.resource_version()}, "status": nulls});
            let after = api.patch_status(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
            return Ok(after.resource_version());
        }
        Effect::Retire { keep, delete } => {
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            for name in delete.iter().filter_map(|n| find(n)) {
                let d = workload::deployment_name(&name.spec.app, &name.spec.version);
                ctx.caches.children.delete(&deployments, Some(&ns), &d).await?;
            }
            for old in keep.iter().filter_map(|n| find(n)) {
                // Kept ones go to zero: nothing to do when absent (deleted earlier) or already at zero.
                let d = deployed(ctx, old);
                if d.replicas > 0 {
                    apply_deployment(ctx, old, 0).await?;
                }
            }
        }
        Effect::EnsureTestEnvironment => ensure_test_environment(ctx, rel).await?,
        Effect::DropTestEnvironment => drop_test_environment(ctx, rel).await?,
        Effect::TestCandidate { namespace, replicas } => test_candidate(ctx, rel, namespace, *replicas).await?,
        Effect::RunTest { namespace, test, attempt } => {
            let Some(test) = rel.spec.tests.iter().find(|t| &t.name == test) else { return Ok(None) };
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
            let name = test_jobs::job_name(rel, test, *attempt);
            if jobs.get_opt(&name).await?.is_none() {
                let port = rel.spec.service.as_ref().and_then(|s| s.ports.first()).map(|p| p.port);
                let host = rel.spec.service.as_ref().map(|_| format!("{}-preview.{namespace}.svc", rel.spec.app));
                let mut job = test_jobs::job(rel, test, *attempt, host.as_deref().unwrap_or(""), port);
                relocate(&mut job.metadata, rel, namespace);
                jobs.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&job)).await?;
            }
        }
    }
    Ok(None)
}

/// Adds or removes the serving finalizer; the resourceVersion makes it a compare-and-swap, so other
/// finalizers added meanwhile survive.
async fn finalizer(ctx: &Context, rel: &Release, add: bool) -> Result<Option<String>, Error> {
    let finalizers = phase::with_serving_finalizer(rel.finalizers(), add);
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": rel.resource_version()}});
    match api.patch(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(after) => Ok(after.resource_version()),
        // Gone already, or changed meanwhile: the next reconcile sees the latest.
        Err(kube::Error::Api(e)) if e.is_not_found() || e.is_conflict() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The one-replica candidate the tests run against, and `<app>-preview` selecting it, in `ns`.
async fn test_candidate(ctx: &Context, rel: &Release, ns: &str, replicas: i32) -> Result<(), Error> {
    if rel.namespace().as_deref() == Some(ns) {
        apply_deployment(ctx, rel, replicas).await?;
    } else {
        let mut deployment = workload::deployment(rel, replicas);
        relocate(&mut deployment.metadata, rel, ns);
        ctx.caches.children.apply(&Api::<Deployment>::namespaced(ctx.client.clone(), ns), deployment).await?;
    }
    if let Some(ports) = rel.spec.service.as_ref().filter(|_| replicas > 0) {
        let name = format!("{}-preview", rel.spec.app);
        let mut preview = workload::service(&[rel], &name, ports, workload::selector(rel));
        relocate(&mut preview.metadata, rel, ns);
        ctx.caches.children.apply(&Api::<Service>::namespaced(ctx.client.clone(), ns), preview).await?;
    }
    Ok(())
}

/// Moves an object built for the Release's namespace into `ns` (a test Environment): owner
/// references cannot cross namespaces, so the test Environment's deletion cleans it up instead.
fn relocate(meta: &mut kube::api::ObjectMeta, rel: &Release, ns: &str) {
    if rel.namespace().as_deref() != Some(ns) {
        meta.namespace = Some(ns.to_string());
        meta.owner_references = None;
    }
}

/// Name of a Release's ephemeral test Environment.
fn test_environment_name(rel: &Release) -> String {
    let mut name = format!("{}-{}-test", rel.ns(), rel.name_any());
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// Creates the ephemeral test Environment, branched from the namespace's Environment.
async fn ensure_test_environment(ctx: &Context, rel: &Release) -> Result<(), Error> {
    let ns = rel.ns().to_string();
    let Some(parent) = environment_of(ctx, &ns).await? else { return Ok(()) };
    let Some(te) = &rel.spec.test_environment else { return Ok(()) };
    let name = test_environment_name(rel);
    let mut labels = json!({workload::RELEASE_LABEL: rel.name_any(), "phaseloop.dev/release-namespace": ns});
    if let Some(id) = &ctx.config.instance_id {
        labels[crate::api::label::INSTANCE] = json!(id);
    }
    let desired = json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"tier": "test", "from": parent.name_any(), "ttl": te.ttl.to_string()},
    });
    let envs: Api<Environment> = Api::all(ctx.client.clone());
    envs.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    Ok(())
}

/// Deletes the ephemeral test Environment once the tests are over.
async fn drop_test_environment(ctx: &Context, rel: &Release) -> Result<(), Error> {
    if rel.spec.test_environment.is_some() {
        let envs: Api<Environment> = Api::all(ctx.client.clone());
        match envs.delete(&test_environment_name(rel), &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Server-side apply of a Release's full Deployment (a partial apply under the same field manager
/// would drop the fields it leaves out).
/// A Deployment another autoscaler targets is left alone (the conflict is reported in
/// `ScalingActive`): two owners of `replicas` would fight.
async fn apply_deployment(ctx: &Context, rel: &Release, replicas: i32) -> Result<Option<Deployment>, Error> {
    let d = workload::deployment(rel, replicas);
    let ns = rel.ns().to_string();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let name = d.metadata.name.clone().unwrap_or_default();
    if operate::autoscaler_of(ctx, &ns, &name).is_some() {
        return Ok(api.get_opt(&name).await?);
    }
    Ok(ctx.caches.children.apply(&api, d).await?)
}

/// Removes a one-shot annotation once acted upon.
async fn consume(ctx: &Context, rel: &Release, key: &str) -> Result<(), Error> {
    if rel.annotations().contains_key(key) {
        let api: Api<Release> = Api::namespaced(ctx.client.clone(), rel.ns());
        let patch = json!({"metadata": {"annotations": {key: null}}});
        api.patch(&rel.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
