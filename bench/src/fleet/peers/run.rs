//! The run of one controller: its phases measured from outside (memory and CPU, API requests,
//! time to all on the new version, first write), the restart's re-list, and what it is measured with.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::time::Instant;

use super::{
    LABEL, Peer, PeersRun, clean,
    observer::{AppKey, Observer},
    progress,
    report::{KcmWork, PeerReport, PhaseReport},
    workload::{app, argo_service, argo_template, namespace, workload},
};
use phaseloop_e2e::{
    audit::{AuditLog, Counts, Request},
    repo_root,
};

use crate::{
    fleet::{CREATE_CONCURRENCY, Scrape, apply_json, process::PidFile},
    stats::Summary,
};

/// How long a controller must send nothing but leader election to count as quiet.
const QUIET: Duration = Duration::from_secs(5);

/// The controller-manager's `/metrics` (an always-allowed path on 127.0.0.1, its serving
/// certificate signed by the cluster's CA).
pub(super) struct Kcm {
    url: String,
    http: reqwest::Client,
}

impl Kcm {
    pub(super) fn from_env() -> Option<Self> {
        let state = std::env::var("E2E_STATE").ok()?;
        let port = std::env::var("E2E_KCM_PORT").unwrap_or_else(|_| "11257".into());
        let ca = reqwest::Certificate::from_pem(&std::fs::read(PathBuf::from(state).join("pki/ca.crt")).ok()?).ok()?;
        let http = reqwest::Client::builder().add_root_certificate(ca).build().ok()?;
        Some(Kcm { url: format!("https://127.0.0.1:{port}/metrics"), http })
    }

    pub(super) async fn scrape(&self) -> Scrape {
        let text = async { self.http.get(&self.url).send().await?.error_for_status()?.text().await };
        Scrape::parse(&text.await.unwrap_or_default())
    }
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
    let mut by_ns: HashMap<&str, Vec<&Request>> = HashMap::new();
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

pub(super) async fn run_one(
    client: &Client,
    run: &PeersRun,
    peer: Peer,
    observer: &Observer,
) -> anyhow::Result<PeerReport> {
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
    progress(&format!("{}: all on v2 in {:.1}s", peer.name(), report.rollout.seconds));

    if run.analysis_round {
        progress(&format!("{}: v2 → v3 with analysis on {} apps", peer.name(), run.analysed_apps()));
        let objects = (0..run.apps).map(|j| (j, workload(run, peer, j, "v3", run.analysed(j)))).collect();
        report.analysis = phase(&cx, &mut audit, "bench:v3", objects).await?;
        report.rss_steady_v3_mib = proc.mean_rss(Duration::from_secs(5)).await / MIB;
        progress(&format!("{}: all on v3 in {:.1}s", peer.name(), report.analysis.seconds));
    }
    report.rss_peak_mib = report.setup.rss_peak_mib.max(report.rollout.rss_peak_mib).max(report.analysis.rss_peak_mib);
    progress(&format!("{}: restart and re-list", peer.name()));

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

    // Deleted while the controller still runs: phaseloop's serving Releases keep a finalizer that
    // it lets go of when their namespace goes (with it stopped, the namespaces never would).
    progress(&format!("{}: deleting its apps; then stopping", peer.name()));
    clean(client, observer).await?;
    peer.run("stop").await?;
    Ok(report)
}

/// Samples in the last scrape of `peer`'s metrics and its duration (ms), from Prometheus.
async fn scrape_of(peer: Peer) -> (f64, f64) {
    let value = |q: String| async move {
        let r = phaseloop_e2e::prom_query(&q).await.ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_about_an_app_by_name() {
        assert!(about("app-00001", "app-00001"));
        assert!(about("app-00001-v2", "app-00001"));
        assert!(about("app-00001-6d4f9c", "app-00001"));
        assert!(!about("app-000010", "app-00001"));
        assert!(!about("app-00002-v2", "app-00001"));
    }
}
