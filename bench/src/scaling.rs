//! The scaling benchmark: the autoscaler's reaction time and overshoot on step loads, against the
//! HPA's sync period as the reference.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

use phaseloop_e2e::{Load, TestNamespace, create, eventually};

use crate::stats::Summary;

/// How one scaling benchmark runs.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingRun {
    /// The autoscaler's `interval`.
    pub interval: Duration,
    /// Load steps, alternating up and down.
    pub steps: usize,
}

/// What one scaling benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingReport {
    pub interval_s: f64,
    /// From the new load being visible in Prometheus to the Deployment's replicas patched.
    pub reaction_up_s: Summary,
    pub reaction_down_s: Summary,
    /// Highest replica count seen after a step up, over the count the load asks for, minus one.
    pub overshoot_max: f64,
    /// The HPA's default sync period, the reference: its reaction is up to one period after the
    /// metric changes (on average half), plus its metrics pipeline.
    pub hpa_sync_period_s: f64,
    /// `reaction_up_s.p50` over the HPA's average wait of half a sync period.
    pub p50_vs_hpa_half_period: f64,
}

const LOW: f64 = 200.0;
const HIGH: f64 = 600.0;
const TARGET: f64 = 100.0;

/// Steps the load of an autoscaled app between 2 and 6 replicas' worth and times each reaction.
pub async fn scaling(client: &Client, run: &ScalingRun) -> anyhow::Result<ScalingReport> {
    let ns = TestNamespace::new(client, "bench-scaling").await;
    let load = Load::new(&ns.name, "bench");
    load.set(LOW).await;
    let interval = format!("{}ms", run.interval.as_millis());
    // Scale-down without a stabilization window, so that every step down is a reaction too; the
    // scale-up rules are the defaults (2 → 6 is within +4 pods per 15s).
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "bench-1", "namespace": ns.name},
        "spec": {"app": "bench", "version": "1",
                 "template": {"spec": {"containers": [{"name": "app", "image": "bench:1"}]}},
                 "scaling": {"minReplicas": 1, "maxReplicas": 20, "interval": interval,
                     "metric": {"query": Load::QUERY, "targetPerReplica": TARGET},
                     "behavior": {"scaleDown": {"stabilizationWindow": "0s"}}}}}));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replicas = || async { deployments.get_opt("bench-1").await.ok().flatten().and_then(|d| d.spec.replicas) };
    let settle = Duration::from_secs(120);
    eventually("bench-1 at 2 replicas", settle, || async { (replicas().await == Some(2)).then_some(()) }).await?;

    let (mut up, mut down, mut overshoot) = (Vec::new(), Vec::new(), 0.0f64);
    for step in 0..run.steps {
        // Decisions come once per interval: a step right after the settling below would always
        // land at the same phase of that cycle. A spread offset (golden-ratio sequence) samples
        // every phase evenly, as load changes arriving at random moments do.
        let phase = (step as f64 * 0.618_033_988_7).fract();
        tokio::time::sleep(run.interval.mul_f64(phase)).await;
        let rising = step % 2 == 0;
        let (value, want) = if rising { (HIGH, 6) } else { (LOW, 2) };
        let before = replicas().await;
        let visible = load.set(value).await;
        // Poll the Deployment every 50ms: the first change is the reaction.
        let patched = loop {
            let now = replicas().await;
            if now != before {
                break Instant::now();
            }
            if visible.elapsed() > settle {
                anyhow::bail!("no reaction to load {value} within {settle:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reaction = patched.saturating_duration_since(visible).as_secs_f64();
        if rising {
            up.push(reaction)
        } else {
            down.push(reaction)
        }
        // Settle: two more decisions, watching for a count beyond what the load asks for.
        let until = Instant::now() + run.interval * 2 + Duration::from_secs(1);
        let mut highest = 0;
        while Instant::now() < until {
            highest = highest.max(replicas().await.unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if rising {
            overshoot = overshoot.max(f64::from(highest) / f64::from(want) - 1.0);
        }
        eventually(&format!("bench-1 at {want}"), settle, || async { (replicas().await == Some(want)).then_some(()) })
            .await?;
    }
    load.clear().await;
    let hpa = 15.0;
    let reaction_up_s = Summary::of(&up);
    Ok(ScalingReport {
        interval_s: run.interval.as_secs_f64(),
        p50_vs_hpa_half_period: reaction_up_s.p50 / (hpa / 2.0),
        reaction_up_s,
        reaction_down_s: Summary::of(&down),
        overshoot_max: overshoot,
        hpa_sync_period_s: hpa,
    })
}
