//! Installs that coexist: a second install of the chart in single-namespace mode beside the suite's
//! cluster-wide one. Each operator writes the status of its own Releases only (nothing refuses the
//! other's writes), and the single-namespace operator does all its work (a rollout, a revert, a
//! serving Release deleted, its namespace deleted) without reading anything cluster-scoped: the
//! API server's audit log lists every request it made.

use std::{process::Command, time::Duration};

use kube::{Api, ResourceExt};
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::{audit, *};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);
/// The label that hands a Release to an install with an instance id.
const INSTANCE: &str = "phaseloop.dev/instance";

fn helm(args: &[&str]) -> Output {
    let out = Command::new("helm").args(args).current_dir(repo_root()).output().expect("helm on PATH (env.sh)");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `helm uninstall` of a release when dropped.
struct Installed {
    release: String,
    namespace: String,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", &self.release, "-n", &self.namespace, "--wait", "--timeout", "60s"]);
    }
}

/// Every request of `user` in the audit log since `since`.
fn requests_of(user: &str, since: jiff::Timestamp) -> Vec<audit::Request> {
    let dir = format!("{}/logs", std::env::var("E2E_STATE").unwrap());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("audit") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.extend(text.lines().filter_map(audit::parse_line).filter(|r| r.user == user && r.received >= since));
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_single_namespace_install_beside_the_cluster_install_works_alone_and_reads_nothing_cluster_scoped() {
    let _shared = shared().await;
    let since = jiff::Timestamp::now();
    let client = client().await;
    let apps = TestNamespace::new(&client, "e2e-team").await;
    let system = TestNamespace::new(&client, "e2e-team-system").await;
    let id = format!("team-{}", unique_suffix());
    // The second install, as docs/install.md shows it: Releases of one namespace, its own instance.
    let out = helm(&[
        "install",
        &id,
        "charts/phaseloop",
        "-n",
        &system.name,
        "--skip-crds",
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "rbac.scope=namespace",
        "--set",
        &format!("rbac.namespaces={{{}}}", apps.name),
        "--set",
        &format!("instanceId={id}"),
        "--set",
        "leaderElection.enabled=true",
    ]);
    assert!(out.ok, "helm install: {}", out.stderr);
    let _installed = Installed { release: id.clone(), namespace: system.name.clone() };
    // Its operator, as a process on this host with the install's ServiceAccount (kwok runs no
    // containers), configured as the chart configures its pod.
    let sa = format!("{id}-phaseloop");
    let (kubeconfig, user) = service_account_kubeconfig(&system.name, &sa);
    let port = extra_port(7);
    let log = std::fs::File::create(format!("{}/logs/operator-{id}.log", std::env::var("E2E_STATE").unwrap())).unwrap();
    let mut team = Command::new(repo_root().join("target/debug/phaseloop-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env("PHASELOOP_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("PHASELOOP_PROMETHEUS_URL", prometheus_url())
        .env("PHASELOOP_WATCH_NAMESPACE", &apps.name)
        .env("PHASELOOP_INSTANCE_ID", &id)
        .env("PHASELOOP_ROLE_BINDING", &sa)
        .env("PHASELOOP_LEADER_ELECTION", "true")
        .env("PHASELOOP_LEASE_NAMESPACE", &system.name)
        .env("POD_NAME", &id)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    eventually("the team operator leads", WAIT, || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.contains("phaseloop_leader 1").then_some(())
    })
    .await
    .unwrap();

    let api: Api<Release> = Api::namespaced(client.clone(), &apps.name);
    let theirs = |version: &str| {
        let mut r = release(&apps.name, "web", version, 2, json!({"revertWindow": "10m"}));
        r["metadata"]["labels"] = json!({INSTANCE: id});
        r
    };
    // Beside it, the cluster-wide install keeps writing status: elsewhere, and in the same
    // namespace for a Release without the label.
    let elsewhere = TestNamespace::new(&client, "e2e-cluster").await;
    create(&release(&elsewhere.name, "plain", "1", 1, json!({})));
    create(&theirs("1"));
    create(&release(&apps.name, "other", "1", 1, json!({})));
    wait_release_phase(&Api::namespaced(client.clone(), &elsewhere.name), "plain-1", ReleasePhase::Live).await;
    wait_release_phase(&api, "other-1", ReleasePhase::Live).await;
    wait_release_phase(&api, "web-1", ReleasePhase::Live).await;
    // Rolled out, then reverted.
    create(&theirs("2"));
    wait_release_phase(&api, "web-2", ReleasePhase::Live).await;
    let out = kubectl(&["phaseloop", "revert", "web-2", "-n", &apps.name]);
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "web-2", ReleasePhase::Reverted).await;
    wait_release_phase(&api, "web-1", ReleasePhase::Live).await;

    // The serving Release deleted: it waits. Then its namespace deleted: everything goes.
    assert!(kubectl(&["delete", "rel", "web-1", "-n", &apps.name, "--wait=false"]).ok);
    wait_for(&api, "web-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Deleting")).is_some_and(|c| c.status == "True")
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    assert!(kubectl(&["delete", "namespace", &apps.name, "--wait=false"]).ok);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    eventually("the team's namespace gone", WAIT, || async {
        namespaces.get_opt(&apps.name).await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    println!(
        "FIGURE single-namespace mode: namespace with a serving Release deleted in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Who wrote what: the team's operator its Releases, the cluster-wide one the rest.
    tokio::time::sleep(Duration::from_secs(2)).await; // the audit log is written as requests complete
    let requests = requests_of(&user, since);
    let status_writes = |name: &str| {
        requests.iter().filter(|r| r.resource == "releases/status" && r.name == name && r.is_write()).count()
    };
    assert!(status_writes("web-1") > 0 && status_writes("web-2") > 0, "the team's operator wrote its statuses");
    assert_eq!(status_writes("other-1"), 0, "the team's operator wrote a Release of the cluster-wide install");
    let cluster_scoped: Vec<String> = requests
        .iter()
        .filter(|r| !r.resource.is_empty() && r.namespace.is_empty())
        .map(|r| format!("{} {} {} ({})", r.verb, r.resource, r.name, r.code))
        .collect();
    println!("FIGURE single-namespace mode: {} requests, {} cluster-scoped", requests.len(), cluster_scoped.len());
    assert!(cluster_scoped.is_empty(), "cluster-scoped requests: {cluster_scoped:#?}");
    let other = Api::<Release>::namespaced(client.clone(), &elsewhere.name).get("plain-1").await.unwrap();
    assert!(other.labels().get(INSTANCE).is_none());
    let _ = Command::new("kill").args(["-TERM", &team.id().to_string()]).status();
    let _ = team.wait();
}
