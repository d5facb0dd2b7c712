//! `make bench`: benchmarks on the local control plane, with the operator running (see
//! `e2e/scripts/run-bench.sh`). Results go to stdout and, as JSON, to `--out`.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use phaseloop_e2e::{
    bench::{self, ScalingRun},
    client,
    fleet::{self, FleetReport, FleetRun},
};

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
                let r = bench::scaling(&client, &run).await?;
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
    };
    if let Some(out) = args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, serde_json::to_string_pretty(&results)?)?;
        println!("results: {}", out.display());
    }
    Ok(())
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
