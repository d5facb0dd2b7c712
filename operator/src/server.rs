//! HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process serves), `/readyz`
//! (caches synced), `/debug/reconciles` (whether an object has been reconciled, and at which
//! versions). axum is the HTTP server because it is the maintained, tokio-native choice.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    http::header,
    response::IntoResponse,
    routing::get,
};
use tokio_util::sync::CancellationToken;

use crate::{controller::reconciles::Reconciles, metrics::Metrics};

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    reconciles: Arc<Reconciles>,
}

pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>, reconciles: Arc<Reconciles>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/debug/reconciles", get(reconciles_handler))
        .with_state(AppState { metrics, ready, reconciles })
}

/// `?controller=release&namespace=shop&name=web-1` (no namespace for an Environment).
#[derive(serde::Deserialize)]
struct Object {
    controller: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
}

async fn reconciles_handler(State(s): State<AppState>, Query(o): Query<Object>) -> impl IntoResponse {
    let key = crate::controller::fields::key(o.namespace.as_deref(), &o.name);
    match s.reconciles.report(&o.controller, &key) {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::NOT_FOUND, "not reconciled by this process yet").into_response(),
    }
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

/// Serves until `shutdown` is cancelled.
/// The listener is bound by the caller first, so that a taken address stops the process at once
/// instead of leaving it running without its endpoints.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
