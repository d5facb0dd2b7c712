//! `make bench`: benchmarks on the local control plane, with the operator running (see
//! `e2e/scripts/run-bench.sh`). Results go to stdout and, as JSON, to `--out`.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use phaseloop_bench::{
    fleet::{
        self, FleetReport, FleetRun,
        peers::{self, Peer, PeersReport, PeersRun},
    },
    scaling::{self, ScalingRun},
    soak::{self, SoakRun},
};
use phaseloop_e2e::client;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
    /// Where to write the results as JSON.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Bench {
    /// Autoscaler reaction time and overshoot on step loads.
    Scaling {
        /// Autoscaler intervals to measure, in seconds (the HPA syncs every 15s).
        #[arg(long = "interval", default_values_t = [15.0, 5.0])]
        intervals: Vec<f64>,
        /// Load steps per interval (alternately up and down).
        #[arg(long, default_value_t = 8)]
        steps: usize,
    },
    /// N Environments and M Releases to Live, against the same objects applied directly; the
    /// operator's memory, CPU, API requests, latencies and no-op writes.
    Fleet {
        /// Sizes to run, each `ENVIRONMENTS/RELEASES` (e.g. 100/1000).
        #[arg(long = "size", default_values_t = ["10/100".to_string(), "100/1000".to_string()])]
        sizes: Vec<String>,
        /// Live Releases touched (a no-op change) to time watch-to-reconcile at full size.
        #[arg(long, default_value_t = 100)]
        touches: usize,
        /// Per size: how long creation may take before the run fails.
        #[arg(long, default_value_t = 1200)]
        timeout_s: u64,
    },
    /// Ephemeral Environments with a Release each, created, Live and deleted wave after wave: the
    /// operator's bookkeeping and memory before and after (they must end where they started).
    Soak {
        #[arg(long, default_value_t = 5000)]
        environments: usize,
        #[arg(long, default_value_t = 100)]
        wave: usize,
        /// How long one wave may take, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout_s: u64,
    },
    /// Side by side with Argo Rollouts: the same apps rolled v1 → v2 by the same canary steps, once
    /// by each controller on the same cluster; memory, CPU, API requests (audit log), time.
    Peers {
        /// Numbers of apps to run (each size runs both controllers).
        #[arg(long = "size", default_values_t = [100, 1000])]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 4)]
        replicas: i32,
        #[arg(long, default_value_t = 10)]
        per_namespace: usize,
        /// Each canary pause, in seconds.
        #[arg(long, default_value_t = 10)]
        pause_s: u64,
        /// Every n-th app gets the Prometheus analysis in the v2 → v3 round (0: none).
        #[arg(long, default_value_t = 10)]
        analysis_every: usize,
        #[arg(long, default_value_t = 10)]
        analysis_interval_s: u64,
        /// The v2 → v3 round with analysis only at sizes up to this many apps (default: every size).
        #[arg(long)]
        analysis_up_to: Option<usize>,
        /// Controllers, in the order they run.
        #[arg(long, value_delimiter = ',', default_values_t = ["argo-rollouts".to_string(), "phaseloop".to_string()])]
        controllers: Vec<String>,
        /// Leave out the floor (the same steps scripted with the fewest writes, run first).
        #[arg(long)]
        no_floor: bool,
        /// Per phase: how long until every app must serve the new version.
        #[arg(long, default_value_t = 7200)]
        timeout_s: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = client().await;
    let results = match args.bench {
        Bench::Scaling { intervals, steps } => {
            let mut reports = Vec::new();
            println!("autoscaler reaction: load visible in Prometheus → Deployment replicas patched");
            println!(
                "{:>9} {:>6} {:>9} {:>9} {:>9} {:>11} {:>10} {:>14}",
                "interval", "steps", "up p50", "up p95", "down p50", "down p95", "overshoot", "p50/HPA 7.5s"
            );
            for interval in intervals {
                let run = ScalingRun { interval: Duration::from_secs_f64(interval), steps };
                let r = scaling::scaling(&client, &run).await?;
                println!(
                    "{:>8}s {:>6} {:>8.2}s {:>8.2}s {:>8.2}s {:>10.2}s {:>9.0}% {:>14.2}",
                    r.interval_s,
                    steps,
                    r.reaction_up_s.p50,
                    r.reaction_up_s.p95,
                    r.reaction_down_s.p50,
                    r.reaction_down_s.p95,
                    r.overshoot_max * 100.0,
                    r.p50_vs_hpa_half_period
                );
                reports.push(r);
            }
            serde_json::json!({"scaling": reports})
        }
        Bench::Soak { environments, wave, timeout_s } => {
            let run = SoakRun { environments, wave, timeout: Duration::from_secs(timeout_s) };
            let r = soak::soak(&client, &run).await?;
            println!("soak: {environments} Environments with a Release each, {wave} at a time, in {:.0}s", r.seconds);
            println!(
                "  RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
                r.rss_before_mib, r.rss_peak_mib, r.rss_after_mib
            );
            for (map, before) in &r.entries_before {
                println!(
                    "  {map:<16} {before:>8} before {:>8} after",
                    r.entries_after.get(map).copied().unwrap_or_default()
                );
            }
            serde_json::json!({"soak": r})
        }
        Bench::Fleet { sizes, touches, timeout_s } => {
            let mut reports = Vec::new();
            for size in sizes {
                let (n, m) =
                    size.split_once('/').ok_or_else(|| anyhow::anyhow!("size {size}: ENVIRONMENTS/RELEASES"))?;
                let run = FleetRun {
                    environments: n.parse()?,
                    releases: m.parse()?,
                    restart: true,
                    touches,
                    timeout: Duration::from_secs(timeout_s),
                };
                println!("fleet {size}: running");
                let r = fleet::fleet(&client, &run).await?;
                print_fleet(&r);
                reports.push(r);
            }
            serde_json::json!({"fleet": reports})
        }
        Bench::Peers {
            sizes,
            replicas,
            per_namespace,
            pause_s,
            analysis_every,
            analysis_interval_s,
            analysis_up_to,
            controllers,
            no_floor,
            timeout_s,
        } => {
            let controllers = controllers.iter().map(|c| c.parse()).collect::<anyhow::Result<Vec<Peer>>>()?;
            let prometheus_url = phaseloop_e2e::prometheus_url();
            let mut reports = Vec::new();
            for apps in sizes {
                let run = PeersRun {
                    apps,
                    per_namespace,
                    replicas,
                    pause: Duration::from_secs(pause_s),
                    analysis_every,
                    analysis_interval: Duration::from_secs(analysis_interval_s),
                    analysis_round: analysis_up_to.is_none_or(|n| apps <= n),
                    controllers: controllers.clone(),
                    floor: !no_floor,
                    timeout: Duration::from_secs(timeout_s),
                    prometheus_url: prometheus_url.clone(),
                };
                println!("peers {apps} apps: running");
                let r = peers::peers(&client, &run).await?;
                print_peers(&r);
                reports.push(r);
                // Written after each size, so a larger size that fails keeps the smaller ones.
                write_out(args.out.as_ref(), &serde_json::json!({"peers": reports}))?;
            }
            serde_json::json!({"peers": reports})
        }
    };
    write_out(args.out.as_ref(), &results)?;
    if let Some(out) = args.out {
        println!("results: {}", out.display());
    }
    Ok(())
}

fn write_out(out: Option<&PathBuf>, results: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(out) = out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(results)?)?;
    }
    Ok(())
}

fn print_peers(r: &PeersReport) {
    println!(
        "  {} apps in {} namespaces, {} replicas, steps {}, analysis on {} apps every {}s",
        r.apps,
        r.namespaces,
        r.replicas,
        r.steps.join(" "),
        r.analysis_apps,
        r.analysis_interval_s
    );
    for run in &r.runs {
        println!("  {} ({}):", run.controller, run.version);
        println!(
            "    RSS idle {:.1} MiB, steady v1 {:.1}, steady v2 {:.1}, steady v3 {:.1}, peak {:.1}, re-list peak {:.1} ({:.1}s, {} requests)",
            run.rss_idle_mib,
            run.rss_steady_v1_mib,
            run.rss_steady_mib,
            run.rss_steady_v3_mib,
            run.rss_peak_mib,
            run.rss_peak_relist_mib,
            run.relist_s,
            run.relist_requests.total
        );
        println!(
            "    /metrics with every app at v2: {:.0} series, scraped in {:.1} ms",
            run.metrics_series, run.metrics_scrape_ms
        );
        for (name, p) in [("setup v1", &run.setup), ("v1 → v2", &run.rollout), ("v2 → v3 analysis", &run.analysis)]
        {
            if p.app_seconds.n == 0 {
                continue; // a round that did not run at this size
            }
            println!(
                "    {name:<17} all served in {:>7.1}s (per app p50 {:.1}s, max {:.1}s); CPU {:.1}s; requests {} ({} leader election, {} writes, {:.1}/app); first write p50 {:.0} ms, p95 {:.0} ms",
                p.seconds,
                p.app_seconds.p50,
                p.app_seconds.max,
                p.cpu_s,
                p.requests.total,
                p.requests.leader_election,
                p.requests.writes,
                p.requests_per_app,
                p.first_write_ms.p50,
                p.first_write_ms.p95
            );
            println!("      {:?}", p.requests.by_verb);
            let k = &p.controller_manager;
            println!(
                "      controller-manager: {:.0} requests; Deployment syncs {:.0} (queue wait {:.1}s), ReplicaSet syncs {:.0} (queue wait {:.1}s)",
                k.requests,
                k.deployment_syncs,
                k.deployment_queue_wait_s,
                k.replicaset_syncs,
                k.replicaset_queue_wait_s
            );
        }
    }
    if let Some(f) = &r.floor {
        for (name, p) in [("setup v1", &f.setup), ("v1 → v2", &f.rollout), ("v2 → v3", &f.analysis)] {
            if p.app_seconds.n == 0 {
                continue;
            }
            println!(
                "  floor {name:<11} all served in {:>7.1}s (per app p50 {:.1}s, max {:.1}s); {} writes; controller-manager {:.0} requests",
                p.seconds, p.app_seconds.p50, p.app_seconds.max, p.writes, p.controller_manager.requests
            );
        }
    }
    println!(
        "  {:<50} {:>12} {:>14} {:>8} {:>10} {:>10} {:>6}",
        "figure", "phaseloop", "argo-rollouts", "ratio", "p/floor", "a/floor", "goal"
    );
    for x in &r.ratios {
        let ratio = x.ratio.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        let goal = match (x.goal, x.met) {
            (Some(g), Some(true)) => format!("≤{g} met"),
            (Some(g), _) => format!("≤{g} MISSED"),
            _ => String::new(),
        };
        let over = |v: f64| x.floor.map(|f| format!("{:.2}", v / f)).unwrap_or_else(|| "-".into());
        println!(
            "  {:<50} {:>12.1} {:>14.1} {:>8} {:>10} {:>10} {goal}",
            x.figure,
            x.phaseloop,
            x.argo_rollouts,
            ratio,
            over(x.phaseloop),
            over(x.argo_rollouts)
        );
    }
}

fn print_fleet(r: &FleetReport) {
    let objects = r.environments + r.releases;
    println!("  {} Environments + {} Releases ({objects} objects)", r.environments, r.releases);
    println!(
        "  time to all Live      {:>8.1}s   baseline (direct apply) {:>6.1}s   ratio {:.2}",
        r.phaseloop_s, r.baseline_s, r.overhead_ratio
    );
    println!(
        "  operator RSS          idle {:.1} MiB, steady {:.1} MiB, peak in run {:.1} MiB, peak in re-list {:.1} MiB ({:.2}x steady)",
        r.rss_idle_mib, r.rss_steady_mib, r.rss_peak_run_mib, r.rss_peak_relist_mib, r.relist_peak_over_steady
    );
    println!("  CPU                   {:.1}s in the run, {:.1} ms per object", r.cpu_s, r.cpu_ms_per_object);
    println!(
        "  API requests/object   {:.2} ({:.2} writes): {:?}",
        r.requests_per_object, r.writes_per_object, r.requests_by_verb
    );
    for (c, q) in &r.reconcile_ms {
        println!("  reconcile {c:<12} p50 {:.1} ms, p99 {:.1} ms ({} reconciles)", q.p50, q.p99, q.n);
    }
    let (w, t) = (&r.watch_to_reconcile_run_ms, &r.watch_to_reconcile_touch_ms);
    println!(
        "  watch→reconcile       run p50 {:.1} ms, p99 {:.1} ms; touches at size p50 {:.1} ms, p99 {:.1} ms",
        w.p50, w.p99, t.p50, t.p99
    );
    println!(
        "  no-op writes          touches {}, re-list {} ({} reconciles in {:.1}s)",
        r.noop_touch_writes, r.noop_relist_writes, r.relist_reconciles, r.relist_s
    );
    println!("  re-list requests      {:?}", r.relist_requests);
}
