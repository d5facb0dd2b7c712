//! Bad input (issue "Reliability"): every manifest in `e2e/corpus/bad-input/` is refused by the API
//! server, reported `Degraded` by the operator, or has its infrastructure refused, each with the
//! message its header names, while a Live Release next to them keeps serving untouched and the
//! operator stays ready.
//!
//! A corpus file starts with a comment header:
//!
//! - `# expect: rejected <text>`: `kubectl create` fails and prints `<text>` (schema, CEL rules,
//!   object metadata);
//! - `# expect: degraded <text>`: created; the operator sets `Degraded=True` with `<text>` in its
//!   message (the Release's reason is `InvalidSpec`) and, for a Release, creates no Deployment;
//! - `# expect: refused <text>`: an Environment is created; its component is refused:
//!   `Degraded=True` with reason `ComponentRefused` and a `ComponentRefused` Event, both with
//!   `<text>`, and nothing of the component exists anywhere;
//! - `# keep-name`: an Environment keeps its `metadata.name` (the point of the case is the name).
//!
//! `BAD_INPUT_NS` is replaced with the test namespace, and an Environment's name (every occurrence
//! of it, so self-references follow) gets a unique suffix. The expectations are those of this
//! tree's CRDs (`crds/`, applied by `make e2e`); the test checks the cluster has them first.

use std::{future::Future, pin::Pin, time::Duration};

use futures::future::join_all;
use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use phaseloop::{
    api::{DURATION_PATTERN, Environment, Release, ReleasePhase},
    controller::release::workload::deployment_name,
};
use phaseloop_e2e::*;
use serde_json::json;

/// Time a serving Release has to go Live.
const WAIT: Duration = Duration::from_secs(90);
/// Time the operator has to report a corpus object.
const REPORT: Duration = Duration::from_secs(60);
/// The corpus must not shrink below this.
const MIN_CORPUS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Rejected,
    Degraded,
    Refused,
}

/// One corpus file, parsed.
struct Case {
    file: String,
    expect: Expect,
    substring: String,
    keep_name: bool,
    kind: String,
    name: Option<String>,
    text: String,
}

fn corpus() -> Vec<Case> {
    let dir = repo_root().join("e2e/corpus/bad-input");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files.into_iter().map(|path| parse(&path.file_name().unwrap().to_string_lossy(), &read(&path))).collect()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(file: &str, text: &str) -> Case {
    let first = text.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("# expect: ")
        .unwrap_or_else(|| panic!("{file}: the first line must be `# expect: <rejected|degraded|refused> <text>`"));
    let (word, substring) = rest.split_once(' ').unwrap_or_else(|| panic!("{file}: no text after `{rest}`"));
    let expect = match word {
        "rejected" => Expect::Rejected,
        "degraded" => Expect::Degraded,
        "refused" => Expect::Refused,
        other => panic!("{file}: unknown expectation {other:?}"),
    };
    let keep_name = text.lines().take_while(|l| l.starts_with('#')).any(|l| l.trim_end() == "# keep-name");
    let doc: yaml_serde::Value = yaml_serde::from_str(text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
    let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{file}: no kind")).to_string();
    assert!(kind == "Release" || kind == "Environment", "{file}: kind {kind} is neither Release nor Environment");
    assert!(
        expect != Expect::Refused || kind == "Environment",
        "{file}: only an Environment's infrastructure can be refused"
    );
    let name = doc["metadata"]["name"].as_str().map(str::to_string);
    Case {
        file: file.to_string(),
        expect,
        substring: substring.trim().to_string(),
        keep_name,
        kind,
        name,
        text: text.into(),
    }
}

/// `name` with a unique suffix, still a DNS label (at most 63 characters).
fn unique_name(name: &str) -> String {
    let suffix = unique_suffix();
    let base: String = name.chars().take(63 - 1 - suffix.len()).collect();
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// The manifest to create and the name it will have.
fn prepare(case: &Case, ns: &str) -> (String, Option<String>) {
    let mut text = case.text.replace("BAD_INPUT_NS", ns);
    let mut name = case.name.clone();
    if case.kind == "Environment"
        && !case.keep_name
        && let Some(old) = &case.name
    {
        let new = unique_name(old);
        text = text.replace(old.as_str(), &new);
        name = Some(new);
    }
    (text, name)
}

type Check = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// The Degraded condition of an object's status: (status, reason, message).
fn degraded(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String, String)> {
    conditions.iter().find(|c| c.type_ == "Degraded").map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn degraded_release(
    client: Client,
    ns: String,
    file: String,
    name: String,
    substring: String,
) -> Result<(), String> {
    let api: Api<Release> = Api::namespaced(client.clone(), &ns);
    let seen = eventually(&format!("{file}: Degraded on Release {name}"), REPORT, || async {
        let rel = api.get_opt(&name).await.ok().flatten()?;
        let c = degraded(&rel.status?.conditions)?;
        (c.0 == "True" && c.2.contains(&substring)).then_some(c)
    })
    .await;
    let result = match seen {
        Ok((_, reason, message)) if reason != "InvalidSpec" => {
            Err(format!("{file}: Degraded reason {reason:?} (message {message:?}), expected InvalidSpec"))
        }
        Ok(_) => match api.get(&name).await {
            // Validation failed, so nothing was deployed: status only.
            Ok(rel) => {
                let deployment = deployment_name(&rel.spec.app, &rel.spec.version);
                match Api::<Deployment>::namespaced(client.clone(), &ns).get_opt(&deployment).await {
                    Ok(None) => Ok(()),
                    Ok(Some(_)) => Err(format!("{file}: an invalid Release created Deployment {deployment}")),
                    Err(e) => Err(format!("{file}: {e}")),
                }
            }
            Err(e) => Err(format!("{file}: {e}")),
        },
        Err(e) => {
            let last = api.get_opt(&name).await.ok().flatten().and_then(|r| r.status).map(|s| s.conditions);
            Err(format!("{e}; expected {substring:?}; conditions: {last:?}"))
        }
    };
    let _ = api.delete(&name, &DeleteParams::background()).await;
    result
}

async fn reported_environment(
    client: Client,
    file: String,
    name: String,
    expect: Expect,
    substring: String,
) -> Result<(), String> {
    let envs: Api<Environment> = Api::all(client.clone());
    let seen = eventually(&format!("{file}: Degraded on Environment {name}"), REPORT, || async {
        let env = envs.get_opt(&name).await.ok().flatten()?;
        let c = degraded(&env.status?.conditions)?;
        (c.0 == "True" && c.2.contains(&substring)).then_some(c)
    })
    .await;
    match seen {
        Ok((_, reason, message)) if expect == Expect::Refused && reason != "ComponentRefused" => {
            Err(format!("{file}: Degraded reason {reason:?} (message {message:?}), expected ComponentRefused"))
        }
        Ok(_) if expect == Expect::Refused => {
            let events: Api<Event> = Api::all(client.clone());
            let selector = ListParams::default().fields(&format!("involvedObject.name={name}"));
            eventually(&format!("{file}: a ComponentRefused Event on {name} with {substring:?}"), REPORT, || async {
                let list = events.list(&selector).await.ok()?;
                list.items.into_iter().find(|e| {
                    e.reason.as_deref() == Some("ComponentRefused")
                        && e.message.as_deref().is_some_and(|m| m.contains(&substring))
                })
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            let last = envs.get_opt(&name).await.ok().flatten().and_then(|e| e.status).map(|s| s.conditions);
            Err(format!("{e}; expected {substring:?}; conditions: {last:?}"))
        }
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn bad_input_is_refused_or_reported_and_nothing_serving_is_touched() {
    let _shared = shared().await;
    let cases = corpus();
    assert!(cases.len() >= MIN_CORPUS, "the bad-input corpus has {} files, fewer than {MIN_CORPUS}", cases.len());

    let client = client().await;
    // The expectations come from this tree's CRDs; with older ones installed, a corpus file meant to
    // be rejected (an overflowing duration) could reach the operator instead.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (crd, field) in
        [("releases.phaseloop.dev", "/strategy/properties/progressDeadline"), ("environments.phaseloop.dev", "/ttl")]
    {
        let crd = crds.get(crd).await.unwrap();
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let pointer = format!("/openAPIV3Schema/properties/spec/properties{field}/pattern");
        assert_eq!(
            schema.pointer(&pointer).and_then(|p| p.as_str()),
            Some(DURATION_PATTERN),
            "{} is not this tree's: kubectl apply -f crds/ (make e2e does)",
            crd.metadata.name.unwrap_or_default()
        );
    }
    let ns = TestNamespace::new(&client, "e2e-bad-input").await;
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);

    // A healthy app first: the bad input must not touch it.
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "serving-1", "namespace": ns.name},
        "spec": {"app": "serving", "version": "1.0.0", "replicas": 2,
                 "template": {"spec": {"containers": [{"name": "app", "image": "serving:1.0.0"}]}},
                 "service": {"ports": [{"port": 80, "targetPort": 8080}]}}}));
    wait_for(&releases, "serving-1", WAIT, |r: Option<&Release>| {
        r.and_then(|r| r.status.as_ref()).is_some_and(|s| s.phase == Some(ReleasePhase::Live))
    })
    .await
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let serving = deployment_name("serving", "1.0.0");
    let before = deployments.get(&serving).await.unwrap();

    let mut failures: Vec<String> = Vec::new();
    let mut checks: Vec<Check> = Vec::new();
    let mut guards = Vec::new();
    let mut refused_envs = Vec::new();
    let mut created_envs = Vec::new();
    for case in &cases {
        let (manifest, name) = prepare(case, &ns.name);
        if case.kind == "Environment"
            && let Some(name) = &name
        {
            // Also for cases expected to be rejected: if one is accepted, it is still cleaned up.
            guards.push(EnvironmentGuard::new(name));
        }
        let out = kubectl_stdin(&["create", "-f", "-"], &manifest);
        let file = case.file.clone();
        match case.expect {
            Expect::Rejected if out.ok => failures.push(format!("{file}: accepted, expected rejected: {}", out.stdout)),
            Expect::Rejected if !out.stderr.contains(&case.substring) => {
                failures.push(format!("{file}: rejected without {:?}: {}", case.substring, out.stderr.trim()))
            }
            Expect::Rejected => {}
            _ if !out.ok => failures.push(format!("{file}: create failed: {}", out.stderr.trim())),
            _ => {
                let Some(name) = name else {
                    failures.push(format!("{file}: created, but it has no metadata.name to watch"));
                    continue;
                };
                let substring = case.substring.clone();
                if case.kind == "Release" {
                    checks.push(Box::pin(degraded_release(client.clone(), ns.name.clone(), file, name, substring)));
                } else {
                    if case.expect == Expect::Refused {
                        refused_envs.push(name.clone());
                    }
                    created_envs.push(name.clone());
                    checks.push(Box::pin(reported_environment(client.clone(), file, name, case.expect, substring)));
                }
            }
        }
    }
    let reported = checks.len();
    failures.extend(join_all(checks).await.into_iter().filter_map(Result::err));

    // Nothing of a refused component exists, in any namespace, of any kind.
    if !refused_envs.is_empty() {
        let selector =
            format!("phaseloop.dev/component=hostile,phaseloop.dev/environment in ({})", refused_envs.join(","));
        let leaked = objects_labelled(&client, &selector).await;
        if !leaked.is_empty() {
            failures.push(format!("refused components left objects behind: {leaked:?}"));
        }
    }

    let envs: Api<Environment> = Api::all(client.clone());
    for name in &created_envs {
        let _ = envs.delete(name, &DeleteParams::background()).await;
    }

    // The serving app was not touched, and the operator is still healthy.
    let rel = releases.get("serving-1").await.unwrap();
    if rel.status.and_then(|s| s.phase) != Some(ReleasePhase::Live) {
        failures.push("the serving Release left Live".into());
    }
    let after = deployments.get(&serving).await.unwrap();
    if after.metadata.generation != before.metadata.generation {
        failures.push(format!("the serving Deployment was changed: {after:?}"));
    }
    if (after.spec.replicas, before.spec.replicas) != (Some(2), Some(2)) {
        failures.push(format!(
            "the serving Deployment was rescaled: {:?} → {:?}",
            before.spec.replicas, after.spec.replicas
        ));
    }
    match reqwest::get(format!("{}/readyz", operator_url())).await {
        Ok(r) if r.status() == 200 => {}
        Ok(r) => failures.push(format!("the operator is no longer ready after the bad input: {}", r.status())),
        Err(e) => failures.push(format!("the operator does not answer after the bad input: {e}")),
    }

    assert!(
        failures.is_empty(),
        "{} problems with {} corpus files ({reported} created and watched):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    drop(guards);
}
