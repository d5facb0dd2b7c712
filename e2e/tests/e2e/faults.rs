//! Faults around the operator: the API server restarted in the middle of a rollout, a slow API
//! server (every byte to and from it delayed by a proxy), and children edited while the operator
//! is down. The rollouts finish as they would have, and the edits are undone when it starts.
//! Prometheus going away is `prometheus_outage.rs`. It runs alone (`alone()`): it stops the API
//! server and replaces the suite's operator for a while.

use std::{process::Command, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
use kube::Api;
use phaseloop::api::{Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const WAIT: Duration = Duration::from_secs(180);

fn script(name: &str, args: &[&str]) {
    let path = repo_root().join("e2e/scripts").join(name);
    assert!(Command::new("bash").arg(path).args(args).status().unwrap().success(), "{name} {args:?}");
}

fn canary(ns: &str, app: &str, version: &str) -> serde_json::Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": format!("{app}-{version}"), "namespace": ns},
        "spec": {"app": app, "version": version, "replicas": 4,
                 "template": {"spec": {"containers": [{"name": "app", "image": format!("{app}:{version}")}]}},
                 "strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 25},
                     {"pause": {"duration": "10s"}}, {"setWeight": 75}, {"pause": {"duration": "2s"}}]}}}})
}

async fn phase_becomes(api: &Api<Release>, name: &str, phase: ReleasePhase) {
    // The watch itself may break while the API server is away: poll with fresh requests.
    eventually(&format!("{name} {phase:?}"), WAIT, || async {
        let r = api.get_opt(name).await.ok()??;
        (r.status?.phase == Some(phase)).then_some(())
    })
    .await
    .unwrap();
}

/// Whether the suite's operator process (run-operator.sh) is alive.
fn operator_alive() -> bool {
    let state = std::env::var("E2E_STATE").expect("E2E_STATE (env.sh)");
    let pid = std::fs::read_to_string(format!("{state}/pids/operator.pid")).unwrap_or_default();
    !pid.trim().is_empty() && std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
}

async fn api_server_restart_mid_rollout() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-apirestart").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&canary(&ns.name, "web", "1"));
    phase_becomes(&api, "web-1", ReleasePhase::Live).await;
    create(&canary(&ns.name, "web", "2"));
    eventually("web-2 in its first pause", WAIT, || async {
        let s = api.get_opt("web-2").await.ok()??.status?;
        (s.current_step == Some(1)).then_some(())
    })
    .await
    .unwrap();

    // The API server restarts in the middle of the pause.
    script("component.sh", &["stop", "kube-apiserver"]);
    script("component.sh", &["start"]);
    // A leader that could not renew its Lease while the API server was away exits (fencing);
    // Kubernetes would restart its pod, as this does.
    if !operator_alive() {
        println!("the operator fenced itself during the outage; restarting it as the kubelet would");
        script("run-operator.sh", &["start"]);
    }
    phase_becomes(&api, "web-2", ReleasePhase::Live).await;
    phase_becomes(&api, "web-1", ReleasePhase::Superseded).await;
}

/// Forwards 127.0.0.1:<returned port> to `target`, sleeping `delay` before each chunk each way.
async fn slow_proxy(target: String, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else { return };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let pump = |mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf| async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        tokio::time::sleep(delay).await;
                        if to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown().await;
                };
                let up = tokio::spawn(pump(cr, sw));
                let down = tokio::spawn(pump(sr, cw));
                let _ = tokio::join!(up, down);
            });
        }
    });
    port
}

/// Restarts the suite's operator when the test ends, however it ends.
struct RestoreSuiteOperator;

impl Drop for RestoreSuiteOperator {
    fn drop(&mut self) {
        script("run-operator.sh", &["start"]);
    }
}

async fn slow_api_server() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-slowapi").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let state = std::env::var("E2E_STATE").expect("E2E_STATE (env.sh)");

    // The operator's credentials, pointed at a proxy adding 150 ms to every chunk each way.
    let original = std::fs::read_to_string(format!("{state}/operator.kubeconfig")).unwrap();
    // The API server's address as the kubeconfig names it (its port is configurable).
    let at = original.find("https://127.0.0.1:").expect("the kubeconfig names the API server on 127.0.0.1") + 8;
    let server: String = original[at..].chars().take_while(|c| c.is_ascii_digit() || ".:".contains(*c)).collect();
    let port = slow_proxy(server.clone(), Duration::from_millis(150)).await;
    let slow = original.replace(&format!("https://{server}"), &format!("https://127.0.0.1:{port}"));
    let kubeconfig = format!("{state}/operator-slow.kubeconfig");
    std::fs::write(&kubeconfig, slow).unwrap();

    script("run-operator.sh", &["stop"]);
    let _restore = RestoreSuiteOperator;
    let log = std::fs::File::create(format!("{state}/logs/operator-slow.log")).unwrap();
    let mut operator = Command::new(repo_root().join("target/debug/phaseloop-operator"))
        .env("KUBECONFIG", &kubeconfig)
        .env("PHASELOOP_METRICS_ADDR", format!("127.0.0.1:{}", extra_port(4)))
        .env("PHASELOOP_LEADER_ELECTION", "true")
        .env("PHASELOOP_LEASE_NAMESPACE", "phaseloop-system")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    create(&canary(&ns.name, "api", "1"));
    phase_becomes(&api, "api-1", ReleasePhase::Live).await;
    create(&canary(&ns.name, "api", "2"));
    phase_becomes(&api, "api-2", ReleasePhase::Live).await;
    phase_becomes(&api, "api-1", ReleasePhase::Superseded).await;
    let _ = Command::new("kill").args(["-TERM", &operator.id().to_string()]).status();
    let _ = operator.wait();
}

/// The image, the replicas and the Service's selector of a Live app, read back.
async fn serving(client: &kube::Client, ns: &str) -> (String, i32, String) {
    let d: Deployment = Api::namespaced(client.clone(), ns).get("web-1").await.unwrap();
    let spec = d.spec;
    let image = spec.template.spec.unwrap().containers[0].image.clone().unwrap_or_default();
    let svc: Service = Api::namespaced(client.clone(), ns).get("web").await.unwrap();
    let selector = svc.spec.unwrap().selector.unwrap_or_default();
    (image, spec.replicas.unwrap_or(0), selector.get("app.kubernetes.io/version").cloned().unwrap_or_default())
}

/// Someone changes a Live app's Deployment and Service while the operator is down; its first
/// reconcile after the start undoes that, though the Release did not change. A Service has no
/// generation: its edits are seen in its managed fields, also while the operator runs.
async fn edits_while_the_operator_is_down() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-drift").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "web-1", "namespace": ns.name},
        "spec": {"app": "web", "version": "1", "replicas": 2,
                 "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}},
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]}}}));
    phase_becomes(&api, "web-1", ReleasePhase::Live).await;
    let applied = ("web:1".to_string(), 2, "1".to_string());
    assert_eq!(serving(&client, &ns.name).await, applied);
    let generation = api.get("web-1").await.unwrap().metadata.generation;

    script("run-operator.sh", &["stop"]);
    let _restore = RestoreSuiteOperator;
    let n = ns.name.as_str();
    for edit in [
        vec!["set", "image", "deployment/web-1", "app=web:tampered", "-n", n],
        vec!["scale", "deployment/web-1", "--replicas=5", "-n", n],
        vec!["patch", "service", "web", "-n", n, "-p", r#"{"spec":{"selector":{"app.kubernetes.io/version":"0"}}}"#],
    ] {
        let out = kubectl(&edit);
        assert!(out.ok, "kubectl {edit:?}: {}", out.stderr);
    }
    assert_eq!(serving(&client, n).await, ("web:tampered".to_string(), 5, "0".to_string()));

    script("run-operator.sh", &["start"]);
    let restored = eventually("the edits undone after the start", WAIT, || async {
        let now = serving(&client, n).await;
        (now == applied).then_some(now)
    })
    .await;
    assert!(restored.is_ok(), "{restored:?}: now {:?}", serving(&client, n).await);
    assert_eq!(api.get("web-1").await.unwrap().metadata.generation, generation, "the Release itself unchanged");

    // While it runs: the Service's edit is undone at the reconcile its watch event triggers.
    let out = kubectl(&[
        "patch",
        "service",
        "web",
        "-n",
        n,
        "-p",
        r#"{"spec":{"selector":{"app.kubernetes.io/version":"0"}}}"#,
    ]);
    assert!(out.ok, "{}", out.stderr);
    eventually("the Service's selector restored", WAIT, || async {
        (serving(&client, n).await == applied).then_some(())
    })
    .await
    .unwrap();
}

/// One test, so that the faults never overlap.
#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn rollouts_finish_through_an_api_server_restart_and_a_slow_api_server() {
    let _alone = alone().await;
    api_server_restart_mid_rollout().await;
    slow_api_server().await;
    edits_while_the_operator_is_down().await;
}
