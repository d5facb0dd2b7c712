//! The traffic generator of the real node's scenarios: steady load on an app's Service, through
//! kube-proxy, or on the node's Gateway, from inside the node's network namespace
//! (`nsenter --net=...`). Every request gets a new connection, so the Service's current endpoints
//! (or the Gateway's current routes) decide who answers, as for many clients. At the Gateway,
//! `--host` names the route's hostname and `--header` adds the headers a route may match on.
//!
//! One JSON line per request goes to `--out` as soon as it is answered:
//! `{"t": <unix ms when sent>, "status": <HTTP status, 0 when no answer>, "version": "<x-version
//! header or empty>", "pod": "<x-pod header>", "ms": <latency>, "error": "<why there was no
//! answer>"}`.
//! It stops when its stdin closes (the test dropped it), on SIGTERM/SIGINT, or after `--duration`.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// URL to send GET requests to (a Service's ClusterIP inside the node's network namespace).
    #[arg(long)]
    url: String,
    /// Requests per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Stop after this many seconds at most (a bound; the tests stop it earlier).
    #[arg(long, default_value_t = 900)]
    duration: u64,
    /// Timeout of one request, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Where to append the records (JSON lines).
    #[arg(long)]
    out: PathBuf,
    /// The Host header of every request (e.g. an HTTPRoute's hostname); else the URL's authority.
    #[arg(long)]
    host: Option<String>,
    /// A request header `NAME:VALUE`, sent with every request (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
}

fn parse_header(s: &str) -> Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("'{s}' is not NAME:VALUE"))?;
    let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
    let value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
    Ok((name, value))
}

#[derive(serde::Serialize)]
struct Record {
    t: u64,
    status: u16,
    version: String,
    pod: String,
    ms: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0 && args.rate <= 1000.0, "--rate must be within (0, 1000]");
    // Records belong under $E2E_STATE/logs (the tests pass one there), never in the working directory.
    anyhow::ensure!(args.out.is_absolute(), "--out must be an absolute path, e.g. under $E2E_STATE/logs");
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(host) = &args.host {
        // hyper writes the URL's authority as Host only when the request has none.
        headers.insert(reqwest::header::HOST, reqwest::header::HeaderValue::from_str(host)?);
    }
    for (name, value) in &args.headers {
        headers.append(name.clone(), value.clone());
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(0) // a new connection per request
        .timeout(Duration::from_millis(args.timeout_ms))
        .connect_timeout(Duration::from_millis(args.timeout_ms))
        .build()?;
    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&args.out)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut n = 0;
        while let Some(r) = rx.blocking_recv() {
            let mut line = serde_json::to_vec(&r).expect("a record serializes");
            line.push(b'\n');
            out.write_all(&line)?;
            n += 1;
        }
        out.flush()?;
        Ok(n)
    });

    // stdin is read on a thread of its own (tokio's io-std feature is not enabled in the workspace).
    let (closed_tx, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while std::io::stdin().read(&mut buf).is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}, _ = int.recv() => {}, _ = stdin_closed => {},
            _ = tokio::time::sleep(Duration::from_secs(args.duration)) => {},
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut inflight = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    let host = args.host.as_deref().map(|h| format!(" (Host {h})")).unwrap_or_default();
    eprintln!("traffic: {} req/s to {}{host} -> {}", args.rate, args.url, args.out.display());
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let (client, url, tx) = (client.clone(), args.url.clone(), tx.clone());
        sent += 1;
        inflight.spawn(async move {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
            let start = Instant::now();
            let (status, version, pod, error) = match client.get(&url).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let header =
                        |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let (version, pod) = (header("x-version"), header("x-pod"));
                    match resp.bytes().await {
                        Ok(_) => (status, version, pod, String::new()),
                        Err(e) => (0, version, pod, format!("body: {e}")),
                    }
                }
                Err(e) => (0, String::new(), String::new(), error_chain(&e)),
            };
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            let _ = tx.send(Record { t, status, version, pod, ms, error });
        });
        while inflight.try_join_next().is_some() {}
    }
    // Requests already sent are waited for (each is bounded by the timeout) and recorded.
    while inflight.join_next().await.is_some() {}
    drop(tx);
    let written = writer.await??;
    eprintln!("traffic: stopped after {sent} requests ({written} recorded)");
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
