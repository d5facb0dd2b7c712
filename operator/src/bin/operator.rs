//! The phaseloop operator process.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use phaseloop::{
    controller,
    leader::{Elector, Fence, Timings},
    metrics::Metrics,
    server,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser, Debug)]
#[command(version, about = "phaseloop: Environments and Releases for the Ops half of the DevOps loop")]
struct Args {
    /// Address of /metrics, /healthz and /readyz. Loopback by default, for a process on a host;
    /// the chart sets `0.0.0.0:<port>` for its pod, which the kubelet and Prometheus reach.
    #[arg(long, env = "PHASELOOP_METRICS_ADDR", default_value = "127.0.0.1:8080")]
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
    /// Reconciles in flight at most, per controller: bounds the memory of a re-list, when every
    /// object is reconciled at once.
    #[arg(long, env = "PHASELOOP_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Single-namespace mode: reconcile only the Releases of this namespace, and no Environments
    /// (for installs with a namespaced Role; see docs/install.md).
    #[arg(long, env = "PHASELOOP_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Leader election on a Lease, for more than one replica: only the leader reconciles.
    #[arg(long, env = "PHASELOOP_LEADER_ELECTION", default_value_t = false)]
    leader_election: bool,
    /// Namespace of the leader Lease (the chart sets the operator's own namespace).
    #[arg(long, env = "PHASELOOP_LEASE_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "PHASELOOP_LEASE_NAME", default_value = "phaseloop-operator")]
    lease_name: String,
    /// Identity in the leader election (default: the pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Kinds an Environment's infrastructure may hold, as `resource.group` (core group: no
    /// `.group`), comma-separated; RBAC, admission and API-registration kinds are never allowed.
    #[arg(long, env = "PHASELOOP_INFRASTRUCTURE_KINDS", value_delimiter = ',',
          default_values_t = controller::environment::allow_list::default_kinds())]
    infrastructure_kinds: Vec<String>,
    /// The loosest Pod Security Standard an Environment may ask for (`spec.podSecurity`); its
    /// namespace enforces `restricted` otherwise.
    #[arg(long, env = "PHASELOOP_MAX_POD_SECURITY", default_value = "restricted")]
    max_pod_security: phaseloop::api::PodSecurity,
    /// Reconcile only the Releases and Environments labelled `phaseloop.dev/instance: <id>`
    /// (without it: only those without the label), so that installs side by side never
    /// reconcile the same object.
    #[arg(long, env = "PHASELOOP_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Single-namespace mode: the RoleBinding that grants this operator its rights in the
    /// namespace; its finalizer `phaseloop.dev/access` is removed once nothing of the operator's
    /// is left in a namespace being deleted.
    #[arg(long, env = "PHASELOOP_ROLE_BINDING")]
    role_binding: Option<String>,
    /// Steer Gateway API HTTPRoutes for Releases with `trafficRouting.gatewayAPI` (needs the
    /// Gateway API CRDs installed and RBAC on httproutes: the chart's `trafficRouting.gatewayAPI`).
    #[arg(long, env = "PHASELOOP_GATEWAY_API", default_value_t = false)]
    gateway_api: bool,
    /// Log format.
    #[arg(long, env = "PHASELOOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Test hook: runs this process's clock ahead (`3h`) or behind (`-3h`) of the machine's, to
    /// test what an operator with a wrong clock does. Never set it otherwise.
    #[arg(long, env = "PHASELOOP_TEST_CLOCK_OFFSET", hide = true)]
    test_clock_offset: Option<jiff::SignedDuration>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Before an uninstall: stop the operator's Deployment, then remove phaseloop's finalizers
    /// from everything of this install (Releases, Environments, the single-namespace RoleBinding),
    /// so that deleting namespaces or the CRDs afterwards does not wait for an operator that is
    /// gone. The chart runs it as a pre-delete hook.
    LetGo {
        /// The operator's Deployment, `<namespace>/<name>`: scaled to zero, and its pods waited
        /// for, first (a running operator would put the finalizers back).
        #[arg(long)]
        stop_deployment: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

// jemalloc, configured in .cargo/config.toml to give memory back after a burst; see
// docs/performance.md for why (glibc kept what a creation burst had used).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().init(),
    }

    if let Some(offset) = args.test_clock_offset {
        tracing::warn!(%offset, "test hook: this process's clock is offset from the machine's");
        phaseloop::clock::set_offset(offset);
    }
    // Kubeconfig (KUBECONFIG or ~/.kube/config) outside a cluster, the service account inside.
    let metrics = Arc::new(Metrics::new());
    let mut kubeconfig = kube::Config::infer().await.context("no usable Kubernetes configuration")?;
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "phaseloop".into());
    let identity = args.identity.clone().unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    // Each process names itself in its requests, so the API server's audit log tells them apart.
    let agent = format!("phaseloop-operator/{} ({identity})", env!("CARGO_PKG_VERSION"));
    kubeconfig.headers.push((http::header::USER_AGENT, http::HeaderValue::from_str(&agent)?));
    let fence = if args.leader_election { Fence::elected() } else { Fence::open() };
    let client = phaseloop::client::build(kubeconfig, metrics.clone(), fence.clone())
        .context("cannot build a Kubernetes client")?;
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    let config = controller::Config {
        page_size: args.page_size,
        monitoring_namespace: args.monitoring_namespace,
        watch_namespace: args.watch_namespace,
        concurrency: args.concurrency,
        infrastructure_kinds: args.infrastructure_kinds,
        max_pod_security: args.max_pod_security,
        instance_id: args.instance_id,
        role_binding: args.role_binding,
        gateway_api: args.gateway_api,
    };
    if let Some(Command::LetGo { stop_deployment }) = args.command {
        return phaseloop::uninstall::let_go(&client, &config, stop_deployment.as_deref())
            .await
            .map_err(anyhow::Error::msg);
    }
    controller::startup::check_crds(&client, config.watch_namespace.as_deref()).await.map_err(anyhow::Error::msg)?;
    if config.gateway_api {
        controller::startup::check_gateway_api(&client, config.watch_namespace.as_deref())
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let (caches, writers) = controller::caches::new(config.watch_namespace.is_none(), config.gateway_api);
    let prometheus = args
        .prometheus_url
        .as_deref()
        .map(phaseloop::prometheus::Prometheus::new)
        .transpose()
        .context("cannot build the Prometheus HTTP client")?;
    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        metrics.clone(),
        config,
        shutdown.clone(),
        caches,
        prometheus,
    ));

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {} (PHASELOOP_METRICS_ADDR)", args.metrics_addr))?;
    let router = server::router(metrics.clone(), ready.clone(), ctx.reconciles.clone());
    let http = tokio::spawn(server::serve(listener, router, shutdown.clone()));
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    info!(version = env!("CARGO_PKG_VERSION"), "phaseloop operator starting");
    if args.leader_election {
        let elector =
            Elector::new(client, &args.lease_namespace, &args.lease_name, &identity, Timings::default(), fence);
        lead(elector, ctx, writers, ready, metrics, shutdown.clone()).await;
    } else {
        metrics.set_leader(true);
        controller::run(ctx, writers, ready).await;
    }
    shutdown.cancel();
    http.await.context("HTTP server task")?.context("HTTP server")?;
    info!("phaseloop operator stopped");
    Ok(())
}

/// Stands by until this process wins the Lease, then runs the controllers until shutdown, and
/// releases the Lease after they stopped. A standby is ready (it serves and waits); a leader that
/// loses the Lease exits at once, so that nothing it still has in flight can write after another
/// replica took over; Kubernetes restarts it as a standby.
async fn lead(
    elector: Elector,
    ctx: Arc<controller::Context>,
    writers: controller::caches::Writers,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let (leading, mut changes) = watch::channel(false);
    let stop = CancellationToken::new();
    let campaign = tokio::spawn(elector.run(leading, stop.clone()));
    ready.store(true, Ordering::SeqCst);
    info!("standing by for the leader Lease");
    tokio::select! {
        _ = shutdown.cancelled() => {
            stop.cancel();
            let _ = campaign.await;
            return;
        }
        won = changes.wait_for(|l| *l) => if won.is_err() { return },
    }
    ready.store(false, Ordering::SeqCst);
    metrics.set_leader(true);
    tokio::spawn(async move {
        if let Ok(lost) = changes.wait_for(|l| !*l).await {
            drop(lost);
            error!("lost the leader Lease; exiting so that only the new leader writes");
            std::process::exit(1);
        }
    });
    controller::run(ctx, writers, ready).await;
    stop.cancel();
    let _ = campaign.await;
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
