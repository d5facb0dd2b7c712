//! Trust boundaries, tried as a hostile user would through kubectl only: approvals nobody can
//! forge, status nobody but the operator writes (and that never opens a gate if written anyway),
//! infrastructure that cannot escalate even under admin credentials, generated names that are
//! never adopted. A binary of its own: one test replaces the suite's operator for a while.

use std::time::Duration;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service, rbac::v1::RoleBinding};
use kube::{Api, ResourceExt};
use phaseloop::api::{Environment, EnvironmentPhase, Release, ReleasePhase};
use phaseloop_e2e::{
    operator::{Credentials, Operator, RestoreSuiteOperator, run_operator},
    *,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);
/// One test replaces the suite's operator for a while: it runs alone, the others together.
static OPERATOR: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
/// The chart's ServiceAccount, the only writer of status.
const OPERATOR_USER: &str = "system:serviceaccount:phaseloop-system:phaseloop";

/// A kubeconfig for ServiceAccount `sa` of `ns` (a token), and its user name.
fn kubeconfig_of(ns: &str, sa: &str) -> (String, String) {
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

/// `kubectl` as another user (its kubeconfig).
fn kubectl_as(kubeconfig: &str, args: &[&str]) -> Output {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", format!("{}:{}", repo_root().join("target/debug").display(), std::env::var("PATH").unwrap()))
        .output()
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn gated(ns: &str, app: &str) -> serde_json::Value {
    let mut r = release(ns, app, "1", 1, json!({}));
    r["spec"]["approval"] = json!({"required": true});
    r
}

/// `kubectl patch --subresource=status` of Release `name` with `patch`, impersonating `user`.
fn patch_status_as(ns: &str, name: &str, patch: &str, user: &str) -> Output {
    kubectl(&["patch", "rel", name, "-n", ns, "--subresource=status", "--type=merge", "-p", patch, "--as", user])
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn approving_needs_the_approve_verb_and_records_who_really_approved() {
    let _shared = OPERATOR.read().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-approve").await;
    // A developer who may edit Releases, and an approver who also holds phaseloop-approver.
    for sa in ["dev", "approver"] {
        assert!(kubectl(&["create", "serviceaccount", sa, "-n", &ns.name]).ok);
    }
    assert!(
        kubectl(&[
            "create",
            "role",
            "release-editor",
            "-n",
            &ns.name,
            "--verb=get,list,watch,patch,update",
            "--resource=releases.phaseloop.dev"
        ])
        .ok
    );
    let subjects = format!("--serviceaccount={0}:dev", ns.name);
    assert!(
        kubectl(&[
            "create",
            "rolebinding",
            "editors",
            "-n",
            &ns.name,
            "--role=release-editor",
            &subjects,
            &format!("--serviceaccount={}:approver", ns.name)
        ])
        .ok
    );
    assert!(
        kubectl(&[
            "create",
            "rolebinding",
            "approvers",
            "-n",
            &ns.name,
            "--clusterrole=phaseloop-approver",
            &format!("--serviceaccount={}:approver", ns.name)
        ])
        .ok
    );
    let (dev, dev_user) = kubeconfig_of(&ns.name, "dev");
    let (approver, approver_user) = kubeconfig_of(&ns.name, "approver");

    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&gated(&ns.name, "api"));
    wait_release_phase(&api, "api-1", ReleasePhase::AwaitingApproval).await;

    // Without the verb: refused, with the reason.
    let annotation = format!("phaseloop.dev/approved-by={dev_user}");
    let out = kubectl_as(&dev, &["annotate", "rel", "api-1", &annotation]);
    assert!(!out.ok && out.stderr.contains("needs the verb approve"), "{}", out.stderr);
    let out = kubectl_as(&dev, &["phaseloop", "approve", "api-1"]);
    assert!(!out.ok && out.stderr.contains("needs the verb approve"), "{}", out.stderr);
    // With the verb, but under someone else's name: refused.
    let out = kubectl_as(&approver, &["annotate", "rel", "api-1", "phaseloop.dev/approved-by=the-cto"]);
    assert!(!out.ok && out.stderr.contains("must name the approver"), "{}", out.stderr);
    // The approver through the plugin: accepted, and the record names the real user.
    let out = kubectl_as(&approver, &["phaseloop", "approve", "api-1"]);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_release_phase(&api, "api-1", ReleasePhase::Live).await;
    assert_eq!(r.status.unwrap().approval.unwrap().approved_by, approver_user);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn a_forged_status_is_refused_and_written_anyway_does_not_open_the_gate() {
    let _shared = OPERATOR.read().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-forge").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&gated(&ns.name, "pay"));
    wait_release_phase(&api, "pay-1", ReleasePhase::AwaitingApproval).await;
    let forged = json!({"status": {"phase": "Progressing", "currentStep": 0,
        "approval": {"approvedBy": "the-cto", "approvedAt": "2026-01-01T00:00:00Z"}}})
    .to_string();
    // As a user whose RBAC allows writing status: refused at admission all the same.
    assert!(kubectl(&["create", "serviceaccount", "ops", "-n", &ns.name]).ok);
    assert!(
        kubectl(&[
            "create",
            "role",
            "status-writer",
            "-n",
            &ns.name,
            "--verb=get,patch,update",
            "--resource=releases.phaseloop.dev/status"
        ])
        .ok
    );
    assert!(
        kubectl(&[
            "create",
            "rolebinding",
            "status-writer",
            "-n",
            &ns.name,
            "--role=status-writer",
            &format!("--serviceaccount={}:ops", ns.name)
        ])
        .ok
    );
    let ops = format!("system:serviceaccount:{}:ops", ns.name);
    let out = patch_status_as(&ns.name, "pay-1", &forged, &ops);
    assert!(!out.ok && out.stderr.contains("written by the phaseloop operator only"), "{}", out.stderr);
    // Written anyway, as the operator's own ServiceAccount (impersonated): the gate stays shut.
    let out = patch_status_as(&ns.name, "pay-1", &forged, OPERATOR_USER);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_for(&api, "pay-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.phase == Some(ReleasePhase::AwaitingApproval) && s.approval.is_none())
    })
    .await
    .unwrap();
    reconciled("release", Some(&ns.name), "pay-1", &r.resource_version().unwrap()).await;
    assert!(event_about(&client, &ns.name, "pay-1", "GateNotPassed").await.contains("never approved"));
    assert!(replicas(&client, &ns.name, "pay-1").await.unwrap_or(0) == 0, "no pod of the unapproved version");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_escalating_component_is_refused_even_under_admin_credentials() {
    let _alone = OPERATOR.write().await;
    let client = client().await;
    // The operator as `make run` runs it on a local cluster: the cluster admin's credentials.
    run_operator("stop");
    let _restore = RestoreSuiteOperator;
    let admin = Operator::launch("e2e-admin", extra_port(6), Credentials::Admin, false);
    admin.wait_ready().await;
    let name = format!("escalate-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"infrastructure": [
            {"name": "config", "objects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}}]},
            {"name": "hostile", "objects": [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "everyone-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}]}]}}));
    let envs: Api<Environment> = Api::all(client.clone());
    let e = wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Failed))
    })
    .await
    .unwrap();
    let degraded = e.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.reason, "ComponentRefused");
    assert!(degraded.message.contains("never allowed in infrastructure"), "{}", degraded.message);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &name);
    assert!(bindings.get_opt("everyone-admin").await.unwrap().is_none(), "the RoleBinding was created");
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &name);
    assert!(configmaps.get_opt("app").await.unwrap().is_some(), "the allowed component is applied");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn generated_names_are_never_adopted() {
    let _shared = OPERATOR.read().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-names").await;
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);

    // Someone else's Service happens to be called web-preview: app web's blue-green preview
    // Service. The Release is Degraded with the clash named, and writes nothing.
    assert!(kubectl(&["create", "service", "clusterip", "web-preview", "-n", &ns.name, "--tcp=80:8080"]).ok);
    let theirs = services.get("web-preview").await.unwrap();
    create(&release(&ns.name, "web", "1", 1, json!({"type": "BlueGreen"})));
    let r = wait_for(&api, "web-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Degraded")).is_some_and(|c| c.reason == "NameClash")
    })
    .await
    .unwrap();
    assert!(condition(&r, "Degraded").unwrap().message.contains("Service web-preview"), "{r:?}");
    event_about(&client, &ns.name, "web-1", "NameClash").await;
    reconciled("release", Some(&ns.name), "web-1", &r.resource_version().unwrap()).await;
    assert_eq!(services.get("web-preview").await.unwrap().resource_version(), theirs.resource_version());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(deployments.get_opt("web-1").await.unwrap().is_none(), "nothing written");
    // Resolved (their Service goes), the Release goes on.
    assert!(kubectl(&["delete", "service", "web-preview", "-n", &ns.name]).ok);
    wait_release_phase(&api, "web-1", ReleasePhase::Live).await;

    // Versions 1.0.0 and 1-0-0 map to one Deployment name: the second is refused.
    create(&release(&ns.name, "shop", "1.0.0", 2, json!({})));
    wait_release_phase(&api, "shop-1-0-0", ReleasePhase::Live).await;
    let first = deployments.get("shop-1-0-0").await.unwrap();
    let mut second = release(&ns.name, "shop", "1-0-0", 5, json!({}));
    second["metadata"]["name"] = json!("shop-dashes");
    create(&second);
    let r = wait_for(&api, "shop-dashes", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Degraded")).is_some_and(|c| c.reason == "NameClash")
    })
    .await
    .unwrap();
    assert!(condition(&r, "Degraded").unwrap().message.contains("shop-1-0-0"), "{r:?}");
    reconciled("release", Some(&ns.name), "shop-dashes", &r.resource_version().unwrap()).await;
    let after = deployments.get("shop-1-0-0").await.unwrap();
    assert_eq!((after.resource_version(), after.spec.replicas), (first.resource_version(), Some(2)));
    assert_eq!(api.get("shop-1-0-0").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn hostile_time_values_are_refused_at_admission() {
    let _shared = OPERATOR.read().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-times").await;
    let mut r = release(&ns.name, "loop", "1", 1, json!({}));
    r["spec"]["strategy"]["analysis"] = json!({"interval": "0s", "metrics": [{"name": "e", "query": "up", "min": 1}]});
    let out = kubectl_stdin(&["create", "-f", "-"], &r.to_string());
    assert!(!out.ok && out.stderr.contains("analysis interval must be at least 1s"), "{}", out.stderr);
    r["spec"]["strategy"] = json!({"progressDeadline": "0s"});
    let out = kubectl_stdin(&["create", "-f", "-"], &r.to_string());
    assert!(!out.ok && out.stderr.contains("progressDeadline must be at least 10s"), "{}", out.stderr);
    let env = json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": format!("gone-{}", unique_suffix())}, "spec": {"ttl": "0s"}});
    let out = kubectl_stdin(&["create", "-f", "-"], &env.to_string());
    assert!(!out.ok && out.stderr.contains("ttl must be at least 10s"), "{}", out.stderr);
}
