//! The Environment reconcile against a scripted API server: the finalizer's life (kube-runtime's
//! finalizer helper around phaseloop's cleanup) and a deletion that waits for its namespace.

use std::sync::Arc;

use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::reconcile;
use crate::{
    api::{Environment, EnvironmentPhase, EnvironmentStatus},
    controller::{
        Error,
        environment::FINALIZER,
        mock_api::{MockApi, context},
    },
    fixtures,
};

const ENVIRONMENT: &str = "/environments/pr-1";
const NAMESPACE: &str = "/api/v1/namespaces/pr-1";

/// A server that answers a patch of the Environment with `stored`.
fn server(stored: &Environment) -> MockApi {
    let api = MockApi::default();
    let stored = serde_json::to_value(stored).unwrap();
    api.on("PATCH", ENVIRONMENT, move |_| (200, stored.clone()));
    api.on("POST", "/events", |r| (201, r.body.clone()));
    api
}

async fn run(api: &MockApi, env: &Environment) -> Result<Action, Error> {
    let ctx = context(api, &[], Some(std::slice::from_ref(env)));
    reconcile(Arc::new(env.clone()), ctx).await
}

/// An Environment being deleted, its cleanup under way.
fn deleting() -> Environment {
    let mut env = fixtures::env("pr-1", json!({"tier": "preview"}));
    env.metadata.finalizers = Some(vec![FINALIZER.into()]);
    env.metadata.deletion_timestamp = Some(fixtures::time(60));
    env.status = Some(EnvironmentStatus { phase: Some(EnvironmentPhase::Terminating), ..Default::default() });
    env
}

/// The Environment's namespace, deleted since `deleting` when given.
fn namespace(deleting: bool) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "pr-1", "labels": {"phaseloop.dev/environment": "pr-1"}}});
    if deleting {
        ns["metadata"]["deletionTimestamp"] = json!("2026-11-26T10:01:00Z");
    }
    ns
}

#[tokio::test]
async fn the_finalizer_goes_on_before_anything_is_created() {
    let env = fixtures::env("pr-1", json!({"tier": "preview"}));
    let api = server(&env);
    let result = run(&api, &env).await;
    assert_eq!(result.unwrap(), Action::await_change(), "the patch's watch event runs the next reconcile");
    let writes = api.writes();
    assert_eq!(writes.len(), 1, "nothing but the finalizer: {writes:?}");
    assert!(writes[0].is("PATCH", ENVIRONMENT));
    let ops = writes[0].body.as_array().expect("a JSON patch");
    let add = ops.iter().find(|op| op["op"] == "add").expect("an add");
    assert_eq!(add["value"], json!([FINALIZER]));
}

#[tokio::test]
async fn a_deletion_deletes_the_namespace_and_keeps_the_finalizer_while_it_goes() {
    let env = deleting();
    let api = server(&env);
    api.on("GET", NAMESPACE, |_| (200, namespace(false)));
    api.on("DELETE", NAMESPACE, |_| (200, namespace(true)));
    let err = run(&api, &env).await.expect_err("waits for the namespace");
    assert!(matches!(err, Error::Waiting(_)), "{err:?}");
    assert_eq!(api.writes().iter().filter(|w| w.is("DELETE", NAMESPACE)).count(), 1);
    assert!(!api.writes().iter().any(|w| w.is("PATCH", ENVIRONMENT)), "the finalizer stays");

    // Still going: no second delete, still waiting.
    let api = server(&env);
    api.on("GET", NAMESPACE, |_| (200, namespace(true)));
    let err = run(&api, &env).await.expect_err("still waiting");
    assert!(matches!(err, Error::Waiting(_)), "{err:?}");
    assert_eq!(api.writes().len(), 0, "{:?}", api.writes());
}

#[tokio::test]
async fn once_the_namespace_is_gone_the_finalizer_comes_off() {
    let env = deleting();
    let api = server(&env);
    // No rule for the namespace: the server answers 404.
    assert_eq!(run(&api, &env).await.unwrap(), Action::await_change());
    let writes = api.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let ops = writes[0].body.as_array().expect("a JSON patch");
    // A test-and-remove: another controller's finalizer added meanwhile is never removed.
    assert_eq!(ops[0], json!({"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER}));
    assert_eq!(ops[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
}

#[tokio::test]
async fn a_foreign_namespace_of_the_same_name_is_never_deleted() {
    let env = deleting();
    let api = server(&env);
    api.on("GET", NAMESPACE, |_| (200, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pr-1"}})));
    assert_eq!(run(&api, &env).await.unwrap(), Action::await_change());
    assert!(!api.writes().iter().any(|w| w.method == "DELETE"), "{:?}", api.writes());
}
