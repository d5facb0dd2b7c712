//! The scaling benchmark's smoke run: two load steps, one reaction each.

use std::time::Duration;

use phaseloop_bench::scaling::{self, ScalingRun};
use phaseloop_e2e::{client, shared};

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn the_scaling_benchmark_measures_a_reaction_to_each_step() {
    let _shared = shared().await;
    let client = client().await;
    let interval = Duration::from_secs(2);
    let report = scaling::scaling(&client, &ScalingRun { interval, steps: 2 }).await.unwrap();
    assert_eq!((report.reaction_up_s.n, report.reaction_down_s.n), (1, 1));
    // Timings are reported by `make bench`, not asserted here; only that they were measured.
    assert!(report.reaction_up_s.max > 0.0 && report.reaction_down_s.max > 0.0, "{report:?}");
    assert_eq!(report.overshoot_max, 0.0, "a step load needs no overshoot: {report:?}");
}
