//! Packaging: the Helm chart lints and renders what it should (least-privilege RBAC, restricted
//! pods, HA extras, single-namespace mode), the plain manifests in deploy/ match the chart, the
//! chart installed by run-e2e.sh runs in a `restricted` namespace, its ServiceAccount is what the
//! operator of this whole suite authenticates as, and requests outside its rules are denied.

use std::process::Command;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::Api;
use phaseloop_e2e::*;
use yaml_serde::Value;

const NS: &str = "phaseloop-system";
const SA: &str = "system:serviceaccount:phaseloop-system:phaseloop";

fn helm(args: &[&str]) -> Output {
    let out = Command::new("helm").args(args).current_dir(repo_root()).output().expect("helm on PATH (env.sh)");
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// The objects `helm template` renders with `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "phaseloop", "charts/phaseloop", "-n", NS];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(out.ok, "helm template {sets:?}: {}", out.stderr);
    yaml_serde::Deserializer::from_str(&out.stdout)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"].as_str() == Some(kind)).collect()
}

#[test]
#[ignore = "needs the pinned helm: make e2e"]
fn the_chart_lints_and_renders_least_privilege_and_restricted_pods() {
    let lint = helm(&["lint", "charts/phaseloop", "--strict"]);
    assert!(lint.ok, "{}{}", lint.stdout, lint.stderr);

    let objs = render(&[]);
    for kind in ["ServiceAccount", "ClusterRoleBinding", "Service", "Deployment"] {
        assert_eq!(of_kind(&objs, kind).len(), 1, "one {kind}");
    }
    // The admission policies are cluster-wide, in crds/: none is specific to an install.
    assert!(of_kind(&objs, "ValidatingAdmissionPolicy").is_empty());
    assert!(of_kind(&objs, "PodDisruptionBudget").is_empty(), "no PDB for one replica");
    let role = of_kind(&objs, "ClusterRole").into_iter().find(|r| r["metadata"]["name"] == "phaseloop").unwrap();
    let rules = role["rules"].as_sequence().unwrap();
    assert!(rules.len() >= 10, "{rules:?}");
    for rule in rules {
        for field in ["apiGroups", "resources", "verbs"] {
            let values = rule[field].as_sequence().unwrap();
            assert!(values.iter().all(|v| v.as_str() != Some("*")), "wildcard in {rule:?}");
        }
    }
    let grants = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            let has = |f: &str, x: &str| r[f].as_sequence().unwrap().iter().any(|v| v.as_str() == Some(x));
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    assert!(grants("phaseloop.dev", "releases/status", "patch"));
    // The verb the status-writers policy asks of every status writer.
    assert!(grants("phaseloop.dev", "releases/status", "write-status"));
    assert!(grants("phaseloop.dev", "environments/status", "write-status"));
    assert!(grants("", "namespaces", "create"));
    assert!(!grants("", "nodes", "get"), "nothing about nodes");
    assert!(!grants("rbac.authorization.k8s.io", "clusterrolebindings", "create"));

    let deployment = of_kind(&objs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["capabilities"]["drop"][0].as_str(), Some("ALL"));
    assert!(container["resources"]["limits"]["memory"].is_string());
    assert!(container["readinessProbe"]["httpGet"]["path"].as_str() == Some("/readyz"));

    // Two replicas: leader election and a PodDisruptionBudget.
    let ha = render(&["replicaCount=2"]);
    assert_eq!(of_kind(&ha, "PodDisruptionBudget").len(), 1);
    let env = of_kind(&ha, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert!(env.as_sequence().unwrap().iter().any(|e| e["name"].as_str() == Some("PHASELOOP_LEADER_ELECTION")));

    // Single-namespace mode: the Release rules granted in that namespace only (a ClusterRole bound
    // by a RoleBinding there, which keeps its rights while the namespace is deleted), no
    // cluster-wide binding, the operator told so.
    let single = render(&["rbac.scope=namespace", "rbac.namespaces={shop}", "instanceId=team"]);
    assert!(of_kind(&single, "ClusterRoleBinding").is_empty());
    let namespaced =
        of_kind(&single, "ClusterRole").into_iter().find(|r| r["metadata"]["name"] == "phaseloop-namespaced");
    let namespaced = namespaced.expect("the namespace mode's ClusterRole")["rules"].as_sequence().unwrap().clone();
    assert!(
        namespaced.iter().all(|r| r["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|v| v.as_str() != Some("namespaces")))
    );
    let binding =
        of_kind(&single, "RoleBinding").into_iter().find(|b| b["metadata"]["namespace"].as_str() == Some("shop"));
    let binding = binding.expect("a RoleBinding in shop");
    assert_eq!(binding["roleRef"]["name"].as_str(), Some("phaseloop-namespaced"));
    assert_eq!(binding["metadata"]["finalizers"][0].as_str(), Some("phaseloop.dev/access"));
    let env = of_kind(&single, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let value = |name: &str| {
        env.as_sequence().unwrap().iter().find(|e| e["name"].as_str() == Some(name)).map(|e| e["value"].clone())
    };
    assert_eq!(value("PHASELOOP_WATCH_NAMESPACE").and_then(|v| v.as_str().map(String::from)).as_deref(), Some("shop"));
    assert_eq!(
        value("PHASELOOP_ROLE_BINDING").and_then(|v| v.as_str().map(String::from)).as_deref(),
        Some("phaseloop")
    );
    assert_eq!(value("PHASELOOP_INSTANCE_ID").and_then(|v| v.as_str().map(String::from)).as_deref(), Some("team"));
    // The operator watches one namespace: two are refused, even with the values schema skipped,
    // rather than granting a Role in a namespace nothing reconciles.
    for extra in [&[][..], &["--skip-schema-validation"][..]] {
        let mut args = vec!["template", "x", "charts/phaseloop", "--set", "rbac.scope=namespace"];
        args.extend(["--set", "rbac.namespaces={shop,cart}"]);
        args.extend(extra);
        let out = std::process::Command::new("helm").args(&args).current_dir(repo_root()).output().unwrap();
        assert!(!out.status.success(), "two namespaces were accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("maxItems") || err.contains("exactly one namespace"), "{err}");
    }

    // Trust boundaries: approving is a verb; break-glass status writers get the status verb.
    let writers = render(&["admission.statusWriters={ops-admin}"]);
    let writer = of_kind(&writers, "ClusterRoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["name"] == "phaseloop-status-writer");
    assert_eq!(
        writer.expect("a binding for admission.statusWriters")["subjects"][0]["name"].as_str(),
        Some("ops-admin")
    );
    let approver = of_kind(&objs, "ClusterRole").into_iter().find(|r| r["metadata"]["name"] == "phaseloop-approver");
    let verbs = approver.expect("ClusterRole phaseloop-approver")["rules"][0]["verbs"].clone();
    assert!(verbs.as_sequence().unwrap().iter().any(|v| v.as_str() == Some("approve")), "{verbs:?}");
    let env = of_kind(&objs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let kinds = env.as_sequence().unwrap().iter().find(|e| e["name"] == "PHASELOOP_INFRASTRUCTURE_KINDS").cloned();
    assert_eq!(
        kinds.unwrap()["value"].as_str(),
        Some(
            "statefulsets.apps,deployments.apps,jobs.batch,cronjobs.batch,configmaps,secrets,services,persistentvolumeclaims,serviceaccounts,poddisruptionbudgets.policy"
        ),
        "the operator's allow-list is the kinds its RBAC grants"
    );

    // Monitoring extras come from deploy/monitoring (one source of truth).
    let extras = render(&["serviceMonitor.enabled=true", "prometheusRule.enabled=true", "dashboard.enabled=true"]);
    let rule = of_kind(&extras, "PrometheusRule")[0];
    let file: Value = yaml_serde::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/monitoring/phaseloop-rules.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    assert_eq!(of_kind(&extras, "ServiceMonitor").len(), 1);
    assert_eq!(of_kind(&extras, "ConfigMap").len(), 1);

    // The uninstall hook: the operator image letting go, after stopping this install's operator.
    let job =
        of_kind(&objs, "Job").into_iter().find(|j| j["metadata"]["name"] == "phaseloop-let-go").expect("the hook");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"].as_str(), Some("pre-delete"));
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert_eq!(args[0].as_str(), Some("let-go"));
    assert_eq!(args[2].as_str(), Some(format!("{NS}/phaseloop").as_str()));
    assert!(of_kind(&render(&["uninstall.letGo=false"]), "Job").is_empty());

    // CRDs come from crds/.
    let crds = helm(&["template", "phaseloop", "charts/phaseloop", "--include-crds"]);
    assert_eq!(crds.stdout.matches("kind: CustomResourceDefinition").count(), 2);
}

#[test]
#[ignore = "needs the control plane's binaries: make e2e"]
fn the_build_script_succeeds_on_a_machine_that_has_only_the_control_plane_built() {
    // As on a fresh machine right after the control plane's build: the node's and Argo Rollouts'
    // cache directories do not exist yet. A build that succeeded must exit 0 all the same.
    let scripts = repo_root().join("e2e/scripts");
    let dirs = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}/lib.sh && k8s_bin_dir && etcd_bin_dir && kwok_bin_dir && helm_bin_dir",
            scripts.display()
        ))
        .output()
        .unwrap();
    assert!(dirs.status.success(), "{}", String::from_utf8_lossy(&dirs.stderr));
    let cache = std::env::temp_dir().join(format!("phaseloop-bins-{}", std::process::id()));
    std::fs::create_dir_all(&cache).unwrap();
    for dir in String::from_utf8(dirs.stdout).unwrap().lines().map(std::path::Path::new) {
        std::os::unix::fs::symlink(dir, cache.join(dir.file_name().unwrap())).unwrap();
    }
    let out = Command::new("bash").arg(scripts.join("build-e2e-bins.sh")).env("E2E_CACHE", &cache).output().unwrap();
    let entries = std::fs::read_dir(&cache).unwrap().count();
    std::fs::remove_dir_all(&cache).unwrap();
    assert!(out.status.success(), "build-e2e-bins.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(entries, 4, "it built nothing more");
}

#[test]
#[ignore = "needs the pinned helm: make e2e"]
fn the_plain_manifests_in_deploy_match_the_chart() {
    let script = repo_root().join("e2e/scripts/render-deploy.sh");
    let out = Command::new("bash").arg(script).arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "deploy/phaseloop.yaml is stale, run `make deploy`: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_installed_chart_runs_restricted_and_its_service_account_is_held_to_its_rules() {
    let _shared = shared().await;
    let client = client().await;
    let ns = Api::<Namespace>::all(client.clone()).get(NS).await.unwrap();
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("restricted"));
    // The pods were admitted under `restricted` (kwok runs them).
    let d = Api::<Deployment>::namespaced(client.clone(), NS).get("phaseloop").await.unwrap();
    assert!(d.status.and_then(|s| s.available_replicas).unwrap_or(0) >= 1);

    let can = |args: &[&str]| kubectl(&[&["auth", "can-i", "--as", SA][..], args].concat()).stdout.trim() == "yes";
    assert!(can(&["patch", "releases.phaseloop.dev", "-n", "default"]));
    assert!(can(&["write-status", "releases.phaseloop.dev", "--subresource=status", "-n", "default"]));
    assert!(can(&["create", "namespaces"]));
    assert!(can(&["list", "horizontalpodautoscalers.autoscaling", "--all-namespaces"]));
    assert!(!can(&["delete", "nodes"]));
    assert!(!can(&["create", "clusterrolebindings"]));
    assert!(!can(&["create", "pods/exec", "-n", "default"]));

    // A real request with the operator's own credentials, outside its rules: Forbidden.
    let state = std::env::var("E2E_STATE").expect("E2E_STATE (env.sh)");
    let kubeconfig = format!("{state}/operator.kubeconfig");
    let out = kubectl(&["--kubeconfig", &kubeconfig, "get", "nodes"]);
    assert!(!out.ok && out.stderr.contains("Forbidden"), "{}", out.stderr);
    let out = kubectl(&["--kubeconfig", &kubeconfig, "get", "releases.phaseloop.dev", "-A"]);
    assert!(out.ok, "{}", out.stderr);
}

#[test]
#[ignore = "needs the release build: make e2e"]
fn the_release_binary_is_small_static_and_runs() {
    // The static release build of e2e/scripts/build-images.sh (the operator image's binary).
    let bin = repo_root().join("target/x86_64-unknown-linux-gnu/release/phaseloop-operator");
    let size = std::fs::metadata(&bin).expect("e2e/scripts/build-images.sh builds it").len();
    // What goes into an image without a base: it should stay small...
    assert!(size < 40 * 1024 * 1024, "{size} bytes");
    // ...and need no shared library from the image (a static-pie has no NEEDED entry).
    let dynamic = Command::new("readelf").arg("-d").arg(&bin).output().unwrap();
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(!dynamic.contains("(NEEDED)"), "dynamically linked: {dynamic}");
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("phaseloop"), "{out:?}");
    println!("release binary: {:.1} MiB", size as f64 / 1048576.0);
}
