//! The demo app of the real node's scenarios: a small HTTP service whose failures are real.
//!
//! - `GET /` answers `<version>\n` with the headers `x-version: <version>` and `x-pod: <hostname>`
//!   (the pod's name), or a 500 for the share
//!   of requests given by `--error-rate` (exactly that share, spread evenly: with 0.05 every 20th
//!   request fails), after `--latency-ms`.
//! - `GET /ready` is 200 once started (after a random delay of up to `--ready-after-max-ms`, chosen
//!   per process, so replicas become ready at different times as real ones do) and 503 while
//!   shutting down (the readiness probe).
//! - `GET /metrics`: `http_requests_total{code}` and the latency histogram
//!   `http_request_duration_seconds` of the requests to `/`; Prometheus adds the pod's namespace,
//!   app and version labels when it scrapes.
//!
//! The version comes from `--version` or `DEMO_VERSION` (set in each image's config from its tag).
//! `--exit-at-start N` exits with code N at once: a version that crashes at start. On SIGTERM the
//! app reports not ready, keeps serving for `--shutdown-delay-ms` (until kube-proxy has dropped the
//! pod from the Service), then stops accepting and finishes what is in flight.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Parser;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Version reported in every answer.
    #[arg(long, env = "DEMO_VERSION", default_value = "dev")]
    version: String,
    /// Share of requests to `/` answered with 500 (0..=1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Added latency of every request to `/`, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Exit at once with this code instead of serving (a version that fails at start).
    #[arg(long)]
    exit_at_start: Option<i32>,
    /// Become ready after a random delay of up to this many milliseconds (0: at once).
    #[arg(long, default_value_t = 0)]
    ready_after_max_ms: u64,
    /// After SIGTERM: keep serving (and report not ready) this long before closing the listener.
    #[arg(long, default_value_t = 4000)]
    shutdown_delay_ms: u64,
}

struct App {
    version: String,
    pod: String,
    error_rate: f64,
    latency: Duration,
    served: AtomicU64,
    ready: AtomicBool,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(code) = args.exit_at_start {
        eprintln!("demo-app {}: exiting at start with code {code} (--exit-at-start)", args.version);
        std::process::exit(code);
    }
    anyhow::ensure!((0.0..=1.0).contains(&args.error_rate), "--error-rate must be within 0..=1");
    let registry = Registry::new();
    let requests = IntCounterVec::new(Opts::new("http_requests_total", "Requests to / by status code"), &["code"])?;
    let duration = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "Latency of requests to /")
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        &["code"],
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    // Both codes exist from the start, so rates and ratios have a series even before an error.
    for code in ["200", "500"] {
        requests.with_label_values(&[code]);
        duration.with_label_values(&[code]);
    }
    // The pod's name: the container's hostname.
    let pod = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let app = Arc::new(App {
        version: args.version.clone(),
        pod,
        error_rate: args.error_rate,
        latency: Duration::from_millis(args.latency_ms),
        served: AtomicU64::new(0),
        ready: AtomicBool::new(args.ready_after_max_ms == 0),
        registry,
        requests,
        duration,
    });
    if args.ready_after_max_ms > 0 {
        // No rand dependency: the clock's nanoseconds and the pid differ from pod to pod.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos() as u64;
        let delay = Duration::from_millis((nanos ^ u64::from(std::process::id())) % (args.ready_after_max_ms + 1));
        let app = app.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            app.ready.store(true, Ordering::SeqCst);
            eprintln!("demo-app: ready after {delay:?}");
        });
    }
    let router = Router::new()
        .route("/", get(root))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "demo-app {} listening on {} (error rate {}, latency {}ms)",
        args.version, args.listen, args.error_rate, args.latency_ms
    );
    let delay = Duration::from_millis(args.shutdown_delay_ms);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            terminated().await;
            app.ready.store(false, Ordering::SeqCst);
            eprintln!("demo-app: SIGTERM, not ready; serving {delay:?} more");
            tokio::time::sleep(delay).await;
        })
        .await?;
    eprintln!("demo-app: stopped");
    Ok(())
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
}

async fn root(State(app): State<Arc<App>>) -> Response {
    let start = Instant::now();
    if !app.latency.is_zero() {
        tokio::time::sleep(app.latency).await;
    }
    // Request n fails when the running count of errors owed, floor(n * rate), goes up by one.
    let n = app.served.fetch_add(1, Ordering::SeqCst) as f64;
    let fail = ((n + 1.0) * app.error_rate).floor() > (n * app.error_rate).floor();
    let status = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let code = status.as_u16().to_string();
    app.requests.with_label_values(&[&code]).inc();
    app.duration.with_label_values(&[&code]).observe(start.elapsed().as_secs_f64());
    let headers = [("x-version", app.version.as_str()), ("x-pod", app.pod.as_str())];
    (status, headers, format!("{}\n", app.version)).into_response()
}

async fn ready(State(app): State<Arc<App>>) -> StatusCode {
    if app.ready.load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&app.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response()
}
