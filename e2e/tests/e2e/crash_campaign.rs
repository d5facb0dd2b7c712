//! Crash campaign: the operator is SIGKILLed at random moments of an Environment's and a Release's
//! lifecycle (tests, canary steps, analysis, promotion, revert, TTL expiry) and restarted, for
//! `E2E_CHAOS_ROUNDS` rounds (2 in `make test`, more in `make chaos`). Every disturbed round must
//! end in the same state as an undisturbed one, with no duplicated side effects (one Job per test
//! attempt, one Deployment per version) and nothing orphaned. It runs alone (`alone()`): it kills the
//! suite's operator.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Service};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use phaseloop::api::{Environment, Release, ReleasePhase};
use phaseloop_e2e::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(180);

/// A small deterministic generator (the seed is printed, so a failing round can be replayed).
struct Rng(AtomicU64);

impl Rng {
    fn next(&self, below: u64) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x % below
    }
}

/// SIGKILLs the operator and starts it again as `identity` (the pod name it would have in the
/// chart's Deployment).
fn crash_and_restart(identity: String) {
    let script = repo_root().join("e2e/scripts/run-operator.sh");
    let ok = std::process::Command::new("bash")
        .arg(script)
        .arg("crash")
        .env("POD_NAME", identity)
        .status()
        .map(|s| s.success());
    assert!(ok.unwrap_or(false), "run-operator.sh crash");
}

/// Whether the running operator leads.
async fn leading() -> bool {
    let Ok(resp) = reqwest::get(format!("{}/metrics", operator_url())).await else { return false };
    resp.text().await.unwrap_or_default().lines().any(|l| l == "phaseloop_leader 1")
}

/// Of every this many restarts, one is a new pod; the others are the container restarting in its
/// pod.
const NEW_POD_EVERY: u64 = 10;

/// Kills and restarts the operator 1–5 s after each restart has become the leader again, until
/// stopped; returns the kills. Most restarts keep the pod name, as a container restarted by the
/// kubelet does, and take the Lease back at once (it names them); one in [`NEW_POD_EVERY`] is a
/// new pod, which first waits out the killed one's Lease. Both are what a crash is in a cluster.
fn killer(rng: Arc<Rng>, stop: Arc<AtomicBool>, pods: Arc<AtomicU64>) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut kills = 0;
        while !stop.load(Ordering::SeqCst) {
            while !leading().await && !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            tokio::time::sleep(Duration::from_millis(1000 + rng.next(4000))).await;
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if rng.next(NEW_POD_EVERY) == 0 {
                pods.fetch_add(1, Ordering::SeqCst);
            }
            let identity = format!("phaseloop-chaos-{}", pods.load(Ordering::SeqCst));
            tokio::task::spawn_blocking(move || crash_and_restart(identity)).await.unwrap();
            kills += 1;
        }
        kills
    })
}

/// What a round leaves behind, independent of names made unique per round.
async fn final_state(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for r in Api::<Release>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap() {
        let s = r.status.clone().unwrap_or_default();
        state.insert(format!("release {}", r.name_any()), format!("{:?} weight {:?}", s.phase, s.weight));
    }
    for d in Api::<Deployment>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap() {
        let owners = d.owner_references().iter().map(|o| o.name.clone()).collect::<Vec<_>>().join(",");
        state.insert(format!("deployment {}", d.name_any()), format!("{:?} owned by {owners}", d.spec.replicas));
    }
    let jobs = Api::<Job>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    state.insert("jobs".into(), jobs.items.iter().map(|j| j.name_any()).collect::<Vec<_>>().join(","));
    let services = Api::<Service>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    state.insert("services".into(), services.items.iter().map(|s| s.name_any()).collect::<Vec<_>>().join(","));
    state
}

/// One lifecycle: v1 Live; v2 tested, then promoted through canary steps with analysis; then
/// reverted; meanwhile an Environment reaches the end of its ttl. Returns the final state.
async fn round(client: &kube::Client, n: u32) -> BTreeMap<String, String> {
    let ns = TestNamespace::new(client, &format!("chaos-{n}")).await;
    let env = format!("chaos-ttl-{n}-{}", unique_suffix());
    let _guard = EnvironmentGuard::new(&env);
    create(&json!({"apiVersion": "phaseloop.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": env}, "spec": {"tier": "test", "ttl": "20s"}}));
    let api: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    create(&ready_at_once(release(&ns.name, "shop", "1", 4, json!({}))));
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    let canary = json!({"type": "Canary",
        "canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "3s"}}, {"setWeight": 50},
                             {"pause": {"duration": "3s"}}]},
        "analysis": {"interval": "2s", "metrics": [{"name": "up", "min": 0, "inconclusiveLimit": 100,
            "query": "count(up{job=\"phaseloop-operator\"}) or vector(1)"}]}});
    create(&with_test(ready_at_once(release(&ns.name, "shop", "2", 4, canary)), false));
    wait_release_phase(&api, "shop-2", ReleasePhase::Live).await;
    let revert = json!({"metadata": {"annotations": {"phaseloop.dev/revert": ADMIN}}});
    api.patch("shop-2", &PatchParams::default(), &Patch::Merge(&revert)).await.unwrap();
    wait_release_phase(&api, "shop-2", ReleasePhase::Reverted).await;
    wait_release_phase(&api, "shop-1", ReleasePhase::Live).await;
    let envs: Api<Environment> = Api::all(client.clone());
    eventually(&format!("{env} expired"), WAIT, || async { envs.get_opt(&env).await.ok()?.is_none().then_some(()) })
        .await
        .unwrap();
    final_state(client, &ns.name).await
}

#[tokio::test]
#[ignore = "needs the local control plane: make e2e"]
async fn random_operator_crashes_change_nothing_about_the_outcome() {
    let _alone = alone().await;
    let client = client().await;
    let rounds: u32 = std::env::var("E2E_CHAOS_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(2);
    // Or as many rounds as it takes to reach this many kills (`make chaos CHAOS_KILLS=1000`).
    let kill_target: u32 = std::env::var("E2E_CHAOS_KILLS").ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    let seed = std::env::var("E2E_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("crash campaign: {rounds} rounds, E2E_CHAOS_SEED={seed}");
    let rng = Arc::new(Rng(AtomicU64::new(seed)));

    let reference = round(&client, 0).await;
    println!("undisturbed: {reference:#?}");
    assert_eq!(reference.get("jobs").map(|j| j.split(',').count()), Some(1), "one test Job");

    let started = std::time::Instant::now();
    let mut total = 0;
    let mut n = 0;
    // The suite's operator is named after its process: the first restart is a new pod.
    let pods = Arc::new(AtomicU64::new(1));
    while n < rounds || total < kill_target {
        n += 1;
        let stop = Arc::new(AtomicBool::new(false));
        let kills = killer(rng.clone(), stop.clone(), pods.clone());
        let state = round(&client, n).await;
        stop.store(true, Ordering::SeqCst);
        let kills = kills.await.unwrap();
        total += kills;
        println!("round {n}: {kills} SIGKILLs ({total} in all, {:.0}s)", started.elapsed().as_secs_f64());
        assert_eq!(state, reference, "round {n} ({kills} kills, seed {seed}) ended differently");
    }
    println!(
        "FIGURE crash campaign: {n} rounds, {total} SIGKILLs ({} of them followed by a new pod), every round as the reference, {:.0}s",
        pods.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    // Nothing orphaned anywhere: every phaseloop-managed object left belongs to a live owner.
    let leftovers = objects_labelled(&client, "app.kubernetes.io/managed-by=phaseloop").await;
    let chaos: Vec<&String> = leftovers.iter().filter(|o| o.contains(" chaos-ttl-")).collect();
    assert!(chaos.is_empty(), "left behind by the rounds: {chaos:?}");
}
