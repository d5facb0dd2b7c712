//! Operator processes a test starts itself, next to (or instead of) the suite's: with leader
//! election, or with other credentials. The suite's operator is stopped and restarted by
//! `e2e/scripts/run-operator.sh`.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{eventually, prometheus_url, repo_root};

fn state() -> String {
    std::env::var("E2E_STATE").expect("E2E_STATE (env.sh)")
}

/// `run-operator.sh start|stop|crash` for the suite's operator.
pub fn run_operator(arg: &str) {
    let script = repo_root().join("e2e/scripts/run-operator.sh");
    assert!(Command::new("bash").arg(script).arg(arg).status().unwrap().success(), "run-operator.sh {arg}");
}

/// Restarts the suite's operator when dropped, however the test ends.
pub struct RestoreSuiteOperator;

impl Drop for RestoreSuiteOperator {
    fn drop(&mut self) {
        run_operator("start");
    }
}

/// One operator process, logging to `$E2E_STATE/logs/operator-<name>.log`.
pub struct Operator {
    pub name: &'static str,
    pub port: u16,
    pub child: Child,
}

/// The credentials an [`Operator`] runs with.
pub enum Credentials {
    /// The chart's ServiceAccount (`operator.kubeconfig`), as the suite's operator.
    ServiceAccount,
    /// The cluster admin (`kubeconfig`), as `make run` does on a local cluster.
    Admin,
}

impl Operator {
    /// With leader election on the chart's Lease, as the chart runs it with two replicas.
    pub fn start(name: &'static str, port: u16) -> Self {
        Self::launch(name, port, Credentials::ServiceAccount, true)
    }

    pub fn launch(name: &'static str, port: u16, credentials: Credentials, leader_election: bool) -> Self {
        let log = std::fs::File::create(format!("{}/logs/operator-{name}.log", state())).unwrap();
        let kubeconfig = match credentials {
            Credentials::ServiceAccount => format!("{}/operator.kubeconfig", state()),
            Credentials::Admin => format!("{}/kubeconfig", state()),
        };
        let child = Command::new(repo_root().join("target/debug/phaseloop-operator"))
            .env("KUBECONFIG", kubeconfig)
            .env("PHASELOOP_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("PHASELOOP_PROMETHEUS_URL", prometheus_url())
            .env("PHASELOOP_LEADER_ELECTION", leader_election.to_string())
            .env("PHASELOOP_LEASE_NAMESPACE", "phaseloop-system")
            .env("POD_NAME", name)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Operator { name, port, child }
    }

    pub async fn metrics(&self) -> Option<String> {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port)).await.ok()?.text().await.ok()
    }

    /// Whether this process has run any reconcile.
    pub async fn reconciled(&self) -> bool {
        self.metrics().await.unwrap_or_default().lines().any(|l| l.starts_with("phaseloop_reconciles_total"))
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        eventually(&format!("{} ready", self.name), Duration::from_secs(90), || async {
            reqwest::get(&url).await.ok()?.status().is_success().then_some(())
        })
        .await
        .unwrap();
    }

    pub fn signal(&self, sig: &str) {
        assert!(Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
