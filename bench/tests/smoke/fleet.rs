//! The fleet benchmark's smoke run: a few Environments and Releases through every phase of
//! `make bench`'s fleet benchmark (baseline, run, touches, restart), checking that it measures
//! and that a no-op resync writes nothing. It runs alone (`alone()`): it restarts the operator.

use std::time::Duration;

use phaseloop_bench::fleet::{self, FleetRun};
use phaseloop_e2e::{alone, client, delete_leftovers};

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_fleet_benchmark_measures_and_a_no_op_resync_writes_nothing() {
    let _alone = alone().await;
    let client = client().await;
    // Objects left by earlier tests would be reconciled, and written, while it measures.
    delete_leftovers(&client).await.unwrap();
    let run = FleetRun { environments: 2, releases: 6, restart: true, touches: 6, timeout: Duration::from_secs(300) };
    let r = fleet::fleet(&client, &run).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    // Timings and sizes are reported by `make bench`, not asserted; only that they were measured.
    assert!(r.baseline_s > 0.0 && r.phaseloop_s > 0.0, "{r:?}");
    assert!(r.rss_idle_mib > 1.0 && r.rss_steady_mib > 1.0 && r.rss_peak_relist_mib > 1.0, "{r:?}");
    assert!(r.requests_per_object > 0.0 && r.writes_per_object > 0.0, "{r:?}");
    assert!(r.reconcile_ms["release"].n >= 6.0, "every Release reconciled: {r:?}");
    assert!(r.watch_to_reconcile_touch_ms.n >= 6.0, "every touch reached a reconcile: {r:?}");
    assert!(r.relist_reconciles >= 8.0, "the restart reconciled everything again: {r:?}");
    // What a no-op reconcile must do: write nothing, whether woken by a watch or by a re-list.
    assert_eq!(r.noop_touch_writes, 0.0, "{:?}", r.requests_by_verb);
    assert_eq!(r.noop_relist_writes, 0.0, "{r:?}");
}
