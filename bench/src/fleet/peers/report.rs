//! What the side-by-side benchmark reports: per phase and per controller, the
//! controller-manager's work meanwhile, and the ratios of phaseloop's figures over Argo Rollouts'.

use serde::{Deserialize, Serialize};

use phaseloop_e2e::audit::Counts;

use super::FloorReport;
use crate::{fleet::Scrape, stats::Summary};

/// One phase: a change applied to every app, until every app serves the new version.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseReport {
    /// From the first change sent to every app serving the new version (pods its Service selects).
    pub seconds: f64,
    /// Per app, from its change sent to it serving the new version.
    pub app_seconds: Summary,
    /// From the harness sending an app's change to the controller's first write about it (Events
    /// excluded), as the API server received it; milliseconds.
    pub first_write_ms: Summary,
    /// Controller CPU from the first change until it went quiet (no request but leader election
    /// for `QUIET`).
    pub cpu_s: f64,
    /// The controller's requests over the same span, from the audit log.
    pub requests: Counts,
    pub requests_per_app: f64,
    /// From every app serving the new version to the controller going quiet.
    pub settle_s: f64,
    pub rss_peak_mib: f64,
    /// What the cluster's controller-manager did meanwhile (its pods are the same for both).
    pub controller_manager: KcmWork,
}

/// The controller-manager's work over a phase, from its `/metrics`: the Deployment and
/// ReplicaSet controllers' syncs and how long items waited in their queues (5 workers each and a
/// client limit of 20 requests a second: what bounds how fast any controller's pods change here).
#[derive(Clone, Debug, Default, Serialize)]
pub struct KcmWork {
    pub requests: f64,
    pub deployment_syncs: f64,
    pub deployment_queue_wait_s: f64,
    pub replicaset_syncs: f64,
    pub replicaset_queue_wait_s: f64,
}

impl KcmWork {
    pub(super) fn between(a: &Scrape, b: &Scrape) -> Self {
        let d = |name: &str, with: &[&str]| b.sum(name, with) - a.sum(name, with);
        let mean = |queue: &str| {
            let with = format!("name=\"{queue}\"");
            let n = d("workqueue_queue_duration_seconds_count", &[&with]);
            if n > 0.0 { d("workqueue_queue_duration_seconds_sum", &[&with]) / n } else { 0.0 }
        };
        KcmWork {
            requests: d("rest_client_requests_total", &[]),
            deployment_syncs: d("workqueue_adds_total", &["name=\"deployment\""]),
            deployment_queue_wait_s: mean("deployment"),
            replicaset_syncs: d("workqueue_adds_total", &["name=\"replicaset\""]),
            replicaset_queue_wait_s: mean("replicaset"),
        }
    }
}

/// What one controller measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerReport {
    pub controller: String,
    pub version: String,
    pub user: String,
    /// A fresh process, no apps.
    pub rss_idle_mib: f64,
    /// Every app at v1, quiet.
    pub rss_steady_v1_mib: f64,
    /// Every app at v2 after the canary, quiet: the steady figure.
    pub rss_steady_mib: f64,
    /// Every app at v3 after the analysis round, quiet.
    pub rss_steady_v3_mib: f64,
    /// Series its `/metrics` exposes with every app at v2, and how long the cluster's Prometheus
    /// takes to scrape them (every 2s, for both controllers alike).
    pub metrics_series: f64,
    pub metrics_scrape_ms: f64,
    /// Highest over setup and both rollouts.
    pub rss_peak_mib: f64,
    /// Highest from a restart until quiet again.
    pub rss_peak_relist_mib: f64,
    /// From the new process's start to its last request of the re-list.
    pub relist_s: f64,
    pub relist_cpu_s: f64,
    pub relist_requests: Counts,
    pub setup: PhaseReport,
    /// v1 → v2 through the canary steps: the headline figures.
    pub rollout: PhaseReport,
    /// v2 → v3, with the analysis on a subset of the apps.
    pub analysis: PhaseReport,
}

/// phaseloop's figure over Argo Rollouts', with the goal when there is one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    pub figure: String,
    pub phaseloop: f64,
    pub argo_rollouts: f64,
    /// `phaseloop / argo_rollouts`; None when Argo's figure is 0.
    pub ratio: Option<f64>,
    pub goal: Option<f64>,
    pub met: Option<bool>,
    /// The floor's figure (the same steps scripted, the fewest writes), where it has one.
    #[serde(default)]
    pub floor: Option<f64>,
}

/// What the benchmark measured at one size.
#[derive(Clone, Debug, Serialize)]
pub struct PeersReport {
    pub apps: usize,
    pub namespaces: usize,
    pub replicas: i32,
    pub steps: Vec<String>,
    pub analysis_apps: usize,
    pub analysis_interval_s: f64,
    pub runs: Vec<PeerReport>,
    /// The same steps scripted (None when left out).
    pub floor: Option<FloorReport>,
    pub ratios: Vec<Ratio>,
}

/// The ratios of the report: each figure of phaseloop over Argo Rollouts'.
pub fn ratios(p: &PeerReport, a: &PeerReport, floor: Option<&FloorReport>) -> Vec<Ratio> {
    let row = |figure: &str, pv: f64, av: f64, goal: Option<f64>| {
        let ratio = (av != 0.0).then(|| pv / av);
        Ratio {
            figure: figure.into(),
            phaseloop: pv,
            argo_rollouts: av,
            ratio,
            goal,
            met: goal.zip(ratio).map(|(g, r)| r <= g),
            floor: None,
        }
    };
    let floored = |r: Ratio, f: fn(&FloorReport) -> f64| Ratio { floor: floor.map(f).filter(|v| *v > 0.0), ..r };
    let (pr, ar) = (&p.rollout, &a.rollout);
    let (pa, aa) = (&p.analysis, &a.analysis);
    let analysed = pa.app_seconds.n > 0 && aa.app_seconds.n > 0;
    let rows = vec![
        row("RSS idle, MiB", p.rss_idle_mib, a.rss_idle_mib, None),
        row("RSS steady (all on v2), MiB", p.rss_steady_mib, a.rss_steady_mib, Some(0.2)),
        row("RSS peak (setup and rollouts), MiB", p.rss_peak_mib, a.rss_peak_mib, None),
        row("RSS peak in a restart's re-list, MiB", p.rss_peak_relist_mib, a.rss_peak_relist_mib, None),
        row("CPU seconds, v1 → v2", pr.cpu_s, ar.cpu_s, Some(0.33)),
        row("API requests, v1 → v2", pr.requests.total as f64, ar.requests.total as f64, Some(0.5)),
        row(
            "API requests without leader election, v1 → v2",
            pr.requests.workload as f64,
            ar.requests.workload as f64,
            None,
        ),
        floored(row("API writes, v1 → v2", pr.requests.writes as f64, ar.requests.writes as f64, None), |f| {
            f.rollout.writes as f64
        }),
        floored(row("time to all on v2, s", pr.seconds, ar.seconds, Some(1.0)), |f| f.rollout.seconds),
        row("first write after the change, p50 ms", pr.first_write_ms.p50, ar.first_write_ms.p50, None),
        row("first write after the change, p95 ms", pr.first_write_ms.p95, ar.first_write_ms.p95, None),
        row("CPU seconds, v2 → v3 with analysis", pa.cpu_s, aa.cpu_s, None),
        row("API requests, v2 → v3 with analysis", pa.requests.total as f64, aa.requests.total as f64, None),
        floored(row("time to all on v3 (with analysis), s", pa.seconds, aa.seconds, None), |f| f.analysis.seconds),
        row("CPU seconds, setup (v1)", p.setup.cpu_s, a.setup.cpu_s, None),
        row("API requests, setup (v1)", p.setup.requests.total as f64, a.setup.requests.total as f64, None),
        floored(row("time to all on v1 (setup), s", p.setup.seconds, a.setup.seconds, None), |f| f.setup.seconds),
        row("API requests of the re-list", p.relist_requests.total as f64, a.relist_requests.total as f64, None),
    ];
    // Without the analysis round (at sizes above `--analysis-up-to`) its rows say nothing.
    rows.into_iter().filter(|r| analysed || !r.figure.contains("v3")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rss: f64, cpu: f64, requests: u64, seconds: f64) -> PeerReport {
        PeerReport {
            rss_steady_mib: rss,
            rollout: PhaseReport {
                cpu_s: cpu,
                seconds,
                requests: Counts { total: requests, workload: requests, ..Default::default() },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn ratios_are_phaseloop_over_argo_and_judged_against_the_goals() {
        let r = ratios(&report(20.0, 10.0, 3000, 120.0), &report(100.0, 40.0, 5000, 100.0), None);
        let get = |f: &str| r.iter().find(|x| x.figure.starts_with(f)).unwrap().clone();
        let rss = get("RSS steady");
        assert_eq!(
            (rss.phaseloop, rss.argo_rollouts, rss.ratio, rss.goal, rss.met),
            (20.0, 100.0, Some(0.2), Some(0.2), Some(true))
        );
        let cpu = get("CPU seconds, v1");
        assert_eq!((cpu.ratio, cpu.met), (Some(0.25), Some(true)));
        let req = get("API requests, v1");
        assert_eq!((req.ratio, req.met), (Some(0.6), Some(false)), "0.6 > 0.5: missed");
        let time = get("time to all on v2");
        assert_eq!((time.ratio, time.met), (Some(1.2), Some(false)));
        // No goal: no verdict; Argo at 0: no ratio.
        let idle = get("RSS idle");
        assert_eq!((idle.ratio, idle.goal, idle.met), (None, None, None));
        // The report survives its JSON (what target/bench/peers.json holds).
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Ratio>>(&json).unwrap(), r);
        // The analysis round did not run at this size: none of its rows, the others all there.
        assert!(r.iter().all(|x| !x.figure.contains("v3")), "{r:?}");
        let (mut p, mut a) = (report(20.0, 10.0, 3000, 120.0), report(100.0, 40.0, 5000, 100.0));
        p.analysis.app_seconds.n = 100;
        a.analysis.app_seconds.n = 100;
        a.analysis.seconds = 50.0;
        p.analysis.seconds = 60.0;
        let with = ratios(&p, &a, None);
        assert_eq!(with.len(), r.len() + 3);
        let v3 = with.iter().find(|x| x.figure.starts_with("time to all on v3")).unwrap();
        assert_eq!(v3.ratio, Some(1.2));
        assert!(with.iter().all(|x| x.floor.is_none()), "no floor run, no floor figures");
    }

    #[test]
    fn the_floor_is_given_for_time_and_writes_only() {
        let mut floor = FloorReport::default();
        floor.rollout.seconds = 80.0;
        floor.rollout.writes = 500;
        floor.setup.seconds = 20.0;
        let r = ratios(&report(20.0, 10.0, 3000, 120.0), &report(100.0, 40.0, 5000, 100.0), Some(&floor));
        let get = |f: &str| r.iter().find(|x| x.figure.starts_with(f)).unwrap().clone();
        assert_eq!(get("time to all on v2").floor, Some(80.0));
        assert_eq!(get("API writes, v1").floor, Some(500.0));
        assert_eq!(get("time to all on v1").floor, Some(20.0));
        assert_eq!(get("RSS steady").floor, None, "the floor has no process");
    }

    #[test]
    fn controller_manager_work_is_the_difference_of_two_scrapes() {
        let a = Scrape::parse(
            "workqueue_adds_total{name=\"deployment\"} 10\nworkqueue_queue_duration_seconds_sum{name=\"deployment\"} 5\n\
             workqueue_queue_duration_seconds_count{name=\"deployment\"} 10\n\
             rest_client_requests_total{code=\"200\",host=\"127.0.0.1:1\",method=\"PUT\"} 100\n",
        );
        let b = Scrape::parse(
            "workqueue_adds_total{name=\"deployment\"} 30\nworkqueue_queue_duration_seconds_sum{name=\"deployment\"} 65\n\
             workqueue_queue_duration_seconds_count{name=\"deployment\"} 30\n\
             rest_client_requests_total{code=\"200\",host=\"127.0.0.1:1\",method=\"PUT\"} 150\n\
             rest_client_requests_total{code=\"201\",host=\"127.0.0.1:1\",method=\"POST\"} 20\n",
        );
        let w = KcmWork::between(&a, &b);
        assert_eq!((w.requests, w.deployment_syncs, w.deployment_queue_wait_s), (70.0, 20.0, 3.0));
        assert_eq!((w.replicaset_syncs, w.replicaset_queue_wait_s), (0.0, 0.0));
    }
}
