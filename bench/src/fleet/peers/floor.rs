//! The floor: the same apps and the same canary steps done by a script with the fewest writes
//! the cluster allows — per app, a ReplicaSet per version created once and then only scaled, no
//! status, no decisions, no controller process. What it takes is what the controller-manager,
//! the scheduler and the kwok node need for these pod changes alone, so each controller's time is
//! also read as a ratio to it. It runs first, before either controller, on the same cluster.
//!
//! Per app and version change: create the new ReplicaSet at the first step's share, scale the old
//! one down by as much, wait until the new one has that many Ready pods, pause; the same for each
//! later step; then the new one at full size and the old one at zero. The app is done when the
//! pods its Service selects are all of the new version (the same observer as for the controllers).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Namespace};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use super::{
    KcmWork, LABEL, PeersRun, WEIGHTS, clean,
    observer::{AppKey, Observer},
    progress,
    run::Kcm,
    workload::{app, argo_service, namespace},
};
use crate::{
    fleet::{CREATE_CONCURRENCY, apply_json},
    stats::Summary,
};

/// One phase of the floor.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloorPhase {
    /// From the first write to every app serving the new version.
    pub seconds: f64,
    pub app_seconds: Summary,
    /// The script's writes (ReplicaSet creates and scales).
    pub writes: usize,
    pub controller_manager: KcmWork,
}

/// What the floor measured at one size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloorReport {
    pub setup: FloorPhase,
    /// v1 → v2, the same steps as the controllers' headline round.
    pub rollout: FloorPhase,
    /// v2 → v3, the same steps (the floor has no analysis to wait for).
    pub analysis: FloorPhase,
}

/// Pods of a version at each step: the new version's share rounded up, as both controllers split
/// replica counts (25% of 4 is 1 + 3).
pub fn step_counts(replicas: i32) -> Vec<(i32, i32)> {
    let mut steps: Vec<(i32, i32)> = WEIGHTS
        .iter()
        .map(|w| {
            let new = ((replicas * w + 99) / 100).clamp(1, replicas);
            (new, replicas - new)
        })
        .collect();
    steps.push((replicas, 0));
    steps
}

fn replica_set(run: &PeersRun, j: usize, version: &str, replicas: i32) -> serde_json::Value {
    let labels = json!({"app.kubernetes.io/name": app(j), "bench.phaseloop.dev/version": version});
    let mut pod_labels = labels.clone();
    pod_labels[LABEL] = json!("pod");
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("{}-{version}", app(j)), "namespace": namespace(run, j), "labels": {LABEL: "floor"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": pod_labels},
                              "spec": {"containers": [{"name": "app", "image": format!("bench:{version}")}]}}}})
}

/// Ready pods of each floor ReplicaSet, by (namespace, name), kept current by a watch.
struct Ready(reflector::Store<ReplicaSet>);

impl Ready {
    fn start(client: &Client) -> Self {
        let (store, writer) = reflector::store();
        let rs = watcher(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default().labels(&format!("{LABEL}=floor")),
        )
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each(|_| async {});
        tokio::spawn(rs);
        Ready(store)
    }

    fn count(&self, ns: &str, name: &str) -> i32 {
        let key = reflector::ObjectRef::new(name).within(ns);
        self.0.get(&key).and_then(|rs| rs.status.as_ref().and_then(|s| s.ready_replicas)).unwrap_or(0)
    }

    async fn until(&self, ns: &str, name: &str, ready: i32, deadline: Instant) -> anyhow::Result<()> {
        while self.count(ns, name) < ready {
            anyhow::ensure!(Instant::now() < deadline, "{ns}/{name}: fewer than {ready} pods Ready by the deadline");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

async fn scale(api: &Api<ReplicaSet>, name: &str, replicas: i32) -> anyhow::Result<()> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}}))).await?;
    Ok(())
}

/// One app from `from` (None: a first version, created at full size) to `to`; its writes.
async fn step_app(
    client: &Client,
    run: &PeersRun,
    ready: &Ready,
    j: usize,
    from: Option<&str>,
    to: &str,
    deadline: Instant,
) -> anyhow::Result<usize> {
    let ns = namespace(run, j);
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let new = format!("{}-{to}", app(j));
    let Some(from) = from else {
        let rs = serde_json::from_value(replica_set(run, j, to, run.replicas))?;
        api.create(&PostParams::default(), &rs).await?;
        return Ok(1);
    };
    let old = format!("{}-{from}", app(j));
    let steps = step_counts(run.replicas);
    let mut writes = 0;
    for (i, (n_new, n_old)) in steps.iter().copied().enumerate() {
        if i == 0 {
            let rs = serde_json::from_value(replica_set(run, j, to, n_new))?;
            api.create(&PostParams::default(), &rs).await?;
        } else {
            scale(&api, &new, n_new).await?;
        }
        scale(&api, &old, n_old).await?;
        writes += 2;
        if i + 1 < steps.len() {
            ready.until(&ns, &new, n_new, deadline).await?;
            tokio::time::sleep(run.pause).await;
        }
    }
    Ok(writes)
}

async fn phase(
    client: &Client,
    run: &PeersRun,
    ready: &Ready,
    observer: &Observer,
    kcm: Option<&Kcm>,
    from: Option<&str>,
    to: &str,
) -> anyhow::Result<FloorPhase> {
    let kcm0 = match kcm {
        Some(k) => k.scrape().await,
        None => Default::default(),
    };
    let apps: Vec<AppKey> = (0..run.apps).map(|j| (namespace(run, j), app(j))).collect();
    let i0 = Instant::now();
    let deadline = i0 + run.timeout;
    // Every app at once, as a controller's workers would; the API server's own limits apply.
    let work = stream::iter(0..run.apps)
        .map(|j| step_app(client, run, ready, j, from, to, deadline))
        .buffer_unordered(run.apps)
        .try_fold(0, |sum, w| async move { Ok(sum + w) });
    let image = format!("bench:{to}");
    let (writes, done) = tokio::join!(work, observer.wait_all(&apps, &image, run.replicas, deadline));
    let writes = writes?;
    let (all, per_app) = done?;
    // Every app starts with the phase: its time is from the phase's start.
    let app_seconds: Vec<f64> = per_app.iter().map(|d| d.duration_since(i0).as_secs_f64()).collect();
    Ok(FloorPhase {
        seconds: all.duration_since(i0).as_secs_f64(),
        app_seconds: Summary::of(&app_seconds),
        writes,
        controller_manager: match kcm {
            Some(k) => KcmWork::between(&kcm0, &k.scrape().await),
            None => KcmWork::default(),
        },
    })
}

/// The floor at one size: setup, v1 → v2, and v2 → v3 when the controllers run that round too.
pub(super) async fn run_floor(client: &Client, run: &PeersRun, observer: &Observer) -> anyhow::Result<FloorReport> {
    let ready = Ready::start(client);
    let kcm = Kcm::from_env();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pp = PatchParams::apply("phaseloop-bench").force();
    for i in 0..run.namespaces() {
        let name = format!("peers-{i:04}");
        let ns =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {LABEL: "floor"}}});
        namespaces.patch(&name, &pp, &Patch::Apply(&ns)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    stream::iter((0..run.apps).map(|j| argo_service(run, j)))
        .map(|o| async move { apply_json(client, &o, deadline).await })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let mut report = FloorReport::default();
    progress(&format!("floor: setup, {} apps at v1", run.apps));
    report.setup = phase(client, run, &ready, observer, kcm.as_ref(), None, "v1").await?;
    progress(&format!("floor: setup in {:.1}s; v1 → v2", report.setup.seconds));
    report.rollout = phase(client, run, &ready, observer, kcm.as_ref(), Some("v1"), "v2").await?;
    progress(&format!("floor: all on v2 in {:.1}s", report.rollout.seconds));
    if run.analysis_round {
        report.analysis = phase(client, run, &ready, observer, kcm.as_ref(), Some("v2"), "v3").await?;
        progress(&format!("floor: all on v3 in {:.1}s", report.analysis.seconds));
    }
    progress("floor: deleting its apps");
    clean(client, observer).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::ResourceExt;

    use super::*;

    #[test]
    fn the_floor_splits_replicas_as_both_controllers_do() {
        assert_eq!(step_counts(4), vec![(1, 3), (2, 2), (4, 0)]);
        assert_eq!(step_counts(1), vec![(1, 0), (1, 0), (1, 0)]);
        assert_eq!(step_counts(10), vec![(3, 7), (5, 5), (10, 0)]);
    }

    #[test]
    fn a_floor_replica_set_selects_only_its_version_and_is_seen_by_the_observer() {
        let run = PeersRun::example();
        let rs: ReplicaSet = serde_json::from_value(replica_set(&run, 0, "v2", 1)).unwrap();
        let spec = rs.spec.clone();
        let selector = spec.selector.match_labels.unwrap();
        let pod_labels: BTreeMap<String, String> = spec.template.unwrap().metadata.unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "the template matches its selector");
        assert_eq!(selector.get("bench.phaseloop.dev/version").map(String::as_str), Some("v2"));
        assert_eq!(pod_labels.get(LABEL).map(String::as_str), Some("pod"), "the observer watches these pods");
        assert_eq!(rs.labels().get(LABEL).map(String::as_str), Some("floor"));
        assert_eq!(rs.name_any(), "app-00000-v2");
    }
}
