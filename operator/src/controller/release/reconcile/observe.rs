//! Observing a Release: everything its decision looks at, read before anything is written. Most
//! of it comes from the caches (its app's Releases, the workloads, the Environments, the
//! autoscalers); the test Environment and test Jobs (no cache) and the upstream Environment's
//! Releases in single-namespace mode are read from the API server; analysis values and the load
//! from Prometheus, when a reading is due.

use std::time::Duration;

use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, batch::v1::Job, core::v1::Service},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{Api, ResourceExt, api::ListParams, runtime::reflector::ObjectRef};

use super::{
    routes,
    test_environment::{is_test_environment_of, test_environment_name},
};
use crate::{
    api::{Environment, EnvironmentPhase, Promotion, Release, ReleasePhase, TestPhase},
    controller::{
        Context, Error,
        environment::namespace_of,
        error::Context as _,
        release::{
            SERVING_FINALIZER, approval,
            decide::{self, Deployed, Observation, ScalingObserved, TestGround, TestsObserved},
            queue::{self, Entry, Role},
            test_jobs,
            traffic::{
                self,
                gateway::{self, RouteSeen},
            },
            validate, workload,
        },
    },
};

/// What a reconcile observed, owned; [`Seen::observation`] lends it to the decision.
pub struct Seen {
    rel: Release,
    now: Time,
    env: Option<Environment>,
    pub siblings: Vec<Release>,
    role: Role,
    stable: Option<Release>,
    promotion: Option<Promotion>,
    own: Deployed,
    other: Deployed,
    others_up: Vec<(String, Deployed)>,
    tests: Option<TestsObserved>,
    measurements: Option<Vec<(String, Option<f64>)>>,
    upstream: Option<Vec<Release>>,
    scaling: ScalingObserved,
    clash: Option<String>,
    namespace_terminating: bool,
    routes: Vec<(crate::api::RouteRef, Option<RouteSeen>)>,
    routing_off: Option<String>,
    canary_endpoints: i32,
}

impl Seen {
    pub fn observation(&self) -> Observation<'_> {
        Observation {
            rel: &self.rel,
            now: self.now.clone(),
            tier: self.env.as_ref().map(|e| e.spec.tier),
            role: self.role.clone(),
            siblings: &self.siblings,
            stable: self.stable.as_ref(),
            promotion: self.promotion.as_ref(),
            own: self.own,
            other: self.other,
            others_up: self.others_up.clone(),
            tests: self.tests.clone(),
            measurements: self.measurements.clone(),
            upstream: self.upstream.as_deref(),
            scaling: self.scaling.clone(),
            clash: self.clash.clone(),
            namespace_terminating: self.namespace_terminating,
            routes: self.routes.clone(),
            routing_off: self.routing_off.clone(),
            canary_endpoints: self.canary_endpoints,
        }
    }
}

/// Observes `rel` (see the module documentation).
pub async fn release(ctx: &Context, rel: &Release) -> Result<Seen, Error> {
    let ns = rel.ns().to_string();
    let now = Time(crate::controller::now());
    let phase = rel.status.as_ref().and_then(|s| s.phase).unwrap_or(ReleasePhase::Pending);
    let env = if phase.is_terminal() {
        None
    } else {
        environment_of(ctx, &ns).await.context("observe", || format!("the Environment of namespace {ns}"))?
    };
    let holds = rel.finalizers().iter().any(|f| f == SERVING_FINALIZER);
    let namespace_terminating = rel.metadata.deletion_timestamp.is_some()
        && holds
        && namespace_going(ctx, rel).await.context("observe", || format!("whether namespace {ns} is being deleted"))?;
    // Pod counts come from the workloads cache: after a start, wait for its first list (an empty
    // cache would read as "no pods Ready" and rewrite every status).
    crate::controller::synced_store(Some(&ctx.caches.deployments)).await;
    let siblings = siblings(ctx, rel);
    let entries: Vec<Entry> = siblings.iter().map(entry).collect();
    let roles = queue::roles(&entries);
    let me = siblings.iter().position(|s| s.name_any() == rel.name_any());
    let role = me.map(|i| roles[i].clone()).unwrap_or(Role::Queued(1));
    let stable = siblings.iter().zip(&roles).find(|(_, r)| **r == Role::Stable).map(|(s, _)| s.clone());
    let invalid = !validate(&rel.spec, env.as_ref().map(|e| e.spec.tier)).is_empty();
    let active = role == Role::Active && !invalid;
    let rolling = matches!(phase, ReleasePhase::Progressing | ReleasePhase::Paused);
    let gated = matches!(phase, ReleasePhase::Pending | ReleasePhase::Testing | ReleasePhase::AwaitingApproval);

    let sleeping = env.as_ref().and_then(|e| e.status.as_ref()).is_some_and(|s| s.slept_at.is_some());
    let mut scaling = ScalingObserved { sleeping, ..Default::default() };
    if !invalid && rel.spec.scaling.is_some() && decide::owns_total(rel, &role, &siblings) {
        let workloads: Vec<String> =
            siblings.iter().map(|s| workload::deployment_name(&s.spec.app, &s.spec.version)).collect();
        let autoscalers = ctx.caches.autoscalers.state();
        scaling.conflict = conflicting(autoscalers.iter().map(|h| &**h), &ns, &workloads);
        if !sleeping && scaling.conflict.is_none() && decide::reading_due(rel, &siblings, &now) {
            let stable_version = stable.as_ref().filter(|_| role == Role::Active).map(|s| s.spec.version.as_str());
            scaling.reading = Some(read_load(ctx, rel, stable_version.unwrap_or("")).await);
        }
    }
    let acts = (active || role == Role::Stable) && !invalid;
    let clash = if acts {
        name_clash(ctx, rel, &siblings)
            .await
            .context("observe", || format!("the names Release {ns}/{} uses", rel.name_any()))?
    } else {
        None
    };
    let other_name = match role {
        Role::Active => stable.as_ref().map(|s| s.name_any()),
        _ => rel.status.as_ref().and_then(|s| s.stable_release.clone()),
    };
    let other = other_name.as_ref().and_then(|n| siblings.iter().find(|s| &s.name_any() == n));
    let others_up = if active {
        let others = siblings.iter().filter(|s| s.name_any() != rel.name_any() && Some(s.name_any()) != other_name);
        others.map(|s| (s.name_any(), deployed(ctx, s))).filter(|(_, d)| d.replicas > 0 || d.available > 0).collect()
    } else {
        vec![]
    };
    let status = rel.status.clone().unwrap_or_default();
    let tested =
        rel.spec.tests.iter().all(|t| status.tests.iter().any(|r| r.name == t.name && r.phase == TestPhase::Succeeded));
    let tests = if active && gated && !rel.spec.tests.is_empty() && !tested {
        let tests = observe_tests(ctx, rel, env.as_ref(), &status).await;
        Some(tests.context("observe", || format!("the tests of Release {ns}/{}", rel.name_any()))?)
    } else {
        None
    };
    let promotion = env.as_ref().and_then(|e| e.spec.promotion.clone());
    let upstream = match promotion.as_ref().and_then(|p| p.from.as_deref()) {
        Some(from) if active && gated => upstream_releases(ctx, rel, from)
            .await
            .context("observe", || format!("the Releases of Environment {from}"))?,
        _ => None,
    };
    let measurements = if active && rolling { measure(ctx, rel, stable.as_ref(), &status, &now).await } else { None };
    let own = deployed(ctx, rel);
    let other = other.map(|o| deployed(ctx, o)).unwrap_or_default();
    let (routes, routing_off) = routes::routes_of(ctx, rel);
    let canary_endpoints = if active && traffic::routing(rel).is_some() && stable.is_some() {
        routes::canary_endpoints(ctx, rel)
            .await
            .context("observe", || format!("the EndpointSlices of {ns}/{}", gateway::canary_service(&rel.spec.app)))?
    } else {
        0
    };
    Ok(Seen {
        routes,
        routing_off,
        canary_endpoints,
        rel: rel.clone(),
        now,
        env,
        siblings,
        role,
        stable,
        promotion,
        own,
        other,
        others_up,
        tests,
        measurements,
        upstream,
        scaling,
        clash,
        namespace_terminating,
    })
}

/// Whether `rel`'s namespace is being deleted (or is gone): then a serving Release lets go at once.
/// Asked without reading anything cluster-scoped (a single-namespace install has no rights on
/// Namespaces): a dry run of creating an Event about `rel` there, which the API server's namespace
/// lifecycle admission refuses in a namespace being deleted (403 `NamespaceTerminating`) and which
/// finds no namespace once it is gone (404). Nothing is stored.
async fn namespace_going(ctx: &Context, rel: &Release) -> Result<bool, Error> {
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

fn entry(r: &Release) -> Entry {
    let phase = r.status.as_ref().and_then(|s| s.phase);
    let approved = r.spec.approval.as_ref().is_none_or(|a| !a.required) || approval::present(r);
    Entry { name: r.name_any(), created: queue::order_key(r), phase, approved }
}

/// The autoscaler, if any, of another controller that targets one of the app's workloads.
pub fn conflicting<'a>(
    autoscalers: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>,
    namespace: &str,
    workloads: &[String],
) -> Option<String> {
    autoscalers.into_iter().find_map(|h| {
        let target = &h.spec.scale_target_ref;
        let hit = h.namespace().as_deref() == Some(namespace)
            && target.kind == "Deployment"
            && workloads.contains(&target.name);
        hit.then(|| format!("HorizontalPodAutoscaler {} targets Deployment {}", h.name_any(), target.name))
    })
}

/// The HPA (or KEDA's HPA) targeting workload `name` in `namespace`, if any.
pub fn autoscaler_of(ctx: &Context, namespace: &str, name: &str) -> Option<String> {
    conflicting(ctx.caches.autoscalers.state().iter().map(|h| &**h), namespace, &[name.to_string()])
}

/// The app's load, from Prometheus.
async fn read_load(ctx: &Context, rel: &Release, stable_version: &str) -> Result<f64, String> {
    let Some(spec) = &rel.spec.scaling else { return Err("no scaling".into()) };
    let Some(prometheus) = &ctx.prometheus else {
        return Err("no Prometheus is configured (--prometheus-url)".into());
    };
    let ns = rel.ns().to_string();
    let vars = crate::promql::Vars { app: &rel.spec.app, version: &rel.spec.version, namespace: &ns, stable_version };
    let query = crate::promql::render(&spec.metric.query, &vars).map_err(|e| e.to_string())?;
    let result = prometheus.query_scalar(&query).await;
    ctx.metrics.observe_query("scaling", &result);
    result.map_err(|e| e.to_string())
}

/// A workload of `rel` as the cache has it (the watch's latest).
pub fn deployed(ctx: &Context, rel: &Release) -> Deployed {
    let ns = rel.ns().to_string();
    let name = workload::deployment_name(&rel.spec.app, &rel.spec.version);
    deployed_in(ctx, &ns, &name)
}

fn deployed_in(ctx: &Context, ns: &str, name: &str) -> Deployed {
    let Some(d) = ctx.caches.deployments.get(&ObjectRef::new(name).within(ns)) else {
        return Default::default();
    };
    let status = d.status.clone().unwrap_or_default();
    Deployed {
        replicas: d.spec.replicas.unwrap_or(1),
        available: status.available_replicas.unwrap_or(0).min(status.updated_replicas.unwrap_or(0)),
        settled: status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0),
    }
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

/// The Environment of namespace `ns`, if any.
pub async fn environment_of(ctx: &Context, ns: &str) -> Result<Option<Environment>, Error> {
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

/// The analysis values due this reconcile (`None` when the interval has not passed). A failing or
/// empty query is `None` for that metric: inconclusive, never a failure.
async fn measure(
    ctx: &Context,
    rel: &Release,
    stable: Option<&Release>,
    status: &crate::api::ReleaseStatus,
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
    status: &crate::api::ReleaseStatus,
) -> Result<TestsObserved, Error> {
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
    let mut observed = TestsObserved { ground, candidate_ready: false, jobs: Default::default() };
    let TestGround::Ready(test_ns) = &observed.ground else { return Ok(observed) };
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
            observed.ground = TestGround::Refused(why);
            return Ok(observed);
        }
        observed.jobs.insert(test.name.clone(), job.map(|j| test_jobs::job_phase(&j)));
    }
    Ok(observed)
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
    let key = queue::order_key;
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
    let routed = traffic::routing(rel).is_some();
    let services = [
        Some(app.clone()),
        preview.then(|| format!("{app}-preview")),
        routed.then(|| traffic::gateway::stable_service(app)),
        routed.then(|| traffic::gateway::canary_service(app)),
    ];
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
