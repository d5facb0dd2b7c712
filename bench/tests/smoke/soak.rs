//! The soak benchmark's smoke run: a few waves of ephemeral Environments with a Release each,
//! created, brought to Live and deleted; the operator's per-object bookkeeping ends no bigger than
//! it started (nothing of the objects that went is kept). Memory is reported, not asserted.

use std::time::Duration;

use phaseloop_bench::soak::{self, SoakRun};
use phaseloop_e2e::{alone, client, delete_leftovers};

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn ephemeral_environments_come_and_go_and_the_operator_forgets_them() {
    let _alone = alone().await;
    let client = client().await;
    // Objects of earlier tests would come and go during the run.
    delete_leftovers(&client).await.unwrap();
    let run = SoakRun { environments: 12, wave: 4, timeout: Duration::from_secs(180) };
    let r = soak::soak(&client, &run).await.unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(!r.entries_before.is_empty(), "the operator reports its bookkeeping: {r:?}");
    for (map, after) in &r.entries_after {
        let before = r.entries_before.get(map).copied().unwrap_or_default();
        assert!(*after <= before, "{map}: {before} entries before, {after} after 12 Environments came and went");
    }
}
