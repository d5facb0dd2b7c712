//! The phaseloop operator process.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use phaseloop::{controller, metrics::Metrics, server};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser, Debug)]
#[command(version, about = "phaseloop: Environments and Releases for the Ops half of the DevOps loop")]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "PHASELOOP_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Prometheus HTTP API for analysis and scaling, e.g. http://prometheus:9090.
    #[arg(long, env = "PHASELOOP_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Namespace whose pods may reach Environments with `isolation: Namespace` (monitoring).
    #[arg(long, env = "PHASELOOP_MONITORING_NAMESPACE", default_value = "monitoring")]
    monitoring_namespace: String,
    /// Page size of the initial LIST of each watch.
    #[arg(long, env = "PHASELOOP_PAGE_SIZE", default_value_t = 50)]
    page_size: u32,
    /// Log format.
    #[arg(long, env = "PHASELOOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }

    // Kubeconfig (KUBECONFIG or ~/.kube/config) outside a cluster, the service account inside.
    let client = kube::Client::try_default().await.context("no usable Kubernetes configuration")?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let config = controller::Config {
        page_size: args.page_size,
        prometheus_url: args.prometheus_url,
        monitoring_namespace: args.monitoring_namespace,
    };
    let ctx = Arc::new(controller::Context::new(client, metrics.clone(), config, shutdown.clone()));

    let http = tokio::spawn(server::serve(args.metrics_addr, server::router(metrics, ready.clone()), shutdown.clone()));
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    info!(version = env!("CARGO_PKG_VERSION"), "phaseloop operator starting");
    controller::run(ctx, ready).await;
    shutdown.cancel();
    http.await.context("HTTP server task")?.context("HTTP server")?;
    info!("phaseloop operator stopped");
    Ok(())
}

/// Cancels `token` on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
    }
    token.cancel();
}
