//! Controllers, one module per resource, and what they share: context, errors, the run loop.

pub mod access;
pub mod app_locks;
pub mod caches;
pub mod children;
pub mod conditions;
pub mod environment;
pub mod error;
pub mod fields;
pub mod latency;
pub mod memory;
#[cfg(test)]
pub(crate) mod mock_api;
pub mod reconciles;
pub mod release;
pub mod retry;
pub mod startup;
pub mod status;
pub mod watch;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Client, Resource,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        reflector,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use error::Error;

use crate::metrics::Metrics;

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Page size of the initial LISTs: small pages bound the memory peak of a re-list.
    pub page_size: u32,
    /// Namespace whose pods may reach isolated Environments (Prometheus scraping them).
    pub monitoring_namespace: String,
    /// Single-namespace mode: only Releases of this namespace, no Environments (they are
    /// cluster-scoped and own namespaces), for installs with a Role instead of a ClusterRole.
    pub watch_namespace: Option<String>,
    /// Reconciles in flight at most, per controller.
    pub concurrency: u16,
    /// Kinds an Environment's infrastructure components may hold, as `resource.group` (`configmaps`
    /// for the core group, `deployments.apps`): phaseloop's own allow-list, whatever its
    /// credentials would allow. See [`environment::allow_list`].
    pub infrastructure_kinds: Vec<String>,
    /// The loosest Pod Security Standard an Environment may ask for (its namespace enforces
    /// `restricted` unless it asks for more, up to this).
    pub max_pod_security: crate::api::PodSecurity,
    /// This install's instance id: it reconciles only the Releases and Environments labelled
    /// `phaseloop.dev/instance: <id>`; without one, only those without the label. Installs side
    /// by side (a cluster-wide one and single-namespace ones) so never reconcile the same object.
    pub instance_id: Option<String>,
    /// Single-namespace mode: the RoleBinding granting this operator its rights in the namespace.
    /// It carries a finalizer the operator removes once nothing of its own is left there when the
    /// namespace is being deleted, so the rights outlive the Releases it must let go of.
    pub role_binding: Option<String>,
    /// Read and steer Gateway API HTTPRoutes (`trafficRouting.gatewayAPI` of Releases): needs the
    /// Gateway API CRDs and RBAC on `httproutes`.
    pub gateway_api: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            page_size: 50,
            monitoring_namespace: "monitoring".into(),
            watch_namespace: None,
            concurrency: 16,
            infrastructure_kinds: environment::allow_list::default_kinds(),
            max_pod_security: crate::api::PodSecurity::Restricted,
            instance_id: None,
            role_binding: None,
            gateway_api: false,
        }
    }
}

/// The label selector of the Releases and Environments this install reconciles (see
/// [`Config::instance_id`]).
pub fn instance_selector(config: &Config) -> String {
    match &config.instance_id {
        Some(id) => format!("{}={id}", crate::api::label::INSTANCE),
        None => format!("!{}", crate::api::label::INSTANCE),
    }
}

/// A Release that changed: its name and namespace.
pub type ReleaseChange = kube::core::PartialObjectMeta<crate::api::Release>;

/// What every reconcile gets: the connection, settings, caches and per-object bookkeeping.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Cancelled on SIGTERM: controllers finish the reconciles in flight and stop.
    pub shutdown: CancellationToken,
    /// Prometheus' HTTP API, for analysis and scaling (one HTTP client, its connections pooled).
    pub prometheus: Option<crate::prometheus::Prometheus>,
    /// What the controllers read instead of asking the API server.
    pub caches: caches::Caches,
    /// Status writes the watch caches may not have delivered yet.
    pub written: status::Written,
    /// Watch events not yet followed by a reconcile.
    pub pending: latency::Pending,
    /// Consecutive failures per object, for the backoff of their retries.
    pub retries: retry::Retries,
    /// Which reconciles ran, per object (`/debug/reconciles`).
    pub reconciles: Arc<reconciles::Reconciles>,
    /// One decision per app at a time.
    pub app_locks: app_locks::AppLocks,
    /// What the DORA metrics have counted.
    dora: std::sync::Mutex<crate::dora::Ledger>,
}

impl Context {
    /// A context reading `caches`, whose writers (from [`caches::new`]) go to [`run`], and
    /// `prometheus` for analysis and scaling (`None`: not configured).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        config: Config,
        shutdown: CancellationToken,
        caches: caches::Caches,
        prometheus: Option<crate::prometheus::Prometheus>,
    ) -> Self {
        let reporter = Reporter {
            controller: "phaseloop".into(),
            instance: std::env::var("POD_NAME").ok().or_else(|| std::env::var("HOSTNAME").ok()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Context {
            client,
            recorder,
            metrics,
            config,
            shutdown,
            prometheus,
            caches,
            written: Default::default(),
            pending: Default::default(),
            retries: Default::default(),
            reconciles: Default::default(),
            app_locks: Default::default(),
            dora: Default::default(),
        }
    }

    /// Counts the DORA facts of `rel` not counted yet.
    pub(crate) fn count_dora(&self, rel: &crate::api::Release) {
        self.metrics.touch_dora(rel.ns(), &rel.spec.app);
        let records = self.dora.lock().map(|mut l| l.observe(rel)).unwrap_or_default();
        self.metrics.record_dora(&records);
    }

    /// Forgets the DORA facts of Releases and apps that are gone; the sizes left.
    pub(crate) fn dora_retain(
        &self,
        uids: &std::collections::HashSet<String>,
        apps: &std::collections::HashSet<(String, String)>,
    ) -> (usize, usize) {
        self.dora.lock().map(|mut l| l.retain(uids, apps)).unwrap_or_default()
    }

    /// Counts the DORA facts of every cached Release, in time order (once, after the first sync).
    fn rebuild_dora(&self, releases: &[Arc<crate::api::Release>]) {
        for r in releases {
            self.metrics.touch_dora(r.ns(), &r.spec.app);
        }
        let records = self.dora.lock().map(|mut l| l.rebuild(releases.iter().map(|r| &**r))).unwrap_or_default();
        info!(records = records.len(), "DORA metrics rebuilt from Release status");
        self.metrics.record_dora(&records);
    }
}

/// Whether `store` has completed its first list, now.
pub fn is_synced<K: Resource + Clone + 'static>(store: &reflector::Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// Waits until `store` has completed its first list, polled every 100ms for up to 30s
/// (`Store::wait_until_ready` wakes only one of several waiters, and the controller's own runner
/// is one). Returns whether it has.
pub async fn wait_synced<K: Resource + Clone + 'static>(store: &reflector::Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    for _ in 0..300 {
        if is_synced(store) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `store` once it has completed its first list ([`wait_synced`]). `None` when there is no such
/// cache (a single-namespace operator has no Environment cache) or it is not ready in time:
/// callers then ask the API server. Waiting is what keeps a restart's re-list from costing a
/// LIST per reconcile while the other controller's cache is still filling.
pub async fn synced_store<K>(store: Option<&reflector::Store<K>>) -> Option<&reflector::Store<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = store?;
    wait_synced(store).await.then_some(store)
}

/// Runs both controllers until `ctx.shutdown` is cancelled, their watches filling the caches
/// through `writers` (from the same [`caches::new`] as `ctx.caches`). `ready` turns true once both
/// have listed and cached their objects (the `/readyz` signal).
pub async fn run(ctx: Arc<Context>, writers: caches::Writers, ready: Arc<AtomicBool>) {
    // Releases the Release controller's watch delivered, after its cache took them in, go to the
    // Environment controller (whose status and sleep follow its Releases): a second watch of
    // Releases would cost memory and could deliver a change before the cache it reads has it.
    let (release_changes, released) = match writers.environment {
        Some(_) => {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    // And a changed Environment wakes the Releases of its namespace (sleep, freeze, promotion).
    let (environment_changes, environments_changed) = futures::channel::mpsc::unbounded();
    let releases = release::controller(ctx.clone(), writers.release, release_changes, environments_changed);
    let environments = writers
        .environment
        .zip(released)
        .map(|(w, released)| environment::controller(ctx.clone(), w, released, environment_changes));
    let rel_store = ctx.caches.releases.clone();
    let env_store = ctx.caches.environments.clone();
    let empty = || reflector::store::<crate::api::Environment>().0;
    let collector = crate::metrics::StateCollector::new(rel_store.clone(), env_store.clone().unwrap_or_else(empty));
    ctx.metrics.register(Box::new(collector));
    let synced = ctx.clone();
    tokio::spawn(async move {
        // `Store::wait_until_ready` keeps only one waker (a oneshot underneath) and the controller's
        // own runner waits on the same store, so a second waiter may never be woken. Polling again
        // re-registers and sees the value once it is there.
        let tick = Duration::from_millis(200);
        loop {
            let rel_synced = tokio::time::timeout(tick, rel_store.wait_until_ready()).await.is_ok_and(|r| r.is_ok());
            let env_synced = match &env_store {
                Some(s) => tokio::time::timeout(tick, s.wait_until_ready()).await.is_ok_and(|r| r.is_ok()),
                None => true,
            };
            if env_synced && rel_synced {
                synced.rebuild_dora(&rel_store.state());
                ready.store(true, Ordering::SeqCst);
                info!("caches synced; ready");
                break;
            }
        }
    });
    let environments = async {
        if let Some(c) = environments {
            environment::run(c, ctx.clone()).await
        }
    };
    tokio::join!(
        environments,
        release::run(releases, ctx.clone()),
        memory::sweep_forever(ctx.clone()),
        access::run(ctx.clone())
    );
    info!("controllers stopped");
}

/// Runs one controller with the shared instrumentation and error policy.
async fn run_instrumented<K, F, Fut>(name: &'static str, controller: Controller<K>, reconcile: F, ctx: Arc<Context>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K: serde::Serialize,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let shutdown = ctx.shutdown.clone();
    let reconcile = Arc::new(reconcile);
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            move |obj, ctx| {
                let reconcile = reconcile.clone();
                async move {
                    let obj = ctx.written.freshest(obj);
                    let key = fields::key_of(&*obj);
                    if let Some(waited) = ctx.pending.take(&key) {
                        ctx.metrics.observe_watch_to_reconcile(name, waited);
                    }
                    let started = Instant::now();
                    let version = obj.meta().resource_version.clone();
                    let result = reconcile(obj, ctx.clone()).await;
                    ctx.metrics.observe_reconcile(name, started.elapsed(), result.as_ref().err().map(Error::reason));
                    let error = result.as_ref().err().map(ToString::to_string);
                    ctx.reconciles.finished(name, &key, version.as_deref(), error);
                    if result.is_ok() {
                        ctx.retries.succeeded(&key);
                    }
                    result
                }
            },
            move |obj, err: &Error, ctx| {
                let key = fields::key_of(&*obj);
                let action = ctx.retries.failed(&key, err);
                if let Error::Waiting(why) = err.cause() {
                    debug!(controller = name, object = %key, why, "waiting");
                } else {
                    warn!(controller = name, object = %key, error = %err, next = ?action, "reconcile failed");
                }
                action
            },
            ctx,
        )
        .for_each(|result| {
            // Reconcile errors are logged by the error policy; these are watch and queue errors.
            // ObjectNotFound: a trigger for an object deleted meanwhile, nothing to do.
            if let Err(e) = result
                && !matches!(
                    e,
                    kube::runtime::controller::Error::ReconcilerFailed(..)
                        | kube::runtime::controller::Error::ObjectNotFound(..)
                )
            {
                warn!(controller = name, error = %e, "controller stream error");
            }
            futures::future::ready(())
        })
        .await;
}

/// Now, to the second, by this process's clock ([`crate::clock::now`]).
pub fn now() -> jiff::Timestamp {
    crate::clock::now()
}

/// A failed reconcile the object's owner should hear about ([`Error::reportable`]: a child the API
/// server refused, a quota that would be exceeded) is said in `Degraded` with the API server's
/// words and a Warning Event; nothing else changed. A refusal is not retried in a loop (the spec
/// must change, which wakes the object); a quota is retried with backoff.
pub(crate) async fn reported<K, S>(
    ctx: &Context,
    api: &kube::Api<K>,
    obj: &K,
    current: Option<&S>,
    result: Result<Action, Error>,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    S: crate::api::Reported + Clone + Default + serde::Serialize + PartialEq,
{
    let Err(e) = &result else { return result };
    let Some((reason, why)) = e.reportable() else { return result };
    let mut status = current.cloned().unwrap_or_default();
    let degraded =
        conditions::Desired { type_: crate::api::condition::DEGRADED, status: true, reason, message: why.clone() };
    conditions::upsert(
        status.conditions_mut(),
        degraded,
        obj.meta().generation,
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()),
    );
    status.set_message(format!("nothing was changed: {why}"));
    if current != Some(&status) {
        publish(ctx, obj, EventType::Warning, reason, why).await;
    }
    status::apply_status(api, &ctx.written, obj, current, &status).await?;
    match e.cause() {
        Error::Refused(_) => Ok(Action::requeue(Duration::from_secs(300))),
        _ => result,
    }
}

/// Publishes an Event about `obj`; failures are logged, never fatal (Events are best effort).
pub(crate) async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: reason.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

/// A kind's phase, as its Events show it.
pub trait Phase: Copy + PartialEq {
    fn name(self) -> &'static str;
    /// Entering it is a Warning Event (something failed or was undone).
    fn warns(self) -> bool;
}

impl Phase for crate::api::ReleasePhase {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn warns(self) -> bool {
        matches!(self, Self::Failed | Self::RolledBack | Self::Reverted)
    }
}

impl Phase for crate::api::EnvironmentPhase {
    fn name(self) -> &'static str {
        self.as_str()
    }
    fn warns(self) -> bool {
        self == Self::Failed
    }
}

/// Publishes an Event for a phase transition (nothing when the phase did not change).
pub(crate) async fn publish_phase_change<K, P: Phase>(
    ctx: &Context,
    obj: &K,
    old: Option<P>,
    new: Option<P>,
    message: Option<String>,
) where
    K: Resource<DynamicType = ()>,
{
    let Some(new) = new else { return };
    if old == Some(new) {
        return;
    }
    let from = old.map(Phase::name).unwrap_or("(new)");
    let note = match message {
        Some(m) => format!("{from} -> {}: {m}", new.name()),
        None => format!("{from} -> {}", new.name()),
    };
    let type_ = if new.warns() { EventType::Warning } else { EventType::Normal };
    publish(ctx, obj, type_, new.name(), note).await;
}
