//! Helpers of the real node's tests (`e2e/tests/e2e/real_node.rs`): pods that really run on
//! `real-node-0` (started by `e2e/scripts/start-node.sh`), the demo app's Releases (and plain
//! Deployments and Services), and the traffic generator, which runs inside the node's network
//! namespace: Service, pod and Gateway addresses exist only in there, and nothing here connects to
//! them from the host. The Gateway's own helpers are in [`crate::gateway`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};

/// The real node's name (`E2E_NODE_NAME`, set by env.sh).
pub fn node_name() -> String {
    std::env::var("E2E_NODE_NAME").unwrap_or_else(|_| "real-node-0".into())
}

/// The node's network namespace (`E2E_NODE_NETNS`, set by env.sh).
pub fn netns() -> String {
    std::env::var("E2E_NODE_NETNS").expect("E2E_NODE_NETNS (eval \"$(e2e/scripts/env.sh)\")")
}

/// The node's Prometheus, bridged to 127.0.0.1 (`NODE_PROMETHEUS_URL`, set by env.sh).
pub fn prometheus_url() -> String {
    std::env::var("NODE_PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19092".into())
}

/// The demo app's image for `version` (`E2E_DEMO_IMAGE`, set by run-e2e.sh from build-images.sh).
pub fn demo_image(version: &str) -> String {
    let repo = std::env::var("E2E_DEMO_IMAGE").unwrap_or_else(|_| "phaseloop.local/demo-app".into());
    format!("{repo}:{version}")
}

/// Unix time in milliseconds, the clock of the traffic records.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// The pod template of the demo app at `version` with extra `args` (e.g. `--error-rate=0.05`):
/// scheduled onto the real node only (its label and taint), scraped by the node's Prometheus,
/// ready on `/ready`, and restricted like a production pod.
pub fn demo_template(version: &str, args: &[&str]) -> Value {
    json!({
        "metadata": {"annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}},
        "spec": {
            "nodeSelector": {"phaseloop.dev/real-node": "true"},
            "tolerations": [{"key": "phaseloop.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
            "terminationGracePeriodSeconds": 15,
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": demo_image(version),
                "imagePullPolicy": "Never",
                "args": args,
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}}
            }]
        }
    })
}

/// A Release of the demo app: `app` at `version`, `replicas`, Service port 80 -> 8080, `strategy`.
pub fn demo_release(ns: &str, app: &str, version: &str, replicas: i32, args: &[&str], strategy: Value) -> Value {
    json!({
        "apiVersion": "phaseloop.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": format!("{app}-{}", version.replace('.', "-")), "namespace": ns},
        "spec": {
            "app": app,
            "version": version,
            "replicas": replicas,
            "service": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            "template": demo_template(version, args),
            "strategy": strategy,
        }
    })
}

/// A plain Deployment of the demo app at `version` (no Release, no operator): `name`, `replicas`,
/// its pods labelled `app: <app>`, `version: <version>`.
pub fn demo_deployment(ns: &str, name: &str, app: &str, version: &str, replicas: i32) -> Value {
    let labels = json!({"app": app, "version": version});
    let mut template = demo_template(version, &[]);
    template["metadata"]["labels"] = labels.clone();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template}
    })
}

/// A Service `name` (port 80 -> the demo app's 8080) selecting the pods with `selector`'s labels.
pub fn demo_service(ns: &str, name: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

/// The ClusterIP of Service `name` (an address inside the node's namespace only).
pub async fn service_ip(client: &Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = api.get(name).await.with_context(|| format!("Service {ns}/{name}"))?;
    svc.spec.and_then(|s| s.cluster_ip).filter(|ip| ip != "None").context("no ClusterIP")
}

/// Runs `argv` inside the node's network namespace and returns its output (for probes).
pub fn in_netns(argv: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", netns()))
        .arg("--")
        .args(argv)
        .output()
        .expect("nsenter runs")
}

/// One request of the traffic generator.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    /// Unix ms when it was sent.
    pub t: u64,
    /// HTTP status, 0 when there was no answer.
    pub status: u16,
    pub version: String,
    #[serde(default)]
    pub pod: String,
    /// Latency in ms.
    pub ms: f64,
    #[serde(default)]
    pub error: String,
}

impl Request {
    pub fn failed(&self) -> bool {
        self.status != 200
    }
}

/// What the traffic generator sends its requests to: a URL inside the node's network namespace
/// (a Service's ClusterIP, or the Gateway's address), with an optional Host header (an
/// HTTPRoute's hostname at the Gateway) and extra request headers (what a route may match on).
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub url: String,
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Target {
    pub fn new(url: &str) -> Target {
        Target { url: url.to_string(), ..Default::default() }
    }

    pub fn host(mut self, host: &str) -> Target {
        self.host = Some(host.to_string());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Target {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// The traffic generator (`e2e-traffic`) running inside the node's network namespace against a
/// URL there, writing one record per request. Stopped (and its last requests recorded) by `stop`
/// or when dropped.
pub struct Traffic {
    child: Option<Child>,
    pub out: PathBuf,
}

impl Traffic {
    /// Starts `bin` (the test's `env!("CARGO_BIN_EXE_e2e-traffic")`) at `rate` requests/s to `url`.
    pub fn start(bin: &str, url: &str, rate: f64, name: &str) -> Traffic {
        Traffic::start_to(bin, &Target::new(url), rate, name)
    }

    /// Starts `bin` at `rate` requests/s to `target` (URL, Host and headers).
    pub fn start_to(bin: &str, target: &Target, rate: f64, name: &str) -> Traffic {
        let dir = std::env::var("E2E_STATE").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
        let out = dir.join("logs").join(format!("traffic-{name}-{}.jsonl", crate::unique_suffix()));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", netns()))
            .arg("--")
            .arg(bin)
            .args(["--url", &target.url, "--rate", &rate.to_string(), "--duration", "900", "--out"])
            .arg(&out);
        if let Some(host) = &target.host {
            cmd.args(["--host", host]);
        }
        for (name, value) in &target.headers {
            cmd.arg("--header").arg(format!("{name}:{value}"));
        }
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nsenter e2e-traffic starts");
        Traffic { child: Some(child), out }
    }

    /// The requests answered (or failed) so far.
    pub fn records(&self) -> Vec<Request> {
        read_records(&self.out)
    }

    /// Stops the generator (it waits for the requests in flight) and returns every record.
    pub fn stop(mut self) -> Vec<Request> {
        self.halt();
        read_records(&self.out)
    }

    fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take()); // EOF: the generator finishes its requests and exits
            for _ in 0..100 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

fn read_records(path: &Path) -> Vec<Request> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // The last line may be half written while the generator runs.
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The first `n` requests `traffic` sent at or after `from` (unix ms), once every one of them is
/// recorded: the generator records a request when it is answered or failed (at most its 2s
/// timeout later), so the wait lasts until the requests of 3s more have been recorded too.
pub async fn first_requests(traffic: &Traffic, from: u64, n: usize, timeout: Duration) -> anyhow::Result<Vec<Request>> {
    crate::eventually(&format!("{n} requests sent from {from}"), timeout, || async {
        let mut recs: Vec<Request> = traffic.records().into_iter().filter(|r| r.t >= from).collect();
        recs.sort_by_key(|r| r.t);
        let nth = recs.get(n.checked_sub(1)?)?.t;
        (recs.last()?.t >= nth + 3000).then(|| recs.into_iter().take(n).collect())
    })
    .await
}

/// Figures of a set of requests, for the report.
#[derive(Debug, Default)]
pub struct Summary {
    pub requests: usize,
    pub failed: usize,
    pub by_version: BTreeMap<String, usize>,
    pub failed_by_version: BTreeMap<String, usize>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} failed, answered by {:?}, failed by {:?}, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            self.requests, self.failed, self.by_version, self.failed_by_version, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// Summarizes `records` sent within `[from, to)` (unix ms).
pub fn summarize(records: &[Request], from: u64, to: u64) -> Summary {
    let window: Vec<&Request> = records.iter().filter(|r| r.t >= from && r.t < to).collect();
    let mut s = Summary { requests: window.len(), ..Default::default() };
    let mut lat: Vec<f64> = Vec::new();
    for r in &window {
        let v = if r.version.is_empty() { "(none)".to_string() } else { r.version.clone() };
        *s.by_version.entry(v.clone()).or_default() += 1;
        if r.failed() {
            s.failed += 1;
            *s.failed_by_version.entry(v).or_default() += 1;
        } else {
            lat.push(r.ms);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
    (s.p50_ms, s.p99_ms, s.max_ms) = (pct(0.5), pct(0.99), lat.last().copied().unwrap_or(0.0));
    s
}

/// The errors of failed requests, counted by message (for a failure's explanation).
pub fn errors(records: &[Request]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| r.failed()) {
        let key = if r.error.is_empty() { format!("HTTP {} from {}", r.status, r.version) } else { r.error.clone() };
        *m.entry(key).or_default() += 1;
    }
    m
}

/// Runs an instant query against the node's Prometheus.
pub async fn prom_query(query: &str) -> anyhow::Result<Vec<Value>> {
    let url = format!("{}/api/v1/query", prometheus_url());
    let body: Value =
        reqwest::Client::new().get(url).query(&[("query", query)]).send().await?.error_for_status()?.json().await?;
    anyhow::ensure!(body["status"] == "success", "query {query} failed: {body}");
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}
