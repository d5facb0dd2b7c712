//! The Release reconcile against a scripted API server: what the owner hears and what is retried
//! when a write fails. A new Release's first reconcile applies its Deployment, then its Service,
//! then its status; each test makes one of those fail.

use std::{sync::Arc, time::Duration};

use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::reconcile;
use crate::{
    api::Release,
    controller::{
        Error,
        mock_api::{MockApi, Recorded, context, status},
    },
    fixtures,
};

const DEPLOYMENT: &str = "/namespaces/prod/deployments/shop-1";
const SERVICE: &str = "/namespaces/prod/services/shop";
const STATUS: &str = "/namespaces/prod/releases/shop-1/status";

/// The server of a new Release `shop-1` with a Service that takes every write but the one `fail`
/// answers (method, path fragment, answer).
fn server(fail: Option<(&str, &str, (u16, Value))>) -> (MockApi, Release) {
    let api = MockApi::default();
    let rel = fixtures::release("shop-1", json!({"service": {"ports": [{"port": 80}]}}));
    if let Some((method, fragment, answer)) = fail {
        api.on(method, fragment, move |_| answer.clone());
    }
    api.accept("PATCH", STATUS, serde_json::to_value(&rel).unwrap());
    api.accept("PATCH", DEPLOYMENT, json!({}));
    api.accept("PATCH", SERVICE, json!({}));
    api.on("POST", "/events", |r| (201, r.body.clone()));
    (api, rel)
}

async fn run(api: &MockApi, rel: &Release) -> (Result<Action, Error>, Arc<crate::controller::Context>) {
    let ctx = context(api, std::slice::from_ref(rel), None);
    (reconcile(Arc::new(rel.clone()), ctx.clone()).await, ctx)
}

/// The `Degraded` condition of the last status written: (status, reason, message).
fn degraded(api: &MockApi) -> Option<(String, String, String)> {
    let written = api.requests().into_iter().rfind(|r| r.is("PATCH", STATUS))?;
    let c = written.body["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Degraded")?.clone();
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((text("status"), text("reason"), text("message")))
}

/// Reasons of the Events published.
fn events(api: &MockApi) -> Vec<String> {
    let posted = api.requests().into_iter().filter(|r| r.is("POST", "/events"));
    posted.map(|r: Recorded| r.body["reason"].as_str().unwrap_or_default().to_string()).collect()
}

fn count(api: &MockApi, method: &str, fragment: &str) -> usize {
    api.requests().iter().filter(|r| r.is(method, fragment)).count()
}

#[tokio::test]
async fn the_scripted_server_sees_the_whole_first_reconcile() {
    // The baseline the failure tests differ from: every write goes through.
    let (api, rel) = server(None);
    let (result, _) = run(&api, &rel).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!((count(&api, "PATCH", DEPLOYMENT), count(&api, "PATCH", SERVICE)), (1, 1));
    assert_eq!(degraded(&api).map(|d| d.0), Some("False".into()));
    assert_eq!(events(&api), ["Progressing"]);
}

#[tokio::test]
async fn a_child_the_api_server_refuses_is_reported_on_the_release_and_nothing_after_it_is_written() {
    let why = "Deployment.apps \"shop-1\" is invalid: spec.template.spec.containers[0].image: Required value";
    let (api, rel) = server(Some(("PATCH", DEPLOYMENT, status(422, "Invalid", why, &[]))));
    let (result, _) = run(&api, &rel).await;
    // Not retried in a loop: the spec must change, which wakes the Release.
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
    assert_eq!(count(&api, "PATCH", SERVICE), 0, "nothing after the refused child is applied");
    let (state, reason, message) = degraded(&api).expect("a status saying why");
    assert_eq!((state.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(message.contains("image: Required value"), "the API server's words: {message}");
    assert_eq!(events(&api), ["InvalidSpec"]);
}

#[tokio::test]
async fn an_exceeded_quota_is_a_condition_and_an_event_and_is_retried() {
    let why = "deployments.apps \"shop-1\" is forbidden: exceeded quota: phaseloop-quota, requested: pods=1, \
               used: pods=4, limited: pods=4";
    let (api, rel) = server(Some(("PATCH", DEPLOYMENT, status(403, "Forbidden", why, &[]))));
    let (result, ctx) = run(&api, &rel).await;
    let err = result.expect_err("retried: the quota or the usage may change");
    assert!(matches!(err.cause(), Error::QuotaExceeded(_)), "{err:?}");
    let (state, reason, message) = degraded(&api).expect("a status saying why");
    assert_eq!((state.as_str(), reason.as_str()), ("True", "QuotaExceeded"));
    assert!(message.contains("pods=4"), "{message}");
    assert_eq!(events(&api), ["QuotaExceeded"]);
    assert_eq!(
        ctx.retries.failed("prod/shop-1", &err),
        Action::requeue(crate::controller::retry::delay("prod/shop-1", 1))
    );
}

#[tokio::test]
async fn a_conflict_is_retried_at_once_and_reported_nowhere() {
    let why = "Operation cannot be fulfilled on releases.phaseloop.dev \"shop-1\": the object has been modified";
    let (api, rel) = server(Some(("PATCH", STATUS, status(409, "Conflict", why, &[]))));
    let (result, ctx) = run(&api, &rel).await;
    let err = result.expect_err("the conflict is the reconcile's error");
    assert!(matches!(err.cause(), Error::Conflict(_)), "{err:?}");
    assert_eq!(count(&api, "PATCH", STATUS), 1, "no second status write to report it");
    assert_eq!(events(&api), Vec::<String>::new());
    // The next reconcile reads the newer object, within about a second.
    let first = crate::controller::retry::delay("prod/shop-1", 1);
    assert_eq!(ctx.retries.failed("prod/shop-1", &err), Action::requeue(first));
    assert!(first < Duration::from_millis(1300), "{first:?}");
}

#[tokio::test]
async fn forbidden_is_retried_with_a_growing_backoff_and_changes_nothing_else() {
    let why = "deployments.apps \"shop-1\" is forbidden: User \"system:serviceaccount:phaseloop:phaseloop\" \
               cannot patch resource \"deployments\"";
    let (api, rel) = server(Some(("PATCH", DEPLOYMENT, status(403, "Forbidden", why, &[]))));
    let (result, ctx) = run(&api, &rel).await;
    let err = result.expect_err("forbidden");
    assert!(matches!(err.cause(), Error::Forbidden(_)), "{err:?}");
    assert_eq!(api.writes().len(), 1, "only the refused apply: {:?}", api.writes());
    let waits: Vec<Action> = (0..3).map(|_| ctx.retries.failed("prod/shop-1", &err)).collect();
    let expected: Vec<Action> =
        (1..=3).map(|n| Action::requeue(crate::controller::retry::delay("prod/shop-1", n))).collect();
    assert_eq!(waits, expected, "1s, 2s, 4s (plus spread)");
}

#[tokio::test]
async fn a_terminating_namespace_ends_the_retries() {
    let why = "deployments.apps \"shop-1\" is forbidden: unable to create new content in namespace prod because it \
               is being terminated";
    let cause = [("NamespaceTerminating", "namespace prod is being terminated")];
    let (api, rel) = server(Some(("PATCH", DEPLOYMENT, status(403, "Forbidden", why, &cause))));
    let (result, ctx) = run(&api, &rel).await;
    let err = result.expect_err("terminating");
    assert!(matches!(err.cause(), Error::NamespaceTerminating(_)), "{err:?}");
    assert_eq!(api.writes().len(), 1, "nothing written after it: {:?}", api.writes());
    // Its deletion takes the Release too: no retry, only a change would wake it.
    assert_eq!(ctx.retries.failed("prod/shop-1", &err), Action::await_change());
}

/// A Prometheus HTTP API on 127.0.0.1 answering every instant query with `value`; the queries it
/// got.
async fn prometheus(value: &'static str) -> (crate::prometheus::Prometheus, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::{Json, routing::post};
    let queries = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = queries.clone();
    let app = axum::Router::new().route(
        "/api/v1/query",
        post(move |form: String| {
            let query =
                form_urlencoded::parse(form.as_bytes()).find(|(k, _)| k == "query").map(|(_, v)| v.into_owned());
            seen.lock().unwrap().push(query.unwrap_or_default());
            async move {
                Json(json!({"status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, value]}]}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (crate::prometheus::Prometheus::new(&url).unwrap(), queries)
}

#[tokio::test]
async fn the_live_release_reads_the_load_from_the_injected_prometheus_and_applies_the_total() {
    let mut rel = fixtures::release(
        "shop-1",
        json!({"scaling": {"minReplicas": 1, "maxReplicas": 10,
            "metric": {"query": "sum(rate(requests_total{namespace=\"{{namespace}}\",app=\"{{app}}\"}[1m]))",
                       "targetPerReplica": 100.0}}}),
    );
    rel.status = Some(crate::api::ReleaseStatus { phase: Some(crate::api::ReleasePhase::Live), ..Default::default() });
    let api = MockApi::default();
    api.accept("PATCH", STATUS, serde_json::to_value(&rel).unwrap());
    api.accept("PATCH", DEPLOYMENT, json!({}));
    api.on("POST", "/events", |r| (201, r.body.clone()));
    let (prometheus, queries) = prometheus("250").await;
    let ctx = crate::controller::mock_api::context_with(&api, std::slice::from_ref(&rel), None, Some(prometheus));
    reconcile(Arc::new(rel), ctx).await.unwrap();
    assert_eq!(*queries.lock().unwrap(), ["sum(rate(requests_total{namespace=\"prod\",app=\"shop\"}[1m]))"]);
    let applied = api.requests().into_iter().rfind(|r| r.is("PATCH", DEPLOYMENT)).expect("the Deployment applied");
    assert_eq!(applied.body["spec"]["replicas"], 3, "250 at 100 per replica");
    let written = api.requests().into_iter().rfind(|r| r.is("PATCH", STATUS)).expect("a status");
    assert_eq!(written.body["status"]["scaling"]["desiredReplicas"], 3);
}
