//! Trust boundaries, tried as a hostile user would through kubectl only: approvals nobody can
//! forge, status nobody but the operator writes (and that never opens a gate if written anyway),
//! infrastructure that cannot escalate even under admin credentials, generated names that are
//! never adopted. One test replaces the suite's operator for a while: it runs alone (`alone()`), the others together.

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
/// The chart's ServiceAccount, the only writer of status.
const OPERATOR_USER: &str = "system:serviceaccount:phaseloop-system:phaseloop";

/// `kubectl` as another user (its kubeconfig).
fn kubectl_as(kubeconfig: &str, args: &[&str]) -> Output {
    kubectl_as_with(kubeconfig, args, None)
}

/// `kubectl` as another user, with `stdin` as its input (`-f -`).
fn kubectl_as_with(kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::{io::Write, process::Stdio};
    let mut child = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("PATH", format!("{}:{}", repo_root().join("target/debug").display(), std::env::var("PATH").unwrap()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A person acting through kubectl: a ServiceAccount of a test namespace, its kubeconfig and the
/// user name the API server knows it by.
struct Person {
    kubeconfig: String,
    user: String,
}

impl Person {
    fn new(ns: &str, name: &str) -> Person {
        assert!(kubectl(&["create", "serviceaccount", name, "-n", ns]).ok);
        let (kubeconfig, user) = service_account_kubeconfig(ns, name);
        Person { kubeconfig, user }
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_as(&self.kubeconfig, args)
    }

    /// `kubectl create -f -` of `obj` as this person.
    fn create(&self, obj: &serde_json::Value) -> Output {
        kubectl_as_with(&self.kubeconfig, &["create", "-f", "-"], Some(&obj.to_string()))
    }

    fn subject(&self) -> String {
        // system:serviceaccount:<ns>:<name> -> <ns>:<name>
        format!("--serviceaccount={}", self.user.trim_start_matches("system:serviceaccount:"))
    }
}

/// Role `role` in `ns` with `verbs` on `resource`, bound to `people`.
fn grant(ns: &str, role: &str, verbs: &str, resource: &str, people: &[&Person]) {
    let out =
        kubectl(&["create", "role", role, "-n", ns, &format!("--verb={verbs}"), &format!("--resource={resource}")]);
    assert!(out.ok, "{}", out.stderr);
    let subjects: Vec<String> = people.iter().map(|p| p.subject()).collect();
    let mut args = vec!["create", "rolebinding", role, "-n", ns, "--role", role];
    args.extend(subjects.iter().map(String::as_str));
    let out = kubectl(&args);
    assert!(out.ok, "{}", out.stderr);
}

/// People who may read, create and edit Releases of `ns` (not approve).
fn editors(ns: &str, people: &[&Person]) {
    grant(ns, "release-editor", "get,list,watch,create,patch,update", "releases.phaseloop.dev", people);
}

/// People who hold the chart's ClusterRole phaseloop-approver in `ns`.
fn approvers(ns: &str, people: &[&Person]) {
    let subjects: Vec<String> = people.iter().map(|p| p.subject()).collect();
    let mut args = vec!["create", "rolebinding", "approvers", "-n", ns, "--clusterrole=phaseloop-approver"];
    args.extend(subjects.iter().map(String::as_str));
    assert!(kubectl(&args).ok);
}

/// A ClusterRole and its binding for `people`, deleted when dropped (cluster-scoped leftovers
/// would outlive the test namespace).
struct ClusterGrant(String);

impl ClusterGrant {
    fn new(verbs: &str, resources: &[&str], people: &[&Person]) -> ClusterGrant {
        let name = format!("e2e-trust-{}", unique_suffix());
        let mut args = vec!["create".to_string(), "clusterrole".into(), name.clone(), format!("--verb={verbs}")];
        args.extend(resources.iter().map(|r| format!("--resource={r}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = kubectl(&args);
        assert!(out.ok, "{}", out.stderr);
        let subjects: Vec<String> = people.iter().map(|p| p.subject()).collect();
        let mut args = vec!["create", "clusterrolebinding", &name, "--clusterrole", &name];
        args.extend(subjects.iter().map(String::as_str));
        assert!(kubectl(&args).ok);
        ClusterGrant(name)
    }
}

impl Drop for ClusterGrant {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "clusterrolebinding,clusterrole", &self.0, "--ignore-not-found"]);
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
    let _shared = shared().await;
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
    let (dev, dev_user) = service_account_kubeconfig(&ns.name, "dev");
    let (approver, approver_user) = service_account_kubeconfig(&ns.name, "approver");

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
    let _shared = shared().await;
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
    assert!(!out.ok && out.stderr.contains("written by a phaseloop operator only"), "{}", out.stderr);
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
    let _alone = alone().await;
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
    let _shared = shared().await;
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
    let _shared = shared().await;
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

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_empty_approval_is_refused_and_never_opens_the_gate() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-empty").await;
    let (dev, approver) = (Person::new(&ns.name, "dev"), Person::new(&ns.name, "approver"));
    editors(&ns.name, &[&dev, &approver]);
    approvers(&ns.name, &[&approver]);
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);

    // Created already carrying an empty approval: refused, for someone without the verb as for an
    // approver (an empty name is nobody's).
    let mut r = gated(&ns.name, "gate");
    r["metadata"]["annotations"] = json!({"phaseloop.dev/approved-by": ""});
    let out = dev.create(&r);
    assert!(!out.ok && out.stderr.contains("needs the verb approve"), "{}", out.stderr);
    let out = approver.create(&r);
    assert!(!out.ok && out.stderr.contains("must name the approver"), "{}", out.stderr);

    // Created plainly, then annotated with an empty value: refused the same way.
    let out = dev.create(&gated(&ns.name, "gate"));
    assert!(out.ok, "{}", out.stderr);
    wait_release_phase(&api, "gate-1", ReleasePhase::AwaitingApproval).await;
    let out = dev.kubectl(&["annotate", "rel", "gate-1", "phaseloop.dev/approved-by="]);
    assert!(!out.ok && out.stderr.contains("needs the verb approve"), "{}", out.stderr);
    let out = approver.kubectl(&["annotate", "rel", "gate-1", "phaseloop.dev/approved-by="]);
    assert!(!out.ok && out.stderr.contains("must name the approver"), "{}", out.stderr);
    let merge = r#"{"metadata":{"annotations":{"phaseloop.dev/approved-by":""}}}"#;
    let out = approver.kubectl(&["patch", "rel", "gate-1", "--type=merge", "-p", merge]);
    assert!(!out.ok && out.stderr.contains("must name the approver"), "{}", out.stderr);
    // The gate stays shut: once the operator has looked, nothing of the version runs.
    let r = api.get("gate-1").await.unwrap();
    reconciled("release", Some(&ns.name), "gate-1", &r.resource_version().unwrap()).await;
    let r = api.get("gate-1").await.unwrap();
    assert_eq!(r.status.as_ref().and_then(|s| s.phase), Some(ReleasePhase::AwaitingApproval));
    assert!(!r.annotations().contains_key("phaseloop.dev/approved-by"));
    assert!(replicas(&client, &ns.name, "gate-1").await.unwrap_or(0) == 0);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn control_annotations_name_who_asked_and_an_override_needs_the_approve_verb() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-who").await;
    let (dev, approver) = (Person::new(&ns.name, "dev"), Person::new(&ns.name, "approver"));
    editors(&ns.name, &[&dev, &approver]);
    approvers(&ns.name, &[&approver]);
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&release(&ns.name, "ov", "1", 2, json!({})));
    wait_release_phase(&api, "ov-1", ReleasePhase::Live).await;
    // An analysis that always fails, and autoRollback off: the rollout pauses for a person.
    let strategy = json!({"type": "Canary", "autoRollback": false,
        "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "10m"}}]},
        "analysis": {"interval": "1s", "metrics": [{"name": "errors", "max": 0.1, "query": "vector(1)"}]}});
    create(&release(&ns.name, "ov", "2", 2, strategy));
    wait_for(&api, "ov-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Degraded")).is_some_and(|c| c.reason == "AnalysisFailed")
    })
    .await
    .unwrap();

    // Nobody writes another's name into a control annotation.
    for key in ["override", "promote", "abort", "revert"] {
        let out = dev.kubectl(&["annotate", "rel", "ov-2", &format!("phaseloop.dev/{key}=alice")]);
        assert!(!out.ok && out.stderr.contains("must name the person asking"), "{key}: {}", out.stderr);
    }
    // Letting a failed rollout go on is an approver's decision, even under one's own name.
    let out = dev.kubectl(&["annotate", "rel", "ov-2", &format!("phaseloop.dev/override={}", dev.user)]);
    assert!(!out.ok && out.stderr.contains("needs the verb approve"), "{}", out.stderr);
    let out = dev.kubectl(&["phaseloop", "promote", "--override", "ov-2"]);
    assert!(!out.ok && out.stderr.contains("needs the verb approve"), "{}", out.stderr);
    let out = approver.kubectl(&["phaseloop", "promote", "--override", "ov-2"]);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_for(&api, "ov-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.override_.is_some())
    })
    .await
    .unwrap();
    assert_eq!(r.status.unwrap().override_.unwrap().by, approver.user);
    let note = event_about(&client, &ns.name, "ov-2", "Overridden").await;
    assert!(note.starts_with(&approver.user), "{note}");
    // An abort names who asked, in the status and its Event.
    let out = dev.kubectl(&["phaseloop", "abort", "ov-2"]);
    assert!(out.ok, "{}", out.stderr);
    let r = wait_for(&api, "ov-2", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase.is_some_and(ReleasePhase::is_terminal))
    })
    .await
    .unwrap();
    let message = r.status.unwrap().message.unwrap_or_default();
    assert!(message.contains(&dev.user), "{message}");
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn what_was_approved_is_what_rolls_out() {
    let _shared = shared().await;
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-frozen").await;
    let (dev, approver) = (Person::new(&ns.name, "dev"), Person::new(&ns.name, "approver"));
    editors(&ns.name, &[&dev, &approver]);
    approvers(&ns.name, &[&approver]);
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    assert!(dev.create(&gated(&ns.name, "d2")).ok);
    wait_release_phase(&api, "d2-1", ReleasePhase::AwaitingApproval).await;

    // Its own gate cannot be switched off by its editor, nor what will be checked changed.
    let refused = "cannot change once a Release has left Pending";
    for patch in [
        json!({"spec": {"approval": {"required": false}}}),
        json!({"spec": {"approval": null}}),
        json!({"spec": {"strategy": {"type": "BlueGreen"}}}),
        json!({"spec": {"tests": [{"name": "smoke", "template": {"spec": {"containers": [{"name": "t", "image": "t"}]}}}]}}),
    ] {
        let out = dev.kubectl(&["patch", "rel", "d2-1", "--type=merge", "-p", &patch.to_string()]);
        assert!(!out.ok && out.stderr.contains(refused), "{patch}: {}", out.stderr);
    }
    // How many replicas is not what was approved: still editable.
    let out = dev.kubectl(&["patch", "rel", "d2-1", "--type=merge", "-p", r#"{"spec":{"replicas":2}}"#]);
    assert!(out.ok, "{}", out.stderr);
    let r = api.get("d2-1").await.unwrap();
    reconciled("release", Some(&ns.name), "d2-1", &r.resource_version().unwrap()).await;
    assert_eq!(api.get("d2-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::AwaitingApproval));
    assert!(approver.kubectl(&["phaseloop", "approve", "d2-1"]).ok);
    wait_release_phase(&api, "d2-1", ReleasePhase::Live).await;
    let out =
        dev.kubectl(&["patch", "rel", "d2-1", "--type=merge", "-p", r#"{"spec":{"strategy":{"revertWindow":"0s"}}}"#]);
    assert!(!out.ok && out.stderr.contains(refused), "{}", out.stderr);
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn with_separation_of_duties_the_author_recorded_at_creation_cannot_approve() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("sod-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"tier": "staging", "promotion": {"requireApproval": true, "separationOfDuties": true}}}));
    let envs: Api<Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let (alice, bob) = (Person::new(&name, "alice"), Person::new(&name, "bob"));
    editors(&name, &[&alice, &bob]);
    approvers(&name, &[&alice, &bob]);
    let api: Api<Release> = Api::namespaced(client.clone(), &name);

    // The author is whoever the API server says created it, whatever the client wrote.
    let mut r = release(&name, "pay", "1", 1, json!({}));
    r["metadata"]["annotations"] = json!({"phaseloop.dev/created-by": bob.user});
    let out = alice.create(&r);
    assert!(out.ok, "{}", out.stderr);
    let created = wait_release_phase(&api, "pay-1", ReleasePhase::AwaitingApproval).await;
    assert_eq!(created.annotations().get("phaseloop.dev/created-by"), Some(&alice.user));
    // Rewritten afterwards: the API server puts the recorded author back.
    let out =
        alice.kubectl(&["annotate", "rel", "pay-1", "--overwrite", &format!("phaseloop.dev/created-by={}", bob.user)]);
    assert!(out.ok, "{}", out.stderr);
    let out = alice.kubectl(&["annotate", "rel", "pay-1", "phaseloop.dev/created-by-"]);
    assert!(out.ok, "{}", out.stderr);
    let kept = api.get("pay-1").await.unwrap();
    assert_eq!(kept.annotations().get("phaseloop.dev/created-by"), Some(&alice.user));

    // Its author approving it opens nothing, and says why.
    assert!(alice.kubectl(&["phaseloop", "approve", "pay-1"]).ok);
    let r = wait_for(&api, "pay-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Approved")).is_some_and(|c| c.reason == "ApprovedByAuthor")
    })
    .await
    .unwrap();
    reconciled("release", Some(&name), "pay-1", &r.resource_version().unwrap()).await;
    let r = api.get("pay-1").await.unwrap();
    assert_eq!(r.status.as_ref().unwrap().phase, Some(ReleasePhase::AwaitingApproval));
    assert!(condition(&r, "Approved").unwrap().message.contains(&alice.user));
    // Someone else's approval does.
    assert!(bob.kubectl(&["phaseloop", "approve", "pay-1"]).ok);
    let r = wait_release_phase(&api, "pay-1", ReleasePhase::Live).await;
    assert_eq!(r.status.unwrap().approval.unwrap().approved_by, bob.user);
}

/// A pod spec that escapes to its node: privileged, on the host's network and PID namespace, with
/// the host's root filesystem mounted.
fn rooting_deployment() -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "root"},
        "spec": {"selector": {"matchLabels": {"app": "root"}},
            "template": {"metadata": {"labels": {"app": "root"}},
                "spec": {"hostNetwork": true, "hostPID": true,
                    "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
                    "containers": [{"name": "sh", "image": "busybox", "securityContext": {"privileged": true},
                        "volumeMounts": [{"name": "host", "mountPath": "/host"}]}]}}}})
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn an_environment_gives_no_root_on_a_node_and_keeps_no_secrets() {
    let _shared = shared().await;
    let client = client().await;
    let home = TestNamespace::new(&client, "e2e-root").await;
    // Someone who may create Environments, and nothing else.
    let creator = Person::new(&home.name, "creator");
    let _grant = ClusterGrant::new("get,list,watch,create", &["environments.phaseloop.dev"], &[&creator]);
    let envs: Api<Environment> = Api::all(client.clone());
    let name = format!("root-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    let env = json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"infrastructure": [{"name": "root", "objects": [rooting_deployment()]}]}});
    let out = creator.create(&env);
    assert!(out.ok, "{}", out.stderr);
    // The namespace enforces the restricted Pod Security Standard: the Deployment is there, its
    // pods are refused.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let refused = eventually("the rooting pods refused by Pod Security admission", WAIT, || async {
        let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), &name);
        let list = sets.list(&Default::default()).await.ok()?;
        let conditions = list.items.into_iter().flat_map(|rs| rs.status.and_then(|s| s.conditions).unwrap_or_default());
        conditions.into_iter().find(|c| c.type_.as_deref() == Some("ReplicaFailure")).and_then(|c| c.message)
    })
    .await
    .unwrap();
    assert!(refused.contains("violates PodSecurity \"restricted"), "{refused}");
    let ns = namespaces.get(&name).await.unwrap();
    assert_eq!(ns.labels().get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("restricted"));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &name);
    assert!(pods.list(&Default::default()).await.unwrap().items.is_empty(), "a pod of the Environment runs");
    // A looser level than the operator allows (restricted, its default) is refused.
    let loose = format!("loose-{}", unique_suffix());
    let _loose = EnvironmentGuard::new(&loose);
    let out = creator.create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": loose}, "spec": {"podSecurity": "privileged"}}));
    assert!(out.ok, "{}", out.stderr);
    let e = wait_for(&envs, &loose, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Degraded" && c.status == "True"))
    })
    .await
    .unwrap();
    let degraded = e.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(degraded.message.contains("podSecurity privileged"), "{}", degraded.message);
    assert!(namespaces.get_opt(&loose).await.unwrap().is_none(), "no namespace for a refused Environment");

    // A Service with externalIPs, a claim on someone's PersistentVolume, a Secret with its data in
    // the Environment (which anyone who may read Environments reads): refused at admission.
    for (object, why) in [
        (
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mitm"},
            "spec": {"ports": [{"port": 80}], "externalIPs": ["10.0.0.1"]}}),
            "externalIPs",
        ),
        (
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "steal"},
            "spec": {"volumeName": "admin-data", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            "volumeName",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": "hunter2"}}),
            "Secret",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}}),
            "Secret",
        ),
    ] {
        let env = json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": format!("leak-{}", unique_suffix())},
            "spec": {"infrastructure": [{"name": "x", "objects": [object]}]}});
        let out = creator.create(&env);
        assert!(!out.ok && out.stderr.contains(why), "{why}: {}", out.stderr);
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn production_is_protected_on_every_write_path() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("acc-prod-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name, "labels": {"e2e-trust": name}}, "spec": {"tier": "production"}}));
    let envs: Api<Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    // Someone with broad rights on namespaces (every verb, every subresource) and Environments.
    let home = TestNamespace::new(&client, "e2e-prod").await;
    let ops = Person::new(&home.name, "ops");
    let _grant = ClusterGrant::new(
        "get,list,watch,update,patch,delete,deletecollection",
        &["namespaces", "namespaces/status", "namespaces/finalize", "environments.phaseloop.dev"],
        &[&ops],
    );
    let unlabel = r#"{"metadata":{"labels":{"phaseloop.dev/tier":null}}}"#;
    for how in [
        vec!["patch", "ns", &name, "--type=merge", "-p", unlabel],
        vec!["patch", "ns", &name, "--subresource=status", "--type=merge", "-p", unlabel],
    ] {
        let out = ops.kubectl(&how);
        assert!(!out.ok && out.stderr.contains("cannot be changed"), "{how:?}: {}", out.stderr);
    }
    // The finalize subresource takes a whole Namespace: the same one without the label.
    let mut ns = serde_json::to_value(
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone()).get(&name).await.unwrap(),
    )
    .unwrap();
    ns["metadata"]["labels"].as_object_mut().unwrap().remove("phaseloop.dev/tier");
    let path = format!("/api/v1/namespaces/{name}/finalize");
    let out = kubectl_as_with(&ops.kubeconfig, &["replace", "--raw", &path, "-f", "-"], Some(&ns.to_string()));
    assert!(!out.ok && out.stderr.contains("cannot be changed"), "finalize: {}", out.stderr);
    let out = ops.kubectl(&["delete", "ns", &name, "--wait=false"]);
    assert!(!out.ok && out.stderr.contains("belongs to a production Environment"), "{}", out.stderr);
    // Environments by collection: each is still asked.
    let path = format!("/apis/phaseloop.dev/v1alpha1/environments?labelSelector=e2e-trust%3D{name}");
    let out = ops.kubectl(&["delete", "--raw", &path]);
    assert!(!out.ok && out.stderr.contains("production Environments are protected"), "{}", out.stderr);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = namespaces.get(&name).await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none());
    assert_eq!(ns.labels().get("phaseloop.dev/tier").map(String::as_str), Some("production"));
    assert!(envs.get(&name).await.unwrap().metadata.deletion_timestamp.is_none());
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn neither_controller_takes_the_others_objects() {
    let _shared = shared().await;
    let client = client().await;
    let name = format!("own-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&name);
    let env = |infrastructure: serde_json::Value| {
        json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
            "spec": {"infrastructure": infrastructure}})
    };
    // An infrastructure Service labelled as app shop's, before any Release of shop.
    let labelled = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "shop", "labels": {"app.kubernetes.io/name": "shop"}},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}});
    create(&env(json!([{"name": "db", "objects": [labelled]}])));
    let envs: Api<Environment> = Api::all(client.clone());
    wait_for(&envs, &name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| s.phase == Some(EnvironmentPhase::Ready))
    })
    .await
    .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &name);
    let component = services.get("shop").await.unwrap();
    // A Release of shop does not adopt the component: NameClash, and the Service is untouched.
    let api: Api<Release> = Api::namespaced(client.clone(), &name);
    create(&release(&name, "shop", "1", 1, json!({})));
    let r = wait_for(&api, "shop-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| condition(r, "Degraded")).is_some_and(|c| c.reason == "NameClash")
    })
    .await
    .unwrap();
    assert!(condition(&r, "Degraded").unwrap().message.contains("Service shop"), "{r:?}");
    reconciled("release", Some(&name), "shop-1", &r.resource_version().unwrap()).await;
    assert_eq!(services.get("shop").await.unwrap().resource_version(), component.resource_version());
    // The Environment says so too: its component is named like app shop's Service.
    refused_with(&envs, &name, "Service shop is a name the Release controller uses for app shop").await;

    // The other way: app ix Live with its Service, then a component Service named ix.
    create(&release(&name, "ix", "1", 1, json!({})));
    wait_release_phase(&api, "ix-1", ReleasePhase::Live).await;
    let app_service = services.get("ix").await.unwrap();
    let evil = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ix"},
        "spec": {"selector": {"app": "evil"}, "ports": [{"port": 80, "targetPort": 9999}]}});
    let patch = json!({"spec": {"infrastructure": [{"name": "db", "objects": [services_of(&component)]}, {"name": "evil", "objects": [evil]}]}});
    envs.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let e = refused_with(&envs, &name, "Service ix is a name the Release controller uses for app ix").await;
    reconciled("environment", None, &name, &e.resource_version().unwrap()).await;
    let after = services.get("ix").await.unwrap();
    assert_eq!(after.resource_version(), app_service.resource_version(), "the app's Service was taken over");
    assert_eq!(api.get("ix-1").await.unwrap().status.unwrap().phase, Some(ReleasePhase::Live));
}

/// Waits until Environment `name` is `Degraded`/`ComponentRefused` with `text` in the message.
async fn refused_with(envs: &Api<Environment>, name: &str, text: &str) -> Environment {
    wait_for(envs, name, WAIT, |e: Option<&Environment>| {
        e.and_then(|e| e.status.as_ref()).is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason == "ComponentRefused" && c.message.contains(text))
        })
    })
    .await
    .unwrap()
}

/// The component object `svc` was applied from, as the Environment declares it.
fn services_of(svc: &Service) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": svc.name_any(), "labels": {"app.kubernetes.io/name": "shop"}},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}})
}
