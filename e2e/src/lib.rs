//! Helpers of the end-to-end tests. They run against the local control plane started by
//! `e2e/scripts/start-cluster.sh` (or any cluster in `KUBECONFIG`) with the operator running as a
//! host process, and talk only to 127.0.0.1.
#![forbid(unsafe_code)]

pub mod audit;
pub mod bridge;
pub mod gateway;
pub mod objects;
pub mod operator;
pub mod real_node;
pub mod traffic;

pub use objects::*;

use std::{fmt::Debug, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource,
    api::PostParams,
    runtime::wait::{Condition, await_condition},
};
use serde::de::DeserializeOwned;

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A client for the test cluster (`KUBECONFIG`).
pub async fn client() -> Client {
    Client::try_default().await.expect("KUBECONFIG points at the test cluster (eval \"$(e2e/scripts/env.sh)\")")
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The column names of a `kubectl get` table.
    pub fn header(&self) -> Vec<&str> {
        self.stdout.lines().next().unwrap_or_default().split_whitespace().collect()
    }
}

/// Runs `kubectl` (the pinned one, first on `PATH` via env.sh) with `args`.
pub fn kubectl(args: &[&str]) -> Output {
    let out = Command::new("kubectl").args(args).current_dir(repo_root()).output().expect("kubectl runs");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `kubectl` with `stdin` as the manifest (`-f -`).
pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .current_dir(repo_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A kubeconfig (written under `$E2E_STATE`) for ServiceAccount `sa` of `ns`, with a token of an
/// hour, and the user name the API server knows it by.
pub fn service_account_kubeconfig(ns: &str, sa: &str) -> (String, String) {
    let out = kubectl(&["create", "token", sa, "-n", ns, "--duration=1h"]);
    assert!(out.ok, "{}", out.stderr);
    let admin = std::env::var("KUBECONFIG").unwrap();
    let view =
        |path: &str| kubectl(&["--kubeconfig", &admin, "config", "view", "--raw", "--minify", "-o", path]).stdout;
    let server = view("jsonpath={.clusters[0].cluster.server}");
    let ca = view("jsonpath={.clusters[0].cluster.certificate-authority-data}");
    let path = format!("{}/kubeconfig-{ns}-{sa}", std::env::var("E2E_STATE").unwrap());
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: e2e, cluster: {{server: \"{server}\", certificate-authority-data: \"{ca}\"}}}}]\n\
         users: [{{name: u, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: c, context: {{cluster: e2e, user: u, namespace: {ns}}}}}]\ncurrent-context: c\n",
        out.stdout.trim()
    );
    std::fs::write(&path, yaml).unwrap();
    (path, format!("system:serviceaccount:{ns}:{sa}"))
}

/// Waits until `cond` holds for the object, or fails after `timeout` with the last state seen.
pub async fn wait_for<K>(api: &Api<K>, name: &str, timeout: Duration, cond: impl Condition<K>) -> anyhow::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => bail!("{name} was deleted while waiting"),
        Ok(Err(e)) => Err(e).context("watch failed"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            bail!("timed out after {timeout:?} waiting for {name}; last seen: {last:#?}")
        }
    }
}

/// A namespace for one test, deleted when dropped (best effort, in the background).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", unique_suffix());
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"phaseloop.dev/e2e": "true"}}
        }))
        .unwrap();
        api.create(&PostParams::default(), &ns).await.expect("create test namespace");
        TestNamespace { name }
    }
}

// Cleanup runs kubectl synchronously: a task spawned from `drop` at the end of a `#[tokio::test]`
// is never polled (the test's runtime shuts down right after), and leftovers would keep the
// operator busy during later tests.
impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"]);
    }
}

/// Deletes what earlier tests left in the cluster (test namespaces, Environments) and
/// waits until it is gone, for tests that measure the operator's activity cluster-wide.
pub async fn delete_leftovers(client: &Client) -> anyhow::Result<()> {
    use kube::{ResourceExt, api::ListParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let envs: Api<phaseloop::api::Environment> = Api::all(client.clone());
    let labelled = ListParams::default().labels("phaseloop.dev/e2e=true");
    for e in envs.list(&ListParams::default()).await?.items {
        drop(EnvironmentGuard::new(&e.name_any()));
    }
    for n in namespaces.list(&labelled).await?.items {
        drop(TestNamespace { name: n.name_any() });
    }
    eventually("earlier tests' namespaces and Environments deleted", Duration::from_secs(300), || async {
        let envs = envs.list(&ListParams::default()).await.ok()?.items.len();
        let namespaces = namespaces.list(&labelled).await.ok()?.items.len();
        (envs + namespaces == 0).then_some(())
    })
    .await
}

/// The suite's shared processes (its operator, the API server, Prometheus) and cluster-wide state,
/// for the tests of one binary that run side by side.
static SUITE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Held by a test for its whole run: it uses what the suite shares, beside other such tests.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SUITE.read().await
}

/// Held by a test that stops, restarts, kills or reconfigures what the suite shares, or deletes
/// what other tests left: it waits for the running tests and runs with none beside it. Taken
/// first in the test, so it is released last (after the test has restored what it changed).
pub async fn alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SUITE.write().await
}

/// A short suffix unique enough for names in one test run.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{:x}{}", nanos % 0xfffff, N.fetch_add(1, Ordering::SeqCst))
}

/// Prometheus base URL (`PROMETHEUS_URL`, set by env.sh).
pub fn prometheus_url() -> String {
    std::env::var("PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19090".into())
}

/// The operator's metrics base URL (`PHASELOOP_METRICS_PORT`, set by env.sh).
pub fn operator_url() -> String {
    let port = std::env::var("PHASELOOP_METRICS_PORT").unwrap_or_else(|_| "18080".into());
    format!("http://127.0.0.1:{port}")
}

/// A free port for an operator a test starts itself: `PHASELOOP_METRICS_PORT` + 100 + `n`, so two
/// clusters on one machine (each with its own `PHASELOOP_METRICS_PORT`) never share one.
pub fn extra_port(n: u16) -> u16 {
    let base: u16 = std::env::var("PHASELOOP_METRICS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(18080);
    base + 100 + n
}

/// Runs an instant PromQL query and returns the result vector.
pub async fn prom_query(query: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let url = format!("{}/api/v1/query", prometheus_url());
    let body: serde_json::Value =
        reqwest::Client::new().get(url).query(&[("query", query)]).send().await?.error_for_status()?.json().await?;
    if body["status"] != "success" {
        bail!("query {query} failed: {body}");
    }
    Ok(body["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Polls `f` every 500ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes an Environment when dropped (allowing the deletion of production ones), so a failed
/// test does not leave namespaces behind.
pub struct EnvironmentGuard {
    pub name: String,
}

impl EnvironmentGuard {
    pub fn new(name: &str) -> Self {
        EnvironmentGuard { name: name.to_string() }
    }
}

impl Drop for EnvironmentGuard {
    fn drop(&mut self) {
        // Production Environments are deleted only with the annotation.
        let _ = kubectl(&["annotate", "environment", &self.name, "phaseloop.dev/allow-delete=true", "--overwrite"]);
        let _ = kubectl(&["delete", "environment", &self.name, "--wait=false", "--ignore-not-found"]);
    }
}

/// Creates an object from JSON with `kubectl create`, failing the test with kubectl's message.
pub fn create(obj: &serde_json::Value) {
    let out = kubectl_stdin(&["create", "-f", "-"], &obj.to_string());
    assert!(out.ok, "kubectl create failed: {}", out.stderr);
}

/// Every object of every listable kind in the cluster matching `selector`, as `kind ns/name`:
/// discovery-driven, so nothing of a kind the test did not think of can hide.
pub async fn objects_labelled(client: &Client, selector: &str) -> Vec<String> {
    use kube::discovery::{Discovery, verbs};
    let discovery = Discovery::new(client.clone()).run().await.expect("discovery");
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<kube::api::DynamicObject> = Api::all_with(client.clone(), &ar);
            let Ok(list) = api.list_metadata(&kube::api::ListParams::default().labels(selector)).await else {
                continue;
            };
            for o in list.items {
                let ns = o.metadata.namespace.unwrap_or_default();
                found.push(format!("{} {ns}/{}", ar.kind, o.metadata.name.unwrap_or_default()));
            }
        }
    }
    found
}

/// The pushgateway base URL (`PUSHGATEWAY_URL`, set by env.sh).
pub fn pushgateway_url() -> String {
    std::env::var("PUSHGATEWAY_URL").unwrap_or_else(|_| "http://127.0.0.1:19091".into())
}

/// An app's load as Prometheus sees it: the gauge `e2e_load{namespace, app}` pushed to the
/// pushgateway (which Prometheus scrapes with `honor_labels`).
pub struct Load {
    pub namespace: String,
    pub app: String,
}

impl Load {
    pub fn new(namespace: &str, app: &str) -> Self {
        Load { namespace: namespace.to_string(), app: app.to_string() }
    }

    /// The PromQL an autoscaler uses to read this load.
    pub const QUERY: &'static str = "sum(e2e_load{namespace=\"{{namespace}}\",app=\"{{app}}\"})";

    fn url(&self) -> String {
        format!("{}/metrics/job/e2e-load/namespace/{}/app/{}", pushgateway_url(), self.namespace, self.app)
    }

    fn series(&self) -> String {
        format!("e2e_load{{namespace=\"{}\",app=\"{}\"}}", self.namespace, self.app)
    }

    /// Pushes `value` and waits until a Prometheus query returns it; returns when it did.
    pub async fn set(&self, value: f64) -> tokio::time::Instant {
        let body = format!("e2e_load {value}\n");
        reqwest::Client::new().put(self.url()).body(body).send().await.unwrap().error_for_status().unwrap();
        let series = self.series();
        eventually(&format!("{series} = {value} in Prometheus"), Duration::from_secs(60), || async {
            let result = prom_query(&series).await.ok()?;
            let seen = result.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
            (seen == value).then(tokio::time::Instant::now)
        })
        .await
        .unwrap()
    }

    /// Deletes the series from the pushgateway and waits until Prometheus no longer returns it.
    pub async fn clear(&self) {
        reqwest::Client::new().delete(self.url()).send().await.unwrap().error_for_status().unwrap();
        let series = self.series();
        eventually(&format!("{series} gone from Prometheus"), Duration::from_secs(60), || async {
            prom_query(&series).await.ok()?.is_empty().then_some(())
        })
        .await
        .unwrap()
    }
}

/// Waits (watching, up to 3 minutes) until Release `name` is in `phase`.
pub async fn wait_release_phase(
    api: &Api<phaseloop::api::Release>,
    name: &str,
    phase: phaseloop::api::ReleasePhase,
) -> phaseloop::api::Release {
    wait_for(api, name, Duration::from_secs(180), move |r: Option<&phaseloop::api::Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(phase))
    })
    .await
    .unwrap_or_else(|e| panic!("{name} never {phase:?}: {e}"))
}

/// Waits until the operator has reconciled the object at `resource_version` or later (its
/// `/debug/reconciles` report), so a "nothing happened" check is made after the operator looked,
/// not after a fixed sleep. `controller` is `release` or `environment`; `namespace` is `None` for
/// an Environment. resourceVersions are opaque to clients; this test helper relies on the local
/// etcd's being increasing integers to accept a later one.
pub async fn reconciled(controller: &str, namespace: Option<&str>, name: &str, resource_version: &str) {
    let want: u64 = resource_version.parse().expect("etcd resourceVersions are integers here");
    let mut url = format!("{}/debug/reconciles?controller={controller}&name={name}", operator_url());
    if let Some(ns) = namespace {
        url += &format!("&namespace={ns}");
    }
    let what = format!("the operator reconciling {controller} {name} at resourceVersion {want} or later");
    eventually(&what, Duration::from_secs(60), || async {
        let report: serde_json::Value = reqwest::get(&url).await.ok()?.error_for_status().ok()?.json().await.ok()?;
        let seen = report["resourceVersions"].as_array()?.iter().filter_map(|v| v.as_str()?.parse::<u64>().ok());
        (seen.max()? >= want).then_some(())
    })
    .await
    .unwrap()
}

/// How many reconciles of the object the operator has finished (0 before the first).
pub async fn reconcile_count(controller: &str, namespace: Option<&str>, name: &str) -> u64 {
    let mut url = format!("{}/debug/reconciles?controller={controller}&name={name}", operator_url());
    if let Some(ns) = namespace {
        url += &format!("&namespace={ns}");
    }
    let Ok(response) = reqwest::get(&url).await else { return 0 };
    let report: serde_json::Value = response.json().await.unwrap_or_default();
    report["count"].as_u64().unwrap_or(0)
}

/// Waits until the operator has finished `more` reconciles of the object beyond `since` (a
/// [`reconcile_count`]): evidence that it looked again, for checks that something did *not* change.
pub async fn reconciled_again(controller: &str, namespace: Option<&str>, name: &str, since: u64, more: u64) {
    let what = format!("{more} more reconciles of {controller} {name}");
    eventually(&what, Duration::from_secs(90), || async {
        (reconcile_count(controller, namespace, name).await >= since + more).then_some(())
    })
    .await
    .unwrap()
}
