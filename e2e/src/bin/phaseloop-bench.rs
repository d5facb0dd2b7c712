//! `make bench`: benchmarks on the local control plane, with the operator running (see
//! `e2e/scripts/run-bench.sh`). Results go to stdout and, as JSON, to `--out`.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use phaseloop_e2e::{
    bench::{self, ScalingRun},
    client,
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
