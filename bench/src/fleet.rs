//! The fleet benchmark: N Environments and M Releases brought Live by the operator, against the
//! same namespaces, Deployments and Services applied directly (the baseline), in the same run.
//! It also reads the operator's cost: resident memory (idle, steady, peak during a restart's
//! re-list), CPU seconds, API requests per object, reconcile and watch-to-reconcile latency, and
//! the writes of a no-op resync (which must be none).
//!
//! The operator runs as a host process (`e2e/scripts/run-operator.sh`): its memory and CPU are
//! read from `/proc`, its metrics from `127.0.0.1:$PHASELOOP_METRICS_PORT`.
//!
//! `peers` runs the same kind of fleet side by side with Argo Rollouts; `process` and the e2e
//! crate's `audit` are the measurements they share (memory and CPU from `/proc`, requests from the
//! audit log).

mod operator;
pub mod peers;
pub mod process;
mod scrape;

pub use operator::Operator;
pub use scrape::{Quantiles, Scrape, histogram_quantile};

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Service},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use phaseloop::{
    api::{Environment, Release, ReleasePhase},
    controller::release::workload,
};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

/// Label on every object the benchmark creates, with the run's role as value.
const LABEL: &str = "bench.phaseloop.dev/fleet";
/// Creations in flight at once (for the baseline and for phaseloop alike).
const CREATE_CONCURRENCY: usize = 16;

/// How one fleet benchmark runs.
#[derive(Clone, Debug, Serialize)]
pub struct FleetRun {
    pub environments: usize,
    pub releases: usize,
    /// Restart the operator at the end and measure the re-list (peak memory, no-op writes).
    pub restart: bool,
    /// Releases touched (an annotation that changes nothing) to time watch-to-reconcile at size.
    pub touches: usize,
    /// How long to wait for everything to be Live (or available, for the baseline).
    pub timeout: Duration,
}

/// What one fleet benchmark measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetReport {
    pub environments: usize,
    pub releases: usize,
    /// Namespaces, Deployments and Services applied directly, until every Deployment is available.
    pub baseline_s: f64,
    /// Environments and Releases applied, until every Release is Live.
    pub phaseloop_s: f64,
    /// `phaseloop_s / baseline_s`.
    pub overhead_ratio: f64,
    pub rss_idle_mib: f64,
    /// After everything is Live and settled.
    pub rss_steady_mib: f64,
    /// Highest during the phaseloop run.
    pub rss_peak_run_mib: f64,
    /// Highest from a restart until every object is reconciled again.
    pub rss_peak_relist_mib: f64,
    pub relist_peak_over_steady: f64,
    /// Restart to every object reconciled again.
    pub relist_s: f64,
    /// Operator CPU during the phaseloop run.
    pub cpu_s: f64,
    pub cpu_ms_per_object: f64,
    /// API requests of the operator during the run, per Environment or Release, by verb.
    pub requests_per_object: f64,
    pub writes_per_object: f64,
    pub requests_by_verb: BTreeMap<String, f64>,
    /// The same by `verb resource`.
    pub requests_by_resource: BTreeMap<String, f64>,
    pub reconcile_ms: BTreeMap<String, Quantiles>,
    /// During the run (creation: every object changes several times).
    pub watch_to_reconcile_run_ms: Quantiles,
    /// Touches of Live Releases with everything present.
    pub watch_to_reconcile_touch_ms: Quantiles,
    /// Writes of the operator to the fleet's kinds while every touched Release reconciled (must be 0).
    pub noop_touch_writes: f64,
    /// Writes of the restarted operator to the fleet's kinds while it reconciled everything again
    /// (must be 0; `relist_requests` has every request).
    pub noop_relist_writes: f64,
    /// Requests of the restarted operator during the re-list, by `verb resource`.
    pub relist_requests: BTreeMap<String, f64>,
    pub relist_reconciles: f64,
}

// ---------------------------------------------------------------------------------------------
// The objects.

fn env_name(i: usize) -> String {
    format!("fleet-{i:04}")
}

fn base_namespace(i: usize) -> String {
    format!("fleet-base-{i:04}")
}

/// Release `j`, in the namespace of Environment `j % environments`.
fn release(j: usize, environments: usize) -> serde_json::Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("app-{j:05}-v1"), "namespace": env_name(j % environments), "labels": {LABEL: "release"}},
        "spec": {"app": format!("app-{j:05}"), "version": "v1", "replicas": 1,
                 "template": {"spec": phaseloop_e2e::restricted(json!({"containers": [{"name": "app", "image": "bench:v1"}]}))},
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]}}})
}

/// What the operator makes of Release `j`, made by phaseloop's own functions, applied directly:
/// the same Deployment and Service, without the owner reference (no Release owns them) and
/// without the managed-by label (the operator must not see them).
fn baseline_objects(j: usize, environments: usize) -> anyhow::Result<(Deployment, Service)> {
    let mut rel: Release = serde_json::from_value(release(j, environments))?;
    rel.metadata.namespace = Some(base_namespace(j % environments));
    rel.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let mut d = workload::deployment(&rel, 1);
    let ports = rel.spec.service.as_ref().context("the release has a service")?;
    let mut s = workload::service(&[&rel], &rel.spec.app, ports, workload::selector(&rel));
    for meta in [&mut d.metadata, &mut s.metadata] {
        meta.owner_references = None;
        let labels = meta.labels.get_or_insert_with(Default::default);
        labels.remove(phaseloop::api::label::MANAGED_BY);
        labels.insert(LABEL.into(), "baseline".into());
    }
    Ok((d, s))
}

async fn apply<K>(api: &Api<K>, obj: &K) -> anyhow::Result<()>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PatchParams::apply("phaseloop-bench").force();
    api.patch(&obj.meta().name.clone().unwrap_or_default(), &params, &Patch::Apply(obj)).await?;
    Ok(())
}

/// Applies `value` (retrying while its namespace does not exist yet: phaseloop creates it).
async fn apply_json(client: &Client, value: &serde_json::Value, deadline: Instant) -> anyhow::Result<()> {
    let obj: kube::api::DynamicObject = serde_json::from_value(value.clone())?;
    let ns = obj.namespace();
    let (group, version) = match obj.types.as_ref().map(|t| t.api_version.as_str()).unwrap_or("v1").split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), "v1".to_string()),
    };
    let kind = obj.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(&group, &version, &kind));
    let api: Api<kube::api::DynamicObject> = match &ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    loop {
        match apply(&api, &obj).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.to_string().contains("not found") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e.context(format!("applying {}", obj.name_any()))),
        }
    }
}

/// Waits until `done` holds for `count` objects of the watch, returning when it did.
async fn until_count<K>(
    api: Api<K>,
    selector: String,
    count: usize,
    deadline: Instant,
    done: impl Fn(&K) -> bool,
) -> anyhow::Result<Instant>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut ready: HashSet<String> = HashSet::new();
    let events = watcher(api, watcher::Config::default().labels(&selector)).default_backoff().applied_objects();
    let mut events = std::pin::pin!(events);
    loop {
        let next = tokio::time::timeout_at(deadline, events.try_next()).await;
        let Ok(next) = next else { bail!("{} of {count} ready by the deadline", ready.len()) };
        let Some(obj) = next? else { bail!("watch ended") };
        let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
        if done(&obj) {
            ready.insert(key);
        } else {
            ready.remove(&key);
        }
        if ready.len() >= count {
            return Ok(Instant::now());
        }
    }
}

fn available(d: &Deployment) -> bool {
    let want = d.spec.replicas.unwrap_or(1);
    d.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
            && s.available_replicas.unwrap_or(0) >= want
    })
}

fn live(r: &Release) -> bool {
    r.status.as_ref().and_then(|s| s.phase) == Some(ReleasePhase::Live)
}

/// Deletes what a run created and waits (bounded) until the namespaces are gone.
pub async fn clean(client: &Client) -> anyhow::Result<()> {
    let selector = LABEL;
    let lp = ListParams::default().labels(selector);
    let envs: Api<Environment> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for e in envs.list(&lp).await?.items {
        let _ = envs.delete(&e.name_any(), &DeleteParams::background()).await;
    }
    for n in namespaces.list(&lp).await?.items {
        let _ = namespaces.delete(&n.name_any(), &DeleteParams::background()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let left = envs.list(&lp).await?.items.len()
            + namespaces.list(&ListParams::default().labels(selector)).await?.items.len()
            + namespaces
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|n| n.name_any().starts_with("fleet-"))
                .count();
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("fleet objects still present after 10 minutes")
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Waits until no reconcile has run for `quiet` (at most `limit`).
async fn settle(op: &Operator, quiet: Duration, limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    let mut last = op.scrape().await.map(|s| s.sum("phaseloop_reconciles_total", &[])).unwrap_or(-1.0);
    let mut since = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = op.scrape().await.map(|s| s.sum("phaseloop_reconciles_total", &[])).unwrap_or(-1.0);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet {
            return Ok(());
        }
    }
    Ok(())
}

/// Samples the resident memory every 20ms until `stop` resolves; returns the highest.
async fn peak_rss_while<F: std::future::Future>(op: &Operator, stop: F) -> (F::Output, u64) {
    op.proc.peak_rss_while(stop).await
}

const MIB: f64 = 1024.0 * 1024.0;

pub async fn fleet(client: &Client, run: &FleetRun) -> anyhow::Result<FleetReport> {
    let op = Operator::from_env()?;
    let (n, m) = (run.environments, run.releases);
    anyhow::ensure!(n > 0 && m >= n, "at least one Environment and one Release per Environment");
    progress("cleaning up earlier runs; idle memory of a fresh operator");
    clean(client).await?;
    let mut report = FleetReport { environments: n, releases: m, ..Default::default() };
    if run.restart {
        anyhow::ensure!(op.restart().await?.wait().await?.success(), "run-operator.sh start failed");
    }
    settle(&op, Duration::from_secs(3), Duration::from_secs(60)).await?;
    report.rss_idle_mib = op.mean_rss(Duration::from_secs(3)).await / MIB;

    // Baseline: what phaseloop would create, applied directly.
    let t0 = Instant::now();
    let deadline = t0 + run.timeout;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let baseline_ready = tokio::spawn(until_count(
        Api::<Deployment>::all(client.clone()),
        format!("{LABEL}=baseline"),
        m,
        deadline,
        available,
    ));
    stream::iter(0..n)
        .map(|i| {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": base_namespace(i), "labels": {LABEL: "baseline"}}}))
                    .expect("valid namespace");
            let api = namespaces.clone();
            async move { apply(&api, &ns).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(0..m)
        .map(|j| async move {
            let (d, s) = baseline_objects(j, n)?;
            let ns = d.namespace().unwrap_or_default();
            apply(&Api::<Deployment>::namespaced(client.clone(), &ns), &d).await?;
            apply(&Api::<Service>::namespaced(client.clone(), &ns), &s).await
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let done = baseline_ready.await??;
    report.baseline_s = done.duration_since(t0).as_secs_f64();
    progress(&format!("baseline: {m} Deployments available in {:.1}s; cleaning up", report.baseline_s));
    clean(client).await?;
    progress("phaseloop: creating Environments and Releases");
    settle(&op, Duration::from_secs(3), Duration::from_secs(60)).await?;

    // phaseloop: Environments, then Releases in their namespaces, until every Release is Live.
    let before = op.scrape().await?;
    let cpu_before = op.cpu_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    let deadline = t0 + run.timeout;
    let all_live = until_count(Api::<Release>::all(client.clone()), format!("{LABEL}=release"), m, deadline, live);
    let create = async {
        stream::iter(0..n)
            .map(|i| {
                let env = json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
                    "metadata": {"name": env_name(i), "labels": {LABEL: "environment"}},
                    "spec": {"tier": "development"}});
                async move { apply_json(client, &env, deadline).await }
            })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        stream::iter(0..m)
            .map(|j| async move { apply_json(client, &release(j, n), deadline).await })
            .buffer_unordered(CREATE_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
    };
    let ((created, done), peak) = peak_rss_while(&op, async { tokio::join!(create, all_live) }).await;
    created?;
    report.phaseloop_s = done?.duration_since(t0).as_secs_f64();
    report.overhead_ratio = report.phaseloop_s / report.baseline_s;
    report.rss_peak_run_mib = peak as f64 / MIB;
    settle(&op, Duration::from_secs(3), Duration::from_secs(120)).await?;
    let after = op.scrape().await?;
    report.cpu_s = op.cpu_seconds().unwrap_or(0.0) - cpu_before;
    let objects = (n + m) as f64;
    report.cpu_ms_per_object = report.cpu_s * 1000.0 / objects;
    report.requests_by_verb = after.requests_since(&before).into_iter().map(|(k, v)| (k, v / objects)).collect();
    report.requests_by_resource =
        after.requests_by_resource_since(&before).into_iter().map(|(k, v)| (k, v / objects)).collect();
    report.requests_per_object = report.requests_by_verb.values().sum();
    report.writes_per_object = report
        .requests_by_verb
        .iter()
        .filter(|(verb, _)| phaseloop::metrics::requests::is_write(verb))
        .map(|(_, v)| v)
        .sum();
    for controller in ["environment", "release"] {
        let with = format!("controller=\"{controller}\"");
        let q = after.quantiles_since(&before, "phaseloop_reconcile_duration_seconds", &[&with]);
        report.reconcile_ms.insert(controller.into(), ms(q));
    }
    report.watch_to_reconcile_run_ms = ms(after.quantiles_since(&before, "phaseloop_watch_to_reconcile_seconds", &[]));
    report.rss_steady_mib = op.mean_rss(Duration::from_secs(5)).await / MIB;
    progress(&format!("phaseloop: {m} Releases Live in {:.1}s; touching {} of them", report.phaseloop_s, run.touches));

    // Touches: an annotation on Live Releases, which changes nothing phaseloop writes.
    let before = op.scrape().await?;
    let touches = run.touches.min(m);
    for j in 0..touches {
        let api: Api<Release> = Api::namespaced(client.clone(), &env_name(j % n));
        let patch = json!({"metadata": {"annotations": {"bench.phaseloop.dev/touch": j.to_string()}}});
        api.patch(&format!("app-{j:05}-v1"), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(&op, Duration::from_secs(2), Duration::from_secs(60)).await?;
    let after = op.scrape().await?;
    report.watch_to_reconcile_touch_ms =
        ms(after.quantiles_since(&before, "phaseloop_watch_to_reconcile_seconds", &["controller=\"release\""]));
    report.noop_touch_writes = fleet_writes(&after.requests_by_resource_since(&before));

    // Restart: the re-list reconciles everything again, and must write nothing.
    if run.restart {
        progress("restarting the operator: re-list");
        let old = op.pid();
        let t0 = Instant::now();
        let mut script = op.restart().await?;
        // The new process, sampled from its first moments (the old one must not count).
        while op.pid() == old || op.pid().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let relist = async {
            let status = script.wait().await?;
            anyhow::ensure!(status.success(), "run-operator.sh start failed");
            settle(&op, Duration::from_secs(3), Duration::from_secs(300)).await
        };
        let (result, peak) = peak_rss_while(&op, relist).await;
        result?;
        report.relist_s = t0.elapsed().as_secs_f64() - 3.0;
        report.rss_peak_relist_mib = peak as f64 / MIB;
        report.relist_peak_over_steady = report.rss_peak_relist_mib / report.rss_steady_mib;
        let after = op.scrape().await?;
        report.noop_relist_writes = fleet_writes(&after.requests_by_resource_since(&Scrape::default()));
        report.relist_requests = after.requests_by_resource_since(&Scrape::default());
        report.relist_reconciles = after.sum("phaseloop_reconciles_total", &[]);
    }
    progress("cleaning up");
    clean(client).await?;
    Ok(report)
}

fn progress(what: &str) {
    eprintln!("[{}] fleet: {what}", jiff::Zoned::now().strftime("%H:%M:%S"));
}

fn ms(q: Quantiles) -> Quantiles {
    Quantiles { n: q.n, p50: q.p50 * 1000.0, p99: q.p99 * 1000.0 }
}

/// What the fleet's objects make phaseloop write: objects of other kinds (the infrastructure
/// components of an Environment left by another test, say) are not the fleet's.
const FLEET_RESOURCES: &[&str] = &[
    "namespaces",
    "deployments",
    "services",
    "releases",
    "releases/status",
    "environments",
    "environments/status",
    "events",
];

/// Writes among `by_resource` (`verb resource`) to the fleet's kinds.
fn fleet_writes(by_resource: &BTreeMap<String, f64>) -> f64 {
    by_resource
        .iter()
        .filter_map(|(k, n)| Some((k.split_once(' ')?, n)))
        .filter(|((verb, resource), _)| {
            phaseloop::metrics::requests::is_write(verb) && FLEET_RESOURCES.contains(resource)
        })
        .map(|(_, n)| n)
        .sum::<f64>()
        + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_give_deltas_by_verb_and_histogram_quantiles() {
        let before = Scrape::parse(
            "# HELP x\nphaseloop_kube_requests_total{resource=\"releases\",verb=\"list\"} 2\n\
             phaseloop_watch_to_reconcile_seconds_bucket{controller=\"release\",le=\"0.01\"} 1\n\
             phaseloop_watch_to_reconcile_seconds_bucket{controller=\"release\",le=\"+Inf\"} 1\n",
        );
        let after = Scrape::parse(
            "phaseloop_kube_requests_total{resource=\"releases\",verb=\"list\"} 5\n\
             phaseloop_kube_requests_total{resource=\"deployments\",verb=\"patch\"} 4\n\
             phaseloop_kube_requests_total{resource=\"leases\",verb=\"update\"} 9\n\
             phaseloop_watch_to_reconcile_seconds_bucket{controller=\"release\",le=\"0.01\"} 3\n\
             phaseloop_watch_to_reconcile_seconds_bucket{controller=\"release\",le=\"+Inf\"} 3\n",
        );
        let by_verb = after.requests_since(&before);
        assert_eq!(by_verb.get("list"), Some(&3.0));
        assert_eq!(by_verb.get("patch"), Some(&4.0));
        assert_eq!(by_verb.get("update"), None, "the Lease is not the workload's");
        let by_resource = after.requests_by_resource_since(&before);
        assert_eq!(fleet_writes(&by_resource), 4.0, "{by_resource:?}");
        let other = BTreeMap::from([("patch configmaps".to_string(), 2.0), ("list releases".to_string(), 1.0)]);
        assert_eq!(fleet_writes(&other), 0.0, "a ConfigMap is not the fleet's; a list is no write");
        let q = after.quantiles_since(&before, "phaseloop_watch_to_reconcile_seconds", &[]);
        assert_eq!(q.n, 2.0);
        assert!(q.p99 <= 0.01 && q.p50 > 0.0);
    }

    #[test]
    fn the_baseline_is_what_phaseloop_would_create_minus_ownership() {
        let (d, s) = baseline_objects(7, 3).unwrap();
        assert_eq!(d.namespace().as_deref(), Some("fleet-base-0001"));
        assert_eq!(d.name_any(), "app-00007-v1");
        assert!(d.metadata.owner_references.is_none() && s.metadata.owner_references.is_none());
        assert_eq!(d.labels().get(LABEL).map(String::as_str), Some("baseline"));
        assert!(!d.labels().contains_key(phaseloop::api::label::MANAGED_BY));
        assert_eq!(s.name_any(), "app-00007");
    }
}
