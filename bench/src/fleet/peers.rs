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
//! Before both, the floor (`floor.rs`): the same steps scripted with the fewest writes, what the
//! cluster itself allows. Phases per controller: a fresh process idle; setup (every app at v1, straight to 100% for
//! both); v1 → v2 through the canary steps (the headline figures); v2 → v3 with a Prometheus
//! analysis on a subset of the apps; a restart and its re-list.

mod cluster;
mod floor;
mod observer;
mod report;
mod run;
mod workload;

pub use cluster::clean;
pub use floor::{FloorPhase, FloorReport};
pub use observer::{Observer, PodView, serves};
pub use report::{KcmWork, PeerReport, PeersReport, PhaseReport, Ratio, ratios};
pub use workload::{app, argo_rollout, argo_service, argo_template, namespace, phaseloop_release};

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use kube::Client;
use serde::{Deserialize, Serialize};

use super::process::PidFile;
use cluster::{ensure_capacity, remove_extra_nodes};
use phaseloop_e2e::repo_root;
use run::run_one;
use workload::canary_steps;

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
    /// Whether the v2 → v3 round with analysis runs at this size (a thousand apps take about
    /// twenty minutes per round and controller on two cores).
    pub analysis_round: bool,
    /// In this order, each on a cluster cleaned of the previous one's objects.
    pub controllers: Vec<Peer>,
    /// Whether the floor (`floor.rs`: the same steps scripted, the fewest writes) runs first.
    pub floor: bool,
    /// Per phase: how long until every app must serve the new version.
    pub timeout: Duration,
    pub prometheus_url: String,
}

impl PeersRun {
    /// A run of 25 apps, both controllers and the floor, for the unit tests.
    #[cfg(test)]
    fn example() -> Self {
        PeersRun {
            apps: 25,
            per_namespace: 10,
            replicas: 4,
            pause: Duration::from_secs(10),
            analysis_every: 10,
            analysis_interval: Duration::from_secs(10),
            analysis_round: true,
            controllers: vec![Peer::ArgoRollouts, Peer::Phaseloop],
            floor: true,
            timeout: Duration::from_secs(60),
            prometheus_url: "http://127.0.0.1:19090".into(),
        }
    }

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

fn progress(what: &str) {
    eprintln!("[{}] peers: {what}", jiff::Zoned::now().strftime("%H:%M:%S"));
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
    let floor = match run.floor {
        true => Some(floor::run_floor(client, run, &observer).await?),
        false => None,
    };
    let mut runs = Vec::new();
    for &peer in &run.controllers {
        runs.push(run_one(client, run, peer, &observer).await?);
    }
    remove_extra_nodes(client).await?;
    let find = |name: &str| runs.iter().find(|r| r.controller == name);
    let ratios = match (find("phaseloop"), find("argo-rollouts")) {
        (Some(p), Some(a)) => ratios(p, a, floor.as_ref()),
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
        floor,
        ratios,
    })
}
