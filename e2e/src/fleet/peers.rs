//! Side by side with Argo Rollouts (`make bench BENCH=peers`): the same N apps, each rolled from v1
//! to v2 by the same canary plan, once by Argo Rollouts and once by phaseloop, on the same cluster
//! and kwok node, one controller at a time, everything deleted in between. Each controller runs as
//! a host process under its own ServiceAccount, and both are measured the same way from outside:
//!
//! - memory and CPU from `/proc` of the process (`process.rs`);
//! - API requests from the API server's audit log, filtered by the controller's user (`audit.rs`);
//! - time to all on v2 from what the cluster serves: per app, the pods its Service selects
//!   (ready, not terminating) are all v2 and as many as the app's replicas, observed from pods and
//!   Services by this harness, not from either controller's status;
//! - first action: from the harness sending an app's change to the controller's first write about
//!   that app (Events excluded), as the API server received it.
//!
//! Phases per controller: a fresh process idle; setup (every app at v1, straight to 100% for
//! both); v1 → v2 through the canary steps (the headline figures); v2 → v3 with a Prometheus
//! analysis on a subset of the apps; a restart and its re-list.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::{
    CREATE_CONCURRENCY, Scrape, apply_json,
    audit::{AuditLog, Counts},
    process::PidFile,
};
use crate::{bench::Summary, repo_root};

/// Label on every namespace and pod the benchmark creates.
pub const LABEL: &str = "bench.phaseloop.dev/peers";
/// Canary weights of the plan, each followed by a timed pause; 100% comes after the last pause.
/// With 4 replicas both controllers split 25% as 1 + 3 pods and 50% as 2 + 2 (Argo's default
/// maxSurge of 25% would add a stable pod at 20%, which phaseloop's split does not).
pub const WEIGHTS: [i32; 2] = [25, 50];
/// Progress deadline of both, in seconds (both default to 600). Argo Rollouts only marks a missed
/// deadline (`progressDeadlineAbort` is off by default); phaseloop rolls the Release back. On two
/// cores a thousand apps stepping at once queue in the controller-manager for longer than 600s
/// (measured: every phaseloop Release rolled back at 1,000 apps), so both get one hour, the same
/// value, and the work is the same: every app reaches v2.
pub const PROGRESS_DEADLINE_S: u64 = 3600;
/// The analysis query, the same for both: it returns 1 while Prometheus scrapes the pushgateway.
pub const ANALYSIS_QUERY: &str = "sum(up{job=\"pushgateway\"})";
/// Nodes the benchmark adds when the kwok node cannot hold every pod at once.
const EXTRA_NODE_PREFIX: &str = "kwok-peers-";

/// The controllers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    ArgoRollouts,
    Phaseloop,
}

impl std::str::FromStr for Peer {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "phaseloop" => Ok(Peer::Phaseloop),
            "argo-rollouts" => Ok(Peer::ArgoRollouts),
            _ => bail!("unknown controller {s} (phaseloop, argo-rollouts)"),
        }
    }
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Phaseloop => "phaseloop",
            Peer::ArgoRollouts => "argo-rollouts",
        }
    }

    /// The ServiceAccount the controller runs as, as the audit log names it.
    pub fn user(self) -> String {
        match self {
            Peer::Phaseloop => {
                let ns = std::env::var("PHASELOOP_NAMESPACE").unwrap_or_else(|_| "phaseloop-system".into());
                format!("system:serviceaccount:{ns}:phaseloop")
            }
            Peer::ArgoRollouts => "system:serviceaccount:argo-rollouts:argo-rollouts".into(),
        }
    }

    /// Its scrape job in the cluster's Prometheus (`e2e/manifests/prometheus.yml.tmpl`).
    fn job(self) -> &'static str {
        match self {
            Peer::Phaseloop => "phaseloop-operator",
            Peer::ArgoRollouts => "argo-rollouts",
        }
    }

    fn script(self) -> PathBuf {
        repo_root().join(match self {
            Peer::Phaseloop => "e2e/scripts/run-operator.sh",
            Peer::ArgoRollouts => "e2e/scripts/run-argo-rollouts.sh",
        })
    }

    fn pid_file(self) -> anyhow::Result<PidFile> {
        let state = std::env::var("E2E_STATE").context("E2E_STATE (eval \"$(e2e/scripts/env.sh)\")")?;
        let file = match self {
            Peer::Phaseloop => "operator.pid",
            Peer::ArgoRollouts => "argo-rollouts.pid",
        };
        Ok(PidFile(PathBuf::from(state).join("pids").join(file)))
    }

    /// `start` (a running one is stopped first; returns once ready and leading) or `stop`.
    fn command(self, what: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(self.script()).arg(what).stdout(std::process::Stdio::null());
        cmd
    }

    async fn run(self, what: &str) -> anyhow::Result<()> {
        let status = self.command(what).status().await?;
        anyhow::ensure!(status.success(), "{} {what} failed", self.script().display());
        Ok(())
    }
}

/// How the side-by-side benchmark runs.
#[derive(Clone, Debug, Serialize)]
pub struct PeersRun {
    pub apps: usize,
    /// Apps per namespace.
    pub per_namespace: usize,
    pub replicas: i32,
    /// Each canary pause.
    pub pause: Duration,
    /// Every `analysis_every`-th app gets the Prometheus analysis in the v2 → v3 round.
    pub analysis_every: usize,
    pub analysis_interval: Duration,
    /// In this order, each on a cluster cleaned of the previous one's objects.
    pub controllers: Vec<Peer>,
    /// Per phase: how long until every app must serve the new version.
    pub timeout: Duration,
    pub prometheus_url: String,
}

impl PeersRun {
    fn namespaces(&self) -> usize {
        self.apps.div_ceil(self.per_namespace)
    }

    fn analysed(&self, j: usize) -> bool {
        self.analysis_every > 0 && j.is_multiple_of(self.analysis_every)
    }

    fn analysed_apps(&self) -> usize {
        (0..self.apps).filter(|j| self.analysed(*j)).count()
    }
}

/// One phase: a change applied to every app, until every app serves the new version.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    /// From the first change sent to every app serving the new version (pods its Service selects).
    pub seconds: f64,
    /// Per app, from its change sent to it serving the new version.
    pub app_seconds: Summary,
    /// From the harness sending an app's change to the controller's first write about it (Events
    /// excluded), as the API server received it; milliseconds.
    pub first_write_ms: Summary,
    /// Controller CPU from the first change until it went quiet (no request but leader election
    /// for `QUIET`).
    pub cpu_s: f64,
    /// The controller's requests over the same span, from the audit log.
    pub requests: Counts,
    pub requests_per_app: f64,
    /// From every app serving the new version to the controller going quiet.
    pub settle_s: f64,
    pub rss_peak_mib: f64,
    /// What the cluster's controller-manager did meanwhile (its pods are the same for both).
    pub controller_manager: KcmWork,
}

/// The controller-manager's work over a phase, from its `/metrics`: the Deployment and
/// ReplicaSet controllers' syncs and how long items waited in their queues (5 workers each and a
/// client limit of 20 requests a second: what bounds how fast any controller's pods change here).
#[derive(Clone, Debug, Default, Serialize)]
pub struct KcmWork {
    pub requests: f64,
    pub deployment_syncs: f64,
    pub deployment_queue_wait_s: f64,
    pub replicaset_syncs: f64,
    pub replicaset_queue_wait_s: f64,
}

impl KcmWork {
    fn between(a: &Scrape, b: &Scrape) -> Self {
        let d = |name: &str, with: &[&str]| b.sum(name, with) - a.sum(name, with);
        let mean = |queue: &str| {
            let with = format!("name=\"{queue}\"");
            let n = d("workqueue_queue_duration_seconds_count", &[&with]);
            if n > 0.0 { d("workqueue_queue_duration_seconds_sum", &[&with]) / n } else { 0.0 }
        };
        KcmWork {
            requests: d("rest_client_requests_total", &[]),
            deployment_syncs: d("workqueue_adds_total", &["name=\"deployment\""]),
            deployment_queue_wait_s: mean("deployment"),
            replicaset_syncs: d("workqueue_adds_total", &["name=\"replicaset\""]),
            replicaset_queue_wait_s: mean("replicaset"),
        }
    }
}

/// The controller-manager's `/metrics` (an always-allowed path on 127.0.0.1, its serving
/// certificate signed by the cluster's CA).
struct Kcm {
    url: String,
    http: reqwest::Client,
}

impl Kcm {
    fn from_env() -> Option<Self> {
        let state = std::env::var("E2E_STATE").ok()?;
        let port = std::env::var("E2E_KCM_PORT").unwrap_or_else(|_| "11257".into());
        let ca = reqwest::Certificate::from_pem(&std::fs::read(PathBuf::from(state).join("pki/ca.crt")).ok()?).ok()?;
        let http = reqwest::Client::builder().add_root_certificate(ca).build().ok()?;
        Some(Kcm { url: format!("https://127.0.0.1:{port}/metrics"), http })
    }

    async fn scrape(&self) -> Scrape {
        let text = async { self.http.get(&self.url).send().await?.error_for_status()?.text().await };
        Scrape::parse(&text.await.unwrap_or_default())
    }
}

/// What one controller measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerReport {
    pub controller: String,
    pub version: String,
    pub user: String,
    /// A fresh process, no apps.
    pub rss_idle_mib: f64,
    /// Every app at v1, quiet.
    pub rss_steady_v1_mib: f64,
    /// Every app at v2 after the canary, quiet: the steady figure.
    pub rss_steady_mib: f64,
    /// Every app at v3 after the analysis round, quiet.
    pub rss_steady_v3_mib: f64,
    /// Series its `/metrics` exposes with every app at v2, and how long the cluster's Prometheus
    /// takes to scrape them (every 2s, for both controllers alike).
    pub metrics_series: f64,
    pub metrics_scrape_ms: f64,
    /// Highest over setup and both rollouts.
    pub rss_peak_mib: f64,
    /// Highest from a restart until quiet again.
    pub rss_peak_relist_mib: f64,
    /// From the new process's start to its last request of the re-list.
    pub relist_s: f64,
    pub relist_cpu_s: f64,
    pub relist_requests: Counts,
    pub setup: PhaseReport,
    /// v1 → v2 through the canary steps: the headline figures.
    pub rollout: PhaseReport,
    /// v2 → v3, with the analysis on a subset of the apps.
    pub analysis: PhaseReport,
}

/// phaseloop's figure over Argo Rollouts', with the goal when there is one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    pub figure: String,
    pub phaseloop: f64,
    pub argo_rollouts: f64,
    /// `phaseloop / argo_rollouts`; None when Argo's figure is 0.
    pub ratio: Option<f64>,
    pub goal: Option<f64>,
    pub met: Option<bool>,
}

/// What the benchmark measured at one size.
#[derive(Clone, Debug, Serialize)]
pub struct PeersReport {
    pub apps: usize,
    pub namespaces: usize,
    pub replicas: i32,
    pub steps: Vec<String>,
    pub analysis_apps: usize,
    pub analysis_interval_s: f64,
    pub runs: Vec<PeerReport>,
    pub ratios: Vec<Ratio>,
}

/// The ratios of the report: each figure of phaseloop over Argo Rollouts'.
pub fn ratios(p: &PeerReport, a: &PeerReport) -> Vec<Ratio> {
    let row = |figure: &str, pv: f64, av: f64, goal: Option<f64>| {
        let ratio = (av != 0.0).then(|| pv / av);
        Ratio {
            figure: figure.into(),
            phaseloop: pv,
            argo_rollouts: av,
            ratio,
            goal,
            met: goal.zip(ratio).map(|(g, r)| r <= g),
        }
    };
    let (pr, ar) = (&p.rollout, &a.rollout);
    let (pa, aa) = (&p.analysis, &a.analysis);
    vec![
        row("RSS idle, MiB", p.rss_idle_mib, a.rss_idle_mib, None),
        row("RSS steady (all on v2), MiB", p.rss_steady_mib, a.rss_steady_mib, Some(0.2)),
        row("RSS peak (setup and rollouts), MiB", p.rss_peak_mib, a.rss_peak_mib, None),
        row("RSS peak in a restart's re-list, MiB", p.rss_peak_relist_mib, a.rss_peak_relist_mib, None),
        row("CPU seconds, v1 → v2", pr.cpu_s, ar.cpu_s, Some(0.33)),
        row("API requests, v1 → v2", pr.requests.total as f64, ar.requests.total as f64, Some(0.5)),
        row(
            "API requests without leader election, v1 → v2",
            pr.requests.workload as f64,
            ar.requests.workload as f64,
            None,
        ),
        row("API writes, v1 → v2", pr.requests.writes as f64, ar.requests.writes as f64, None),
        row("time to all on v2, s", pr.seconds, ar.seconds, Some(1.0)),
        row("first write after the change, p50 ms", pr.first_write_ms.p50, ar.first_write_ms.p50, None),
        row("first write after the change, p95 ms", pr.first_write_ms.p95, ar.first_write_ms.p95, None),
        row("CPU seconds, v2 → v3 with analysis", pa.cpu_s, aa.cpu_s, None),
        row("API requests, v2 → v3 with analysis", pa.requests.total as f64, aa.requests.total as f64, None),
        row("time to all on v3 (with analysis), s", pa.seconds, aa.seconds, None),
        row("CPU seconds, setup (v1)", p.setup.cpu_s, a.setup.cpu_s, None),
        row("API requests, setup (v1)", p.setup.requests.total as f64, a.setup.requests.total as f64, None),
        row("API requests of the re-list", p.relist_requests.total as f64, a.relist_requests.total as f64, None),
    ]
}

// ---------------------------------------------------------------------------------------------
// The workload, the same for both.

pub fn namespace(run: &PeersRun, j: usize) -> String {
    format!("peers-{:04}", j / run.per_namespace)
}

pub fn app(j: usize) -> String {
    format!("app-{j:05}")
}

fn pod_template(j: usize, version: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {"app.kubernetes.io/name": app(j), LABEL: "pod"}},
           "spec": {"containers": [{"name": "app", "image": format!("bench:{version}")}]}})
}

fn canary_steps(run: &PeersRun) -> Vec<serde_json::Value> {
    let pause = format!("{}s", run.pause.as_secs());
    WEIGHTS.iter().flat_map(|w| [json!({"setWeight": w}), json!({"pause": {"duration": pause}})]).collect()
}

/// phaseloop: one Release per version. v1 goes straight to 100% (no previous version, as Argo's
/// first revision); later versions run the canary steps, and the previous version is scaled to
/// zero at promotion (`revertWindow: 0s`), as Argo's basic canary does.
pub fn phaseloop_release(run: &PeersRun, j: usize, version: &str, analysis: bool) -> serde_json::Value {
    let deadline = format!("{PROGRESS_DEADLINE_S}s");
    let strategy = if version == "v1" {
        json!({"type": "Rolling", "progressDeadline": deadline})
    } else {
        let mut s = json!({"type": "Canary", "canary": {"steps": canary_steps(run)}, "revertWindow": "0s",
                           "progressDeadline": deadline});
        if analysis {
            s["analysis"] = json!({"interval": format!("{}s", run.analysis_interval.as_secs()),
                "metrics": [{"name": "up", "query": ANALYSIS_QUERY, "min": 1}]});
        }
        s
    };
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("{}-{version}", app(j)), "namespace": namespace(run, j)},
        "spec": {"app": app(j), "version": version, "replicas": run.replicas,
                 "template": pod_template(j, version),
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]},
                 "strategy": strategy}})
}

/// Argo Rollouts: one Rollout per app, its image changed per version. Basic canary (no traffic
/// router: traffic follows the pod ratio through the app's Service), defaults otherwise.
pub fn argo_rollout(run: &PeersRun, j: usize, version: &str, analysis: bool) -> serde_json::Value {
    let mut canary = json!({"steps": canary_steps(run)});
    if analysis {
        canary["analysis"] = json!({"templates": [{"templateName": "bench-up"}]});
    }
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": app(j), "namespace": namespace(run, j)},
        "spec": {"replicas": run.replicas, "progressDeadlineSeconds": PROGRESS_DEADLINE_S,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": app(j)}},
                 "template": pod_template(j, version),
                 "strategy": {"canary": canary}}})
}

/// The Service of an Argo app: what phaseloop creates for its Releases (`<app>`, port 80 to 8080,
/// selecting every pod of the app), created by the harness since Argo's basic canary needs none.
pub fn argo_service(run: &PeersRun, j: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": app(j), "namespace": namespace(run, j), "labels": {LABEL: "service"}},
        "spec": {"selector": {"app.kubernetes.io/name": app(j)}, "ports": [{"port": 80, "targetPort": 8080}]}})
}

/// The AnalysisTemplate of a namespace: the same query, interval and success condition as
/// phaseloop's `strategy.analysis` (no count: it measures until the rollout ends, as phaseloop's
/// background analysis does; failureLimit 0 in both).
pub fn argo_template(run: &PeersRun, ns: &str) -> serde_json::Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": "bench-up", "namespace": ns},
        "spec": {"metrics": [{"name": "up", "interval": format!("{}s", run.analysis_interval.as_secs()),
                 "successCondition": "result[0] >= 1",
                 "provider": {"prometheus": {"address": run.prometheus_url, "query": ANALYSIS_QUERY}}}]}})
}

fn workload(run: &PeersRun, peer: Peer, j: usize, version: &str, analysis: bool) -> serde_json::Value {
    match peer {
        Peer::Phaseloop => phaseloop_release(run, j, version, analysis),
        Peer::ArgoRollouts => argo_rollout(run, j, version, analysis),
    }
}

// ---------------------------------------------------------------------------------------------
// What the cluster serves: pods and Services, watched by the harness.

/// What the harness keeps of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub ready: bool,
    pub terminating: bool,
}

impl PodView {
    fn of(p: &Pod) -> Self {
        PodView {
            labels: p.labels().clone(),
            image: p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default(),
            ready: p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            terminating: p.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Whether an app serves `image` fully: the pods its Service selects that can take traffic
/// (ready, not terminating) are at least `replicas`, and all run `image`.
pub fn serves<'a>(
    selector: &BTreeMap<String, String>,
    pods: impl IntoIterator<Item = &'a PodView>,
    image: &str,
    replicas: i32,
) -> bool {
    if selector.is_empty() {
        return false;
    }
    let mut on = 0;
    for p in pods {
        let selected = selector.iter().all(|(k, v)| p.labels.get(k) == Some(v));
        if !selected || !p.ready || p.terminating {
            continue;
        }
        if p.image != image {
            return false;
        }
        on += 1;
    }
    on >= replicas
}

type AppKey = (String, String); // namespace, app

#[derive(Default)]
struct Seen {
    /// Pods by app, then by name.
    pods: HashMap<AppKey, HashMap<String, PodView>>,
    /// Service selectors by (namespace, name = app).
    services: HashMap<AppKey, BTreeMap<String, String>>,
}

/// Pods and Services of the benchmark's namespaces, kept current by two watches.
#[derive(Clone, Default)]
pub struct Observer(Arc<Mutex<Seen>>);

impl Observer {
    /// Starts the watches (they run until the process ends).
    pub fn start(client: &Client) -> Self {
        let me = Observer::default();
        let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(&format!("{LABEL}=pod")))
            .default_backoff();
        let state = me.0.clone();
        tokio::spawn(async move {
            let mut pods = std::pin::pin!(pods);
            let mut init: Option<HashMap<AppKey, HashMap<String, PodView>>> = None;
            while let Some(ev) = pods.next().await {
                let Ok(ev) = ev else { continue };
                let key = |p: &Pod| {
                    (
                        p.namespace().unwrap_or_default(),
                        p.labels().get("app.kubernetes.io/name").cloned().unwrap_or_default(),
                    )
                };
                let mut s = state.lock().expect("observer lock");
                match ev {
                    watcher::Event::Init => init = Some(HashMap::new()),
                    watcher::Event::InitApply(p) => {
                        if let Some(i) = init.as_mut() {
                            i.entry(key(&p)).or_default().insert(p.name_any(), PodView::of(&p));
                        }
                    }
                    watcher::Event::InitDone => s.pods = init.take().unwrap_or_default(),
                    watcher::Event::Apply(p) => {
                        s.pods.entry(key(&p)).or_default().insert(p.name_any(), PodView::of(&p));
                    }
                    watcher::Event::Delete(p) => {
                        if let Some(m) = s.pods.get_mut(&key(&p)) {
                            m.remove(&p.name_any());
                        }
                    }
                }
            }
        });
        let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
        let state = me.0.clone();
        tokio::spawn(async move {
            let mut services = std::pin::pin!(services);
            let mut init: Option<HashMap<AppKey, BTreeMap<String, String>>> = None;
            let ours = |s: &Service| s.namespace().is_some_and(|n| n.starts_with("peers-"));
            let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
            let selector = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
            while let Some(ev) = services.next().await {
                let Ok(ev) = ev else { continue };
                let mut st = state.lock().expect("observer lock");
                match ev {
                    watcher::Event::Init => init = Some(HashMap::new()),
                    watcher::Event::InitApply(s) if ours(&s) => {
                        if let Some(i) = init.as_mut() {
                            i.insert(key(&s), selector(&s));
                        }
                    }
                    watcher::Event::InitDone => st.services = init.take().unwrap_or_default(),
                    watcher::Event::Apply(s) if ours(&s) => {
                        st.services.insert(key(&s), selector(&s));
                    }
                    watcher::Event::Delete(s) => {
                        st.services.remove(&key(&s));
                    }
                    _ => {}
                }
            }
        });
        me
    }

    /// Apps of `apps` that serve `image` fully now.
    fn serving(&self, apps: &[AppKey], image: &str, replicas: i32) -> Vec<bool> {
        let s = self.0.lock().expect("observer lock");
        let none = HashMap::new();
        apps.iter()
            .map(|k| {
                let Some(sel) = s.services.get(k) else { return false };
                serves(sel, s.pods.get(k).unwrap_or(&none).values(), image, replicas)
            })
            .collect()
    }

    /// Pods of the benchmark present (any state).
    fn pods(&self) -> usize {
        self.0.lock().expect("observer lock").pods.values().map(HashMap::len).sum()
    }

    /// Polls every 100ms until every app serves `image`; returns when, and when each app did
    /// (an app that stops serving it is counted again when it serves it again).
    async fn wait_all(
        &self,
        apps: &[AppKey],
        image: &str,
        replicas: i32,
        deadline: Instant,
    ) -> anyhow::Result<(Instant, Vec<Instant>)> {
        let mut since: Vec<Option<Instant>> = vec![None; apps.len()];
        loop {
            let now = Instant::now();
            for (at, ok) in since.iter_mut().zip(self.serving(apps, image, replicas)) {
                *at = if ok { at.or(Some(now)) } else { None };
            }
            if since.iter().all(Option::is_some) {
                return Ok((now, since.into_iter().flatten().collect()));
            }
            if now > deadline {
                let left = since.iter().filter(|s| s.is_none()).count();
                bail!("{left} of {} apps not serving {image} by the deadline", apps.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// How long a controller must send nothing but leader election to count as quiet.
const QUIET: Duration = Duration::from_secs(5);

fn progress(what: &str) {
    eprintln!("[{}] peers: {what}", jiff::Zoned::now().strftime("%H:%M:%S"));
}

const MIB: f64 = 1024.0 * 1024.0;

/// Waits until `user` has sent nothing but leader election for `QUIET` (at most `limit`);
/// returns when its last such request since `since` was received (`since` if none was).
async fn wait_quiet(audit: &mut AuditLog, user: &str, since: Timestamp, limit: Duration) -> anyhow::Result<Timestamp> {
    let started = Timestamp::now();
    let until = Instant::now() + limit;
    loop {
        audit.poll()?;
        let last = audit.last_activity(user).filter(|t| *t >= since).unwrap_or(since);
        let idle = Timestamp::now().duration_since(last.max(started));
        if idle.as_secs_f64() >= QUIET.as_secs_f64() {
            return Ok(last);
        }
        if Instant::now() > until {
            progress(&format!("{user} still busy after {limit:?}; measuring anyway"));
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether an audit logged request is about app `app` (its Rollout, Release, ReplicaSets,
/// Deployments, Service, AnalysisRuns: named `app` or `app-…`).
fn about(name: &str, app: &str) -> bool {
    name == app || name.strip_prefix(app).is_some_and(|rest| rest.starts_with('-'))
}

/// Milliseconds from each app's change sent to the controller's first write about it.
fn first_writes(audit: &AuditLog, user: &str, sent: &[(usize, String, Timestamp)]) -> Vec<f64> {
    // Index the controller's writes by namespace, in order of receipt.
    let mut by_ns: HashMap<&str, Vec<&super::audit::Request>> = HashMap::new();
    for r in audit.requests.iter().filter(|r| r.user == user && r.is_write() && r.resource != "events") {
        by_ns.entry(r.namespace.as_str()).or_default().push(r);
    }
    for v in by_ns.values_mut() {
        v.sort_by_key(|r| r.received);
    }
    sent.iter()
        .filter_map(|(j, ns, at)| {
            let first = by_ns.get(ns.as_str())?.iter().find(|r| r.received >= *at && about(&r.name, &app(*j)))?;
            Some(first.received.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect()
}

struct Ctx<'a> {
    client: &'a Client,
    kcm: Option<Kcm>,
    run: &'a PeersRun,
    user: String,
    proc: PidFile,
    observer: &'a Observer,
    apps: Vec<AppKey>,
}

/// Applies `objects` (app index, manifest) 16 at a time and measures until every app serves
/// `image` and the controller is quiet again.
async fn phase(
    cx: &Ctx<'_>,
    audit: &mut AuditLog,
    image: &str,
    objects: Vec<(usize, serde_json::Value)>,
) -> anyhow::Result<PhaseReport> {
    let kcm0 = match &cx.kcm {
        Some(k) => k.scrape().await,
        None => Scrape::default(),
    };
    let cpu0 = cx.proc.cpu_seconds().unwrap_or(0.0);
    let t0 = Timestamp::now();
    let i0 = Instant::now();
    let deadline = i0 + cx.run.timeout;
    let client = cx.client;
    let apply = stream::iter(objects)
        .map(|(j, obj)| async move {
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
            let sent = (Timestamp::now(), Instant::now());
            apply_json(client, &obj, deadline).await?;
            anyhow::Ok((j, ns, sent))
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>();
    let wait = cx.observer.wait_all(&cx.apps, image, cx.run.replicas, deadline);
    let ((sent, done), peak) = cx.proc.peak_rss_while(async { tokio::join!(apply, wait) }).await;
    let mut sent = sent?;
    let (all, per_app) = done?;
    sent.sort_by_key(|(j, _, _)| *j);
    let (last, peak_quiet) = cx.proc.peak_rss_while(wait_quiet(audit, &cx.user, t0, Duration::from_secs(300))).await;
    let last = last?;
    let cpu_s = cx.proc.cpu_seconds().unwrap_or(0.0) - cpu0;
    let controller_manager = match &cx.kcm {
        Some(k) => KcmWork::between(&kcm0, &k.scrape().await),
        None => KcmWork::default(),
    };
    audit.poll()?;
    let requests = Counts::of(audit.window(&cx.user, t0, last.checked_add(jiff::SignedDuration::from_millis(1))?));
    let app_seconds: Vec<f64> =
        sent.iter().zip(&per_app).map(|((_, _, (_, at)), done)| done.duration_since(*at).as_secs_f64()).collect();
    let stamps: Vec<(usize, String, Timestamp)> = sent.iter().map(|(j, ns, (ts, _))| (*j, ns.clone(), *ts)).collect();
    let firsts = first_writes(audit, &cx.user, &stamps);
    if firsts.len() < stamps.len() {
        progress(&format!(
            "{} of {} apps without a write found after their change",
            stamps.len() - firsts.len(),
            stamps.len()
        ));
    }
    let seconds = all.duration_since(i0).as_secs_f64();
    Ok(PhaseReport {
        seconds,
        app_seconds: Summary::of(&app_seconds),
        first_write_ms: Summary::of(&firsts),
        cpu_s,
        requests_per_app: requests.total as f64 / cx.run.apps as f64,
        requests,
        settle_s: last.duration_since(t0).as_secs_f64() - seconds,
        rss_peak_mib: peak.max(peak_quiet) as f64 / MIB,
        controller_manager,
    })
}

async fn run_one(client: &Client, run: &PeersRun, peer: Peer, observer: &Observer) -> anyhow::Result<PeerReport> {
    let user = peer.user();
    let mut audit = AuditLog::from_env(&[&user])?;
    let proc = peer.pid_file()?;
    let apps: Vec<AppKey> = (0..run.apps).map(|j| (namespace(run, j), app(j))).collect();
    let cx = Ctx { client, kcm: Kcm::from_env(), run, user: user.clone(), proc: proc.clone(), observer, apps };
    let mut report = PeerReport { controller: peer.name().into(), user: user.clone(), ..Default::default() };

    progress(&format!("{}: fresh process, idle", peer.name()));
    peer.run("start").await?;
    report.version = version(&proc).await;
    wait_quiet(&mut audit, &user, Timestamp::now(), Duration::from_secs(60)).await?;
    report.rss_idle_mib = proc.mean_rss(Duration::from_secs(3)).await / MIB;

    // Namespaces and what Argo's apps need besides the Rollout (applied by the harness for both,
    // outside the measured phases).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pp = PatchParams::apply("phaseloop-bench").force();
    for i in 0..run.namespaces() {
        let name = format!("peers-{i:04}");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {LABEL: peer.name()}}});
        namespaces.patch(&name, &pp, &Patch::Apply(&ns)).await?;
    }
    if peer == Peer::ArgoRollouts {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut extra: Vec<serde_json::Value> = (0..run.apps).map(|j| argo_service(run, j)).collect();
        let mut with_analysis: Vec<String> =
            (0..run.apps).filter(|j| run.analysed(*j)).map(|j| namespace(run, j)).collect();
        with_analysis.dedup();
        extra.extend(with_analysis.iter().map(|ns| argo_template(run, ns)));
        stream::iter(extra)
            .map(|o| async move { apply_json(client, &o, deadline).await })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
    }

    progress(&format!("{}: setup, {} apps at v1", peer.name(), run.apps));
    let objects = (0..run.apps).map(|j| (j, workload(run, peer, j, "v1", false))).collect();
    report.setup = phase(&cx, &mut audit, "bench:v1", objects).await?;
    report.rss_steady_v1_mib = proc.mean_rss(Duration::from_secs(5)).await / MIB;
    progress(&format!("{}: setup in {:.1}s; v1 → v2", peer.name(), report.setup.seconds));

    let objects = (0..run.apps).map(|j| (j, workload(run, peer, j, "v2", false))).collect();
    report.rollout = phase(&cx, &mut audit, "bench:v2", objects).await?;
    report.rss_steady_mib = proc.mean_rss(Duration::from_secs(5)).await / MIB;
    (report.metrics_series, report.metrics_scrape_ms) = scrape_of(peer).await;
    progress(&format!(
        "{}: all on v2 in {:.1}s; v2 → v3 with analysis on {} apps",
        peer.name(),
        report.rollout.seconds,
        run.analysed_apps()
    ));

    let objects = (0..run.apps).map(|j| (j, workload(run, peer, j, "v3", run.analysed(j)))).collect();
    report.analysis = phase(&cx, &mut audit, "bench:v3", objects).await?;
    report.rss_steady_v3_mib = proc.mean_rss(Duration::from_secs(5)).await / MIB;
    report.rss_peak_mib = report.setup.rss_peak_mib.max(report.rollout.rss_peak_mib).max(report.analysis.rss_peak_mib);
    progress(&format!("{}: all on v3 in {:.1}s; restart and re-list", peer.name(), report.analysis.seconds));

    // Restart: the new process lists everything again.
    let old = proc.pid();
    let mut script = peer.command("start").spawn()?;
    while proc.pid() == old || proc.pid().is_none() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Timestamp::now();
    let relist = async {
        anyhow::ensure!(script.wait().await?.success(), "{} start failed", peer.name());
        wait_quiet(&mut audit, &user, started, Duration::from_secs(300)).await
    };
    let (last, peak) = proc.peak_rss_while(relist).await;
    let last = last?;
    report.relist_cpu_s = proc.cpu_seconds().unwrap_or(0.0);
    report.rss_peak_relist_mib = peak as f64 / MIB;
    report.relist_s = last.duration_since(started).as_secs_f64();
    audit.poll()?;
    report.relist_requests =
        Counts::of(audit.window(&user, started, last.checked_add(jiff::SignedDuration::from_millis(1))?));

    progress(&format!("{}: stopping; deleting its apps", peer.name()));
    peer.run("stop").await?;
    clean(client, observer).await?;
    Ok(report)
}

/// Samples in the last scrape of `peer`'s metrics and its duration (ms), from Prometheus.
async fn scrape_of(peer: Peer) -> (f64, f64) {
    let value = |q: String| async move {
        let r = crate::prom_query(&q).await.ok()?;
        r.first()?["value"][1].as_str()?.parse::<f64>().ok()
    };
    let job = peer.job();
    let series = value(format!("scrape_samples_scraped{{job=\"{job}\"}}")).await.unwrap_or(0.0);
    let seconds = value(format!("scrape_duration_seconds{{job=\"{job}\"}}")).await.unwrap_or(0.0);
    (series, seconds * 1000.0)
}

/// `--version` of the running binary, plus the commit for phaseloop.
async fn version(proc: &PidFile) -> String {
    let Some(pid) = proc.pid() else { return String::new() };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let out = tokio::process::Command::new(&exe).arg("--version").output().await;
    let mut v = out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if v.starts_with("phaseloop")
        && let Ok(o) = tokio::process::Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(repo_root())
            .output()
            .await
    {
        v = format!("{v} ({})", String::from_utf8_lossy(&o.stdout).trim());
    }
    v
}

/// Deletes the benchmark's namespaces and waits until they and their pods are gone.
pub async fn clean(client: &Client, observer: &Observer) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ours = |n: &Namespace| n.name_any().starts_with("peers-");
    for n in namespaces.list(&ListParams::default()).await?.items.iter().filter(|n| ours(n)) {
        let _ = namespaces.delete(&n.name_any(), &DeleteParams::background()).await;
    }
    let until = Instant::now() + Duration::from_secs(1800);
    loop {
        let left = namespaces.list(&ListParams::default()).await?.items.iter().filter(|n| ours(n)).count();
        if left == 0 && observer.pods() == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{left} namespaces and {} pods of the benchmark still there after 30 minutes", observer.pods());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Adds kwok nodes (same as `kwok-node-0`) until the cluster holds `pods` pods at once.
async fn ensure_capacity(client: &Client, pods: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let capacity = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("pods"))
            .and_then(|q| count(&q.0))
            .unwrap_or(0)
    };
    let have: usize = nodes.list(&ListParams::default()).await?.items.iter().map(capacity).sum();
    if have >= pods {
        return Ok(());
    }
    let per_node = 5000;
    for i in 1..=(pods - have).div_ceil(per_node) {
        let name = format!("{EXTRA_NODE_PREFIX}{i}");
        let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                         "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
                                    "type": "kwok", LABEL: "node"}}}))?;
        let _ = nodes.create(&PostParams::default(), &node).await;
        // kwok fills in a new node's status until it is Ready (1M pods); the capacity is set after.
        let ready = |n: &Node| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let until = Instant::now() + Duration::from_secs(60);
        while !nodes.get(&name).await.is_ok_and(|n| ready(&n)) {
            anyhow::ensure!(Instant::now() < until, "kwok did not make node {name} Ready within 60s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let status = json!({"status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": per_node.to_string()},
                                       "capacity": {"cpu": "32", "memory": "256Gi", "pods": per_node.to_string()}}});
        nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
        progress(&format!("added kwok node {name} ({per_node} pods)"));
    }
    Ok(())
}

/// A count as a Kubernetes quantity writes it (`5000`, `5k`, `1M`).
fn count(q: &str) -> Option<usize> {
    let (digits, factor) = match q.strip_suffix('k') {
        Some(d) => (d, 1_000),
        None => match q.strip_suffix('M') {
            Some(d) => (d, 1_000_000),
            None => (q, 1),
        },
    };
    digits.parse::<usize>().ok().map(|n| n * factor)
}

async fn remove_extra_nodes(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in nodes.list(&ListParams::default().labels(&format!("{LABEL}=node"))).await?.items {
        nodes.delete(&n.name_any(), &DeleteParams::default()).await?;
    }
    Ok(())
}

/// Both controllers at one size, one after the other.
pub async fn peers(client: &Client, run: &PeersRun) -> anyhow::Result<PeersReport> {
    anyhow::ensure!(run.apps > 0 && run.per_namespace > 0 && run.replicas > 0, "apps, per-namespace and replicas > 0");
    let observer = Observer::start(client);
    for peer in [Peer::Phaseloop, Peer::ArgoRollouts] {
        peer.run("stop").await?;
    }
    progress("deleting leftovers of earlier runs");
    clean(client, &observer).await?;
    // One app holds at most replicas + 2 pods at once (a canary step's surge, a pod terminating).
    ensure_capacity(client, run.apps * (run.replicas as usize + 2)).await?;
    let mut runs = Vec::new();
    for &peer in &run.controllers {
        runs.push(run_one(client, run, peer, &observer).await?);
    }
    remove_extra_nodes(client).await?;
    let find = |name: &str| runs.iter().find(|r| r.controller == name);
    let ratios = match (find("phaseloop"), find("argo-rollouts")) {
        (Some(p), Some(a)) => ratios(p, a),
        _ => Vec::new(),
    };
    Ok(PeersReport {
        apps: run.apps,
        namespaces: run.namespaces(),
        replicas: run.replicas,
        steps: canary_steps(run).iter().map(|s| s.to_string()).collect(),
        analysis_apps: run.analysed_apps(),
        analysis_interval_s: run.analysis_interval.as_secs_f64(),
        runs,
        ratios,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> PeersRun {
        PeersRun {
            apps: 25,
            per_namespace: 10,
            replicas: 4,
            pause: Duration::from_secs(10),
            analysis_every: 10,
            analysis_interval: Duration::from_secs(10),
            controllers: vec![Peer::ArgoRollouts, Peer::Phaseloop],
            timeout: Duration::from_secs(60),
            prometheus_url: "http://127.0.0.1:19090".into(),
        }
    }

    fn report(rss: f64, cpu: f64, requests: u64, seconds: f64) -> PeerReport {
        PeerReport {
            rss_steady_mib: rss,
            rollout: PhaseReport {
                cpu_s: cpu,
                seconds,
                requests: Counts { total: requests, workload: requests, ..Default::default() },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn ratios_are_phaseloop_over_argo_and_judged_against_the_goals() {
        let r = ratios(&report(20.0, 10.0, 3000, 120.0), &report(100.0, 40.0, 5000, 100.0));
        let get = |f: &str| r.iter().find(|x| x.figure.starts_with(f)).unwrap().clone();
        let rss = get("RSS steady");
        assert_eq!(
            (rss.phaseloop, rss.argo_rollouts, rss.ratio, rss.goal, rss.met),
            (20.0, 100.0, Some(0.2), Some(0.2), Some(true))
        );
        let cpu = get("CPU seconds, v1");
        assert_eq!((cpu.ratio, cpu.met), (Some(0.25), Some(true)));
        let req = get("API requests, v1");
        assert_eq!((req.ratio, req.met), (Some(0.6), Some(false)), "0.6 > 0.5: missed");
        let time = get("time to all on v2");
        assert_eq!((time.ratio, time.met), (Some(1.2), Some(false)));
        // No goal: no verdict; Argo at 0: no ratio.
        let idle = get("RSS idle");
        assert_eq!((idle.ratio, idle.goal, idle.met), (None, None, None));
        // The report survives its JSON (what target/bench/peers.json holds).
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Ratio>>(&json).unwrap(), r);
    }

    #[test]
    fn both_workloads_carry_the_same_replicas_steps_pods_and_analysis() {
        let run = run();
        let rel = phaseloop_release(&run, 20, "v2", true);
        let ro = argo_rollout(&run, 20, "v2", true);
        assert_eq!(rel["metadata"]["namespace"], "peers-0002");
        assert_eq!(ro["metadata"]["namespace"], "peers-0002");
        assert_eq!(rel["spec"]["replicas"], ro["spec"]["replicas"]);
        assert_eq!(rel["spec"]["template"], ro["spec"]["template"]);
        assert_eq!(rel["spec"]["strategy"]["canary"]["steps"], ro["spec"]["strategy"]["canary"]["steps"]);
        assert_eq!(
            ro["spec"]["strategy"]["canary"]["steps"],
            json!([{"setWeight": 25}, {"pause": {"duration": "10s"}}, {"setWeight": 50}, {"pause": {"duration": "10s"}}])
        );
        assert_eq!(rel["spec"]["strategy"]["revertWindow"], "0s");
        assert_eq!(rel["spec"]["strategy"]["analysis"]["interval"], "10s");
        let template = argo_template(&run, "peers-0002");
        assert_eq!(template["spec"]["metrics"][0]["interval"], "10s");
        assert_eq!(template["spec"]["metrics"][0]["provider"]["prometheus"]["query"], ANALYSIS_QUERY);
        assert_eq!(rel["spec"]["strategy"]["analysis"]["metrics"][0]["query"], ANALYSIS_QUERY);
        // v1: straight to 100% for both (no steps for phaseloop; Argo skips them on a first revision).
        assert_eq!(
            phaseloop_release(&run, 0, "v1", false)["spec"]["strategy"],
            json!({"type": "Rolling", "progressDeadline": "3600s"})
        );
        assert_eq!(rel["spec"]["strategy"]["progressDeadline"], "3600s");
        assert_eq!(ro["spec"]["progressDeadlineSeconds"], 3600);
        assert!(argo_rollout(&run, 0, "v2", false)["spec"]["strategy"]["canary"].get("analysis").is_none());
        assert_eq!((0..25).filter(|j| run.analysed(*j)).collect::<Vec<_>>(), [0, 10, 20]);
        assert_eq!(run.namespaces(), 3);
    }

    fn pod(version: &str, ready: bool, terminating: bool, extra: &[(&str, &str)]) -> PodView {
        let mut labels = BTreeMap::from([("app.kubernetes.io/name".to_string(), "app-00001".to_string())]);
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        PodView { labels, image: format!("bench:{version}"), ready, terminating }
    }

    #[test]
    fn an_app_serves_a_version_when_every_selected_serving_pod_runs_it() {
        let by_name = BTreeMap::from([("app.kubernetes.io/name".to_string(), "app-00001".to_string())]);
        let v2 = || (0..4).map(|_| pod("v2", true, false, &[])).collect::<Vec<_>>();
        assert!(serves(&by_name, &v2(), "bench:v2", 4));
        // A v1 pod still selected and ready: not yet.
        let mut mixed = v2();
        mixed.push(pod("v1", true, false, &[]));
        assert!(!serves(&by_name, &mixed, "bench:v2", 4));
        // Terminating or unready v1 pods take no traffic.
        let mut leaving = v2();
        leaving.push(pod("v1", true, true, &[]));
        leaving.push(pod("v1", false, false, &[]));
        assert!(serves(&by_name, &leaving, "bench:v2", 4));
        // Too few ready v2 pods.
        assert!(!serves(&by_name, &v2()[..3], "bench:v2", 4));
        // A v1 pod the Service no longer selects (phaseloop's version label) does not count.
        let by_version = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "app-00001".to_string()),
            ("app.kubernetes.io/version".to_string(), "v2".to_string()),
        ]);
        let mut warm: Vec<PodView> =
            (0..4).map(|_| pod("v2", true, false, &[("app.kubernetes.io/version", "v2")])).collect();
        warm.push(pod("v1", true, false, &[("app.kubernetes.io/version", "v1")]));
        assert!(serves(&by_version, &warm, "bench:v2", 4));
        assert!(!serves(&BTreeMap::new(), &warm, "bench:v2", 4), "no Service: nothing served");
    }

    #[test]
    fn controller_manager_work_is_the_difference_of_two_scrapes() {
        let a = Scrape::parse(
            "workqueue_adds_total{name=\"deployment\"} 10\nworkqueue_queue_duration_seconds_sum{name=\"deployment\"} 5\n\
             workqueue_queue_duration_seconds_count{name=\"deployment\"} 10\n\
             rest_client_requests_total{code=\"200\",host=\"127.0.0.1:1\",method=\"PUT\"} 100\n",
        );
        let b = Scrape::parse(
            "workqueue_adds_total{name=\"deployment\"} 30\nworkqueue_queue_duration_seconds_sum{name=\"deployment\"} 65\n\
             workqueue_queue_duration_seconds_count{name=\"deployment\"} 30\n\
             rest_client_requests_total{code=\"200\",host=\"127.0.0.1:1\",method=\"PUT\"} 150\n\
             rest_client_requests_total{code=\"201\",host=\"127.0.0.1:1\",method=\"POST\"} 20\n",
        );
        let w = KcmWork::between(&a, &b);
        assert_eq!((w.requests, w.deployment_syncs, w.deployment_queue_wait_s), (70.0, 20.0, 3.0));
        assert_eq!((w.replicaset_syncs, w.replicaset_queue_wait_s), (0.0, 0.0));
    }

    #[test]
    fn node_capacity_reads_quantities() {
        assert_eq!(
            (count("5k"), count("5000"), count("1M"), count("x")),
            (Some(5000), Some(5000), Some(1_000_000), None)
        );
    }

    #[test]
    fn requests_are_about_an_app_by_name() {
        assert!(about("app-00001", "app-00001"));
        assert!(about("app-00001-v2", "app-00001"));
        assert!(about("app-00001-6d4f9c", "app-00001"));
        assert!(!about("app-000010", "app-00001"));
        assert!(!about("app-00002-v2", "app-00001"));
    }
}
