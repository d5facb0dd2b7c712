//! The traffic-invariant monitor: what an app's users would see, sampled every 100 ms while a test
//! runs, and asserted over the whole timeline rather than at the end.
//!
//! It watches the app Service's EndpointSlices (computed by the real controller-manager from pod
//! readiness), the app's pods (to tell each endpoint's version) and the app's Releases, and records
//! at every tick the Ready endpoints by version, the Ready pods by version, and each Release's
//! phase and weight. With a route ([`Monitor::start_routed`]) it also records the HTTPRoute's
//! weight for each backend Service and the Ready endpoints behind each (`<app>-stable`,
//! `<app>-canary`), so a test asserts what the route sent where at every moment. Nothing here
//! connects to a pod or Service address (they are fake): the endpoints are read from the API server.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, ResourceExt,
    api::DynamicObject,
    runtime::{WatchStreamExt, reflector, watcher},
};
use phaseloop::api::{Release, ReleasePhase};
use tokio::{task::JoinHandle, time::Instant};

mod timeline;

pub use timeline::Timeline;

const TICK: Duration = Duration::from_millis(100);
const VERSION: &str = "app.kubernetes.io/version";

/// A Release as the monitor saw it at one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseView {
    pub phase: Option<ReleasePhase>,
    pub weight: Option<i32>,
    pub step: Option<i32>,
    /// The most failed measurements of any analysis metric.
    pub failures: i32,
    pub version: String,
}

/// One tick of the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Since the monitor started.
    pub at: Duration,
    /// Ready endpoints of the app's Service, by the version of the pod behind each.
    pub endpoints: BTreeMap<String, usize>,
    /// Ready pods of the app by version, whether the Service selects them or not.
    pub ready_pods: BTreeMap<String, usize>,
    /// Pods of the app by version, Ready or not (not those being deleted).
    pub pods: BTreeMap<String, usize>,
    /// The app's Releases by name.
    pub releases: BTreeMap<String, ReleaseView>,
    /// With a route: the weight of each backend Service in its weighted rules (those without a
    /// header match), summed over them.
    pub route: BTreeMap<String, i64>,
    /// With a route: the backend Services of its header-matched rules.
    pub header_backends: Vec<String>,
    /// With a route: Ready endpoints of each backend Service (`<app>-stable`, `<app>-canary`),
    /// by version.
    pub backends: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Sample {
    /// Ready endpoints, all versions.
    pub fn ready(&self) -> usize {
        self.endpoints.values().sum()
    }

    /// Whether every Ready endpoint is a pod of `version` (and there is at least one).
    pub fn only(&self, version: &str) -> bool {
        self.ready() > 0 && self.endpoints.iter().all(|(v, n)| v == version || *n == 0)
    }

    pub fn phase(&self, release: &str) -> Option<ReleasePhase> {
        self.releases.get(release).and_then(|r| r.phase)
    }

    /// The route's weight for backend `service` (0 when absent).
    pub fn weight_of(&self, service: &str) -> i64 {
        self.route.get(service).copied().unwrap_or(0)
    }

    /// The backend Services that get requests now (a weight above 0, or a header rule), and
    /// that have Ready endpoints of `version`.
    pub fn routed_to(&self, version: &str) -> Vec<&str> {
        let sends = |svc: &str| self.weight_of(svc) > 0 || self.header_backends.iter().any(|h| h == svc);
        self.backends
            .iter()
            .filter(|(svc, eps)| sends(svc) && eps.get(version).copied().unwrap_or(0) > 0)
            .map(|(svc, _)| svc.as_str())
            .collect()
    }
}

/// A running monitor; [`Monitor::stop`] returns the timeline. It runs on a thread and a runtime
/// of its own, so a test blocked in `kubectl` (or on a current-thread runtime) never pauses it.
pub struct Monitor {
    started: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    marks: Arc<Mutex<Vec<(String, Duration)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    /// Starts watching app `app` in `ns`; returns once every cache has listed.
    pub async fn start(client: &Client, ns: &str, app: &str) -> Monitor {
        Self::watching(client, ns, app, None).await
    }

    /// Starts watching app `app` in `ns` and its HTTPRoute `route`.
    pub async fn start_routed(client: &Client, ns: &str, app: &str, route: &str) -> Monitor {
        Self::watching(client, ns, app, Some(route.to_string())).await
    }

    async fn watching(_client: &Client, ns: &str, app: &str, route: Option<String>) -> Monitor {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Instant>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ns, app, out) = (ns.to_string(), app.to_string(), samples.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(watch(ns, app, route, out, ready_tx, stopped));
        });
        let started = tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .expect("the monitor's caches sync")
            .expect("the monitor thread runs");
        Monitor { started, samples, marks: Default::default(), stop: Some(stop), thread: Some(thread) }
    }

    /// Records a named moment (a command was given), to measure from.
    pub fn mark(&self, what: &str) -> Duration {
        let at = self.started.elapsed();
        self.marks.lock().unwrap().push((what.to_string(), at));
        at
    }

    /// The timeline so far, without stopping.
    pub fn now(&self) -> Timeline {
        Timeline { samples: self.samples.lock().unwrap().clone(), marks: self.marks.lock().unwrap().clone() }
    }

    /// Waits until a sample satisfies `pred` (the monitor has seen what the test just waited for).
    pub async fn seen(&self, what: &str, pred: impl Fn(&Sample) -> bool) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.samples.lock().unwrap().iter().find(|s| pred(s)) {
                return s.at;
            }
            assert!(Instant::now() < deadline, "the monitor never saw {what}\n{}", self.now().tail(20));
            tokio::time::sleep(TICK).await;
        }
    }

    /// Stops watching; the whole timeline, checked for what every rollout keeps: only two
    /// versions ever serve at once (the stable one and the candidate).
    pub async fn stop(mut self) -> Timeline {
        // One more tick so the latest state is in.
        tokio::time::sleep(TICK * 2).await;
        let timeline = self.now();
        self.halt();
        timeline.assert_at_most_two_versions();
        timeline
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The monitor thread: its own client and watches, and a sample every tick until stopped.
async fn watch(
    ns: String,
    app: String,
    route: Option<String>,
    out: Arc<Mutex<Vec<Sample>>>,
    ready: tokio::sync::oneshot::Sender<Instant>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let client = crate::client().await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns);
    let services = format!("kubernetes.io/service-name in ({app},{app}-stable,{app}-canary)");
    let (slice_store, slice_task) = reflect(slices, watcher::Config::default().labels(&services), ());
    let (pod_store, pod_task) =
        reflect(pods, watcher::Config::default().labels(&format!("app.kubernetes.io/name={app}")), ());
    let (release_store, release_task) = reflect(releases, watcher::Config::default(), ());
    let routes = route.as_ref().map(|name| {
        let ar = phaseloop::controller::release::traffic::gateway::api_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        reflect(api, watcher::Config::default().fields(&format!("metadata.name={name}")), ar)
    });
    let _ = slice_store.wait_until_ready().await;
    let _ = pod_store.wait_until_ready().await;
    let _ = release_store.wait_until_ready().await;
    if let Some((store, _)) = &routes {
        let _ = store.wait_until_ready().await;
    }
    let started = Instant::now();
    let _ = ready.send(started);
    let sampler = async {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let mut sample = sample(started, &slice_store.state(), &pod_store.state(), &release_store.state(), &app);
            if let Some((store, _)) = &routes {
                routed(
                    &mut sample,
                    store.state().first().map(|r| r.as_ref()),
                    &slice_store.state(),
                    &pod_store.state(),
                    &app,
                );
            }
            out.lock().unwrap().push(sample);
        }
    };
    tokio::select! {
        _ = sampler => {}
        _ = stopped => {}
    }
    for t in [slice_task, pod_task, release_task].into_iter().chain(routes.map(|(_, t)| t)) {
        t.abort();
    }
}

fn reflect<K>(api: Api<K>, config: watcher::Config, dt: K::DynamicType) -> (reflector::Store<K>, JoinHandle<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let writer = reflector::store::Writer::new(dt);
    let store = writer.as_reader();
    let stream = watcher(api, config).default_backoff().reflect(writer).applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    (store, task)
}

fn sample(
    started: Instant,
    slices: &[Arc<EndpointSlice>],
    pods: &[Arc<Pod>],
    releases: &[Arc<Release>],
    app: &str,
) -> Sample {
    let endpoints = ready_by_version(slices, pods, app);
    let mut ready_pods = BTreeMap::new();
    let mut all_pods = BTreeMap::new();
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        *all_pods.entry(p.labels().get(VERSION).cloned().unwrap_or_default()).or_insert(0) += 1;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            *ready_pods.entry(p.labels().get(VERSION).cloned().unwrap_or_default()).or_insert(0) += 1;
        }
    }
    let releases = releases
        .iter()
        .filter(|r| r.spec.app == app)
        .map(|r| {
            let s = r.status.as_ref();
            let view = ReleaseView {
                phase: s.and_then(|s| s.phase),
                weight: s.and_then(|s| s.weight),
                step: s.and_then(|s| s.current_step),
                failures: s.map(|s| s.analysis.iter().map(|a| a.failures).max().unwrap_or(0)).unwrap_or(0),
                version: r.spec.version.clone(),
            };
            (r.name_any(), view)
        })
        .collect();
    Sample {
        at: started.elapsed(),
        endpoints,
        ready_pods,
        pods: all_pods,
        releases,
        route: BTreeMap::new(),
        header_backends: vec![],
        backends: BTreeMap::new(),
    }
}

/// Adds what the route sends where to `sample`: the weights of its weighted rules, the backends of
/// its header rules, and the Ready endpoints by version behind `<app>-stable` and `<app>-canary`.
fn routed(
    sample: &mut Sample,
    route: Option<&DynamicObject>,
    slices: &[Arc<EndpointSlice>],
    pods: &[Arc<Pod>],
    app: &str,
) {
    let rules =
        route.and_then(|r| r.data.pointer("/spec/rules")).and_then(|r| r.as_array()).cloned().unwrap_or_default();
    for rule in &rules {
        let headers = rule["matches"].as_array().is_some_and(|ms| ms.iter().any(|m| m.get("headers").is_some()));
        let app_backends = rule["backendRefs"].as_array().into_iter().flatten().filter(|b| {
            b["name"]
                .as_str()
                .is_some_and(|n| n.strip_prefix(app).is_some_and(|rest| rest == "-stable" || rest == "-canary"))
        });
        for b in app_backends {
            let name = b["name"].as_str().unwrap_or_default().to_string();
            if headers {
                sample.header_backends.push(name);
            } else {
                // The Gateway API's default weight is 1.
                *sample.route.entry(name).or_insert(0) += b["weight"].as_i64().unwrap_or(1);
            }
        }
    }
    for svc in [format!("{app}-stable"), format!("{app}-canary")] {
        sample.backends.insert(svc.clone(), ready_by_version(slices, pods, &svc));
    }
}

/// Ready endpoints of Service `service` by the version of the pod behind each.
fn ready_by_version(slices: &[Arc<EndpointSlice>], pods: &[Arc<Pod>], service: &str) -> BTreeMap<String, usize> {
    let version_of = |pod: &str| {
        pods.iter().find(|p| p.name_any() == pod).and_then(|p| p.labels().get(VERSION).cloned()).unwrap_or("?".into())
    };
    let mut endpoints = BTreeMap::new();
    let of_service =
        slices.iter().filter(|s| s.labels().get("kubernetes.io/service-name").map(String::as_str) == Some(service));
    for s in of_service {
        for e in s.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            let pod = e.target_ref.as_ref().and_then(|t| t.name.clone());
            if let (true, Some(pod)) = (ready, pod) {
                *endpoints.entry(version_of(&pod)).or_insert(0) += 1;
            }
        }
    }
    endpoints
}
