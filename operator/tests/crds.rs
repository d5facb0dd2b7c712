//! The committed CRDs are what the types generate, fit a plain `kubectl apply`, and their CEL rules
//! accept good objects and reject bad ones with the documented messages (evaluated offline with
//! kube's CEL validator; the e2e suite checks the same against a real API server).

use std::path::Path;

use kube::core::cel::Validator;
use phaseloop::api::crd;
use serde_json::{Value, json};

fn schema_of(kind: &str) -> Value {
    let crd = crd::all().into_iter().find(|c| c.spec.names.kind == kind).unwrap();
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// CEL messages of the violations of `obj` (updating `old` when given).
fn violations(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema_of(kind), obj, old) {
        Ok(()) => vec![],
        Err(errs) => errs.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn release(spec: Value) -> Value {
    let mut base = json!({
        "apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "shop-1", "namespace": "prod"},
        "spec": {"app": "shop", "version": "1.0.0",
                 "template": {"spec": {"containers": [{"name": "app", "image": "shop:1"}]}}}
    });
    base["spec"].as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    base
}

fn environment(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name}, "spec": spec})
}

#[test]
fn committed_crds_and_api_reference_match_the_types() {
    // crdgen writes them (`make crds`); written afresh here, they must equal what is committed.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let fresh = std::env::temp_dir().join(format!("phaseloop-crdgen-{}", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_crdgen"))
        .arg(&fresh)
        .arg(fresh.join("api.md"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut names: Vec<String> = crd::files().into_iter().map(|(name, _)| name).collect();
    names.push("api.md".into());
    for name in names {
        let committed_path = if name == "api.md" { root.join("docs/api.md") } else { root.join("crds").join(&name) };
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        let generated = std::fs::read_to_string(fresh.join(&name)).unwrap();
        assert!(committed == generated, "{} drifted from the API types: run `make crds`", committed_path.display());
    }
    // Nothing in crds/ that crdgen does not write (a renamed CRD leaves its old file behind), and
    // the chart carries the same files (real copies: a packaged chart must not depend on links).
    for dir in ["crds", "charts/phaseloop/crds"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert!(fresh.join(&name).exists(), "{dir}/{name} is not generated: remove it");
            assert!(!entry.file_type().unwrap().is_symlink(), "{dir}/{name} is a link: run `make crds`");
            let copy = std::fs::read_to_string(entry.path()).unwrap();
            assert!(
                copy == std::fs::read_to_string(fresh.join(&name)).unwrap(),
                "{dir}/{name} drifted: run `make crds`"
            );
        }
    }
    std::fs::remove_dir_all(&fresh).unwrap();
}

#[test]
fn crds_fit_a_client_side_apply() {
    // kubectl stores the whole object again in an annotation limited to 256 KiB; keep headroom.
    for c in crd::all() {
        let size = serde_json::to_vec(&c).unwrap().len();
        assert!(size < 200 * 1024, "{} is {size} bytes as JSON", c.spec.names.kind);
    }
}

#[test]
fn embedded_kubernetes_types_lose_their_descriptions_but_our_fields_keep_theirs() {
    let s = schema_of("Release");
    let template = &s["properties"]["spec"]["properties"]["template"];
    assert!(template["description"].as_str().unwrap().contains("Immutable"));
    assert!(!template["properties"].to_string().contains("\"description\""));
    let strategy = &s["properties"]["spec"]["properties"]["strategy"];
    assert!(strategy["properties"]["revertWindow"]["description"].as_str().unwrap().contains("revert"));
}

#[test]
fn a_valid_release_passes() {
    let r = release(json!({
        "strategy": {"type": "Canary",
            "canary": {"steps": [{"setWeight": 10}, {"pause": {"duration": "1m"}}, {"analysis": {"duration": "2m"}}, {"setWeight": 50}, {"pause": {}}]},
            "analysis": {"metrics": [{"name": "errors", "query": "x", "max": 0.01}]}},
        "scaling": {"minReplicas": 2, "maxReplicas": 10, "metric": {"query": "q", "targetPerReplica": 100.0}}
    }));
    assert_eq!(violations("Release", &r, None), Vec::<String>::new());
}

#[test]
fn decreasing_canary_weights_are_rejected() {
    let r =
        release(json!({"strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("must not decrease")));
}

#[test]
fn a_canary_step_does_exactly_one_thing() {
    let r = release(json!({"strategy": {"type": "Canary", "canary": {"steps": [{"setWeight": 5, "pause": {}}]}}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("exactly one")));
}

#[test]
fn canary_settings_need_the_canary_type_and_analysis_steps_need_metrics() {
    let r = release(json!({"strategy": {"type": "Rolling", "canary": {"steps": [{"setWeight": 5}]}}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("only allowed with strategy.type Canary")));
    let r = release(json!({"strategy": {"type": "Canary"}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("needs strategy.canary.steps")));
    let r = release(json!({"strategy": {"type": "Canary", "canary": {"steps": [{"analysis": {"duration": "1m"}}]}}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("needs strategy.analysis.metrics")));
}

#[test]
fn min_replicas_above_max_is_rejected() {
    let r = release(
        json!({"scaling": {"minReplicas": 5, "maxReplicas": 2, "metric": {"query": "q", "targetPerReplica": 1.0}}}),
    );
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("minReplicas must not be above")));
}

#[test]
fn a_metric_needs_a_success_condition() {
    let r = release(json!({"strategy": {"analysis": {"metrics": [{"name": "e", "query": "x"}]}}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("needs a success condition")));
    let r =
        release(json!({"strategy": {"analysis": {"metrics": [{"name": "e", "query": "x", "min": 2.0, "max": 1.0}]}}}));
    assert!(violations("Release", &r, None).iter().any(|m| m.contains("min must not be above max")));
}

#[test]
fn identity_and_template_are_immutable() {
    let old = release(json!({}));
    let new = release(json!({"version": "2.0.0"}));
    assert!(violations("Release", &new, Some(&old)).iter().any(|m| m.contains("version is immutable")));
    let new = release(json!({"app": "cart"}));
    assert!(violations("Release", &new, Some(&old)).iter().any(|m| m.contains("app is immutable")));
    let new = release(json!({"template": {"spec": {"containers": [{"name": "app", "image": "shop:2"}]}}}));
    assert!(violations("Release", &new, Some(&old)).iter().any(|m| m.contains("template is immutable")));
    // Everything else may change (e.g. replicas or approval).
    let new = release(json!({"replicas": 3, "approval": {"required": true}}));
    assert_eq!(violations("Release", &new, Some(&old)), Vec::<String>::new());
}

#[test]
fn production_environments_cannot_expire_or_sleep() {
    let e = environment("prod", json!({"tier": "production", "ttl": "4h"}));
    assert!(violations("Environment", &e, None).iter().any(|m| m.contains("ttl is not allowed on a production")));
    let e = environment("prod", json!({"tier": "production", "sleepAfter": "1h"}));
    assert!(violations("Environment", &e, None).iter().any(|m| m.contains("sleepAfter is not allowed")));
    let e = environment("pr-7", json!({"tier": "preview", "ttl": "4h", "sleepAfter": "30m"}));
    assert_eq!(violations("Environment", &e, None), Vec::<String>::new());
}

#[test]
fn the_environment_namespace_is_immutable() {
    let old = environment("dev", json!({"namespace": "dev-a"}));
    let new = environment("dev", json!({"namespace": "dev-b"}));
    assert!(violations("Environment", &new, Some(&old)).iter().any(|m| m.contains("namespace is immutable")));
    let unset = environment("dev", json!({}));
    assert!(violations("Environment", &unset, Some(&old)).iter().any(|m| m.contains("namespace is immutable")));
    assert_eq!(violations("Environment", &old, Some(&old)), Vec::<String>::new());
}

#[test]
fn environment_names_must_be_namespace_names() {
    let e = environment("Not_A_Label", json!({}));
    assert!(violations("Environment", &e, None).iter().any(|m| m.contains("DNS-1123 label")));
}
