//! The operator the benchmarks measure: the host process `e2e/scripts/run-operator.sh` started,
//! read from `/proc` and from its `/metrics`, and restarted through the same script.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use phaseloop_e2e::repo_root;

use super::{Scrape, process};

/// The operator started by `run-operator.sh`.
pub struct Operator {
    pub(super) proc: process::PidFile,
    metrics_url: String,
    http: reqwest::Client,
}

impl Operator {
    /// From the e2e environment (`E2E_STATE`, `PHASELOOP_METRICS_PORT`, set by env.sh).
    pub fn from_env() -> anyhow::Result<Self> {
        let state = std::env::var("E2E_STATE").context("E2E_STATE (eval \"$(e2e/scripts/env.sh)\")")?;
        let port = std::env::var("PHASELOOP_METRICS_PORT").context("PHASELOOP_METRICS_PORT")?;
        Ok(Operator {
            proc: process::PidFile(PathBuf::from(state).join("pids/operator.pid")),
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            http: reqwest::Client::new(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Resident memory, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.proc.rss_bytes()
    }

    /// User plus system CPU time, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        self.proc.cpu_seconds()
    }

    pub async fn scrape(&self) -> anyhow::Result<Scrape> {
        let text = self.http.get(&self.metrics_url).send().await?.error_for_status()?.text().await?;
        Ok(Scrape::parse(&text))
    }

    /// Mean resident memory over `over`, sampled every 100ms.
    pub async fn mean_rss(&self, over: Duration) -> f64 {
        self.proc.mean_rss(over).await
    }

    /// Restarts the operator (`run-operator.sh start`: graceful stop, start, ready and leading).
    pub async fn restart(&self) -> anyhow::Result<tokio::process::Child> {
        let script = repo_root().join("e2e/scripts/run-operator.sh");
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(script).arg("start").stdout(std::process::Stdio::null());
        // The release build when run by `make bench`; whatever the caller chose otherwise.
        Ok(cmd.spawn()?)
    }
}
