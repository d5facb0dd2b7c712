//! The soak benchmark (`make bench BENCH=soak`): ephemeral Environments, each with a Release, are
//! created, brought to Live and deleted, wave after wave; the operator's bookkeeping (the sizes on
//! `/metrics`, `phaseloop_bookkeeping_entries`) and its resident memory are read before and after.
//! Everything per object or per app must be forgotten once its object is gone: the sizes end where
//! they started. Its smoke run in the e2e suite runs a few waves and asserts exactly that; the
//! memory is reported, never asserted (`docs/performance.md` has the figures).

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;

use kube::{Api, Client};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use phaseloop_e2e::{create, eventually, kubectl, unique_suffix};

/// How a soak runs.
#[derive(Clone, Debug, Serialize)]
pub struct SoakRun {
    /// Environments in all, each with one Release.
    pub environments: usize,
    /// Created (and deleted) at a time.
    pub wave: usize,
    /// How long one wave may take.
    pub timeout: Duration,
}

/// What a soak measured.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub environments: usize,
    pub wave: usize,
    pub seconds: f64,
    /// Bookkeeping entries by map, before the first wave and after the last (once swept).
    pub entries_before: BTreeMap<String, f64>,
    pub entries_after: BTreeMap<String, f64>,
    /// Resident memory of the operator, MiB: before, the highest seen between waves, after.
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_mib: f64,
}

/// The bookkeeping sizes, by map.
pub async fn entries() -> anyhow::Result<BTreeMap<String, f64>> {
    let scrape = crate::fleet::Operator::from_env()?.scrape().await?;
    Ok(scrape.by_label("phaseloop_bookkeeping_entries", "map"))
}

/// The operator's resident memory, from `/proc` (as the fleet benchmark reads it): the process
/// collector's `process_resident_memory_bytes` is not there wherever the `procfs` crate cannot
/// open the process, and a missing series must not read as 0 MiB.
async fn rss_mib() -> anyhow::Result<f64> {
    let operator = crate::fleet::Operator::from_env()?;
    let bytes = operator.rss_bytes().context("the operator's resident memory (its pid file, /proc)")?;
    Ok(bytes as f64 / 1048576.0)
}

/// Waits until the operator's sweep (every 30 s) has run since now: the sizes then describe what
/// the caches hold now.
async fn swept() -> anyhow::Result<BTreeMap<String, f64>> {
    tokio::time::sleep(Duration::from_secs(35)).await;
    entries().await
}

/// Runs the soak (see the module documentation).
pub async fn soak(client: &Client, run: &SoakRun) -> anyhow::Result<SoakReport> {
    let started = Instant::now();
    let entries_before = swept().await?;
    let rss_before_mib = rss_mib().await?;
    let mut rss_peak_mib = rss_before_mib;
    let envs: Api<Environment> = Api::all(client.clone());
    let id = unique_suffix();
    let mut made = 0;
    while made < run.environments {
        let names: Vec<String> =
            (made..(made + run.wave).min(run.environments)).map(|i| format!("soak-{id}-{i}")).collect();
        for name in &names {
            create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
                "metadata": {"name": name, "labels": {"phaseloop.dev/e2e": "true"}},
                "spec": {"tier": "preview", "ttl": "1h"}}));
        }
        for name in &names {
            eventually(&format!("{name} Ready"), run.timeout, || async {
                let phase = envs.get(name).await.ok()?.status?.phase;
                (phase == Some(EnvironmentPhase::Ready)).then_some(())
            })
            .await?;
            create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
                "metadata": {"name": "app-1", "namespace": name},
                "spec": {"app": "app", "version": "1", "template": {"spec": phaseloop_e2e::restricted(json!({"containers": [{"name": "app", "image": "app:1"}]}))},
                         "service": {"ports": [{"port": 80}]}}}));
        }
        for name in &names {
            let rels: Api<Release> = Api::namespaced(client.clone(), name);
            eventually(&format!("{name}/app-1 Live"), run.timeout, || async {
                let phase = rels.get("app-1").await.ok()?.status?.phase;
                (phase == Some(ReleasePhase::Live)).then_some(())
            })
            .await?;
        }
        rss_peak_mib = rss_peak_mib.max(rss_mib().await?);
        for name in &names {
            let out = kubectl(&["delete", "environment", name, "--wait=false"]);
            anyhow::ensure!(out.ok, "delete {name}: {}", out.stderr);
        }
        for name in &names {
            eventually(&format!("{name} gone"), run.timeout, || async {
                envs.get_opt(name).await.ok()?.is_none().then_some(())
            })
            .await?;
        }
        made += names.len();
        // A line per wave, so a run cut short still says how far it got and how it stood.
        let now = entries().await.unwrap_or_default();
        let rss = rss_mib().await.unwrap_or_default();
        eprintln!(
            "soak: {made} of {} Environments came and went in {:.0} s; RSS {rss:.1} MiB; {now:?}",
            run.environments,
            started.elapsed().as_secs_f64()
        );
    }
    let entries_after = swept().await?;
    Ok(SoakReport {
        environments: run.environments,
        wave: run.wave,
        seconds: started.elapsed().as_secs_f64(),
        entries_before,
        entries_after,
        rss_before_mib,
        rss_peak_mib,
        rss_after_mib: rss_mib().await?,
    })
}
