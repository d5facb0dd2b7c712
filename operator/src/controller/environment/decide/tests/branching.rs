//! Branching: what a branch inherits through its whole chain of parents, snapshots and following,
//! cycles, the depth bound, a missing parent, and the parent's Live versions.

use super::*;
use crate::api::{Isolation, PodSecurity, Quota, ReleasePhase};

fn names(spec: &crate::api::EnvironmentSpec) -> Vec<&str> {
    spec.infrastructure.iter().map(|c| c.name.as_str()).collect()
}

/// What the decision provisions: the components applied and the quota's pods.
fn provisioned(out: &Outcome) -> (Vec<String>, Option<String>) {
    let pods = out.effects.iter().find_map(|e| match e {
        Effect::Quota(Some(q)) => Some(q.spec.as_ref()?.hard.as_ref()?["pods"].0.clone()),
        _ => None,
    });
    (applied(out), pods)
}

fn prod() -> Environment {
    env(
        "prod",
        json!({"tier": "production", "quota": {"pods": 50}, "infrastructure": [component("db", vec![configmap("db-config")])]}),
    )
}

fn staging(follow: bool) -> Environment {
    env(
        "staging",
        json!({"tier": "staging", "from": "prod", "followParent": follow,
        "infrastructure": [component("cache", vec![configmap("cache-config")])]}),
    )
}

fn pr(follow: bool) -> Environment {
    env("pr", json!({"tier": "preview", "from": "staging", "followParent": follow}))
}

#[test]
fn branch_inherits_and_its_own_fields_win() {
    let parent = crate::api::EnvironmentSpec {
        quota: Some(Quota { pods: Some(10), ..Default::default() }),
        isolation: Isolation::Namespace,
        ..serde_json::from_value(json!({"infrastructure": [component("db", vec![configmap("parent-db")]), component("cache", vec![configmap("parent-cache")])]})).unwrap()
    };
    let own: crate::api::EnvironmentSpec = serde_json::from_value(json!({"quota": {"pods": 3},
        "infrastructure": [component("db", vec![configmap("branch-db")])]}))
    .unwrap();
    let spec = effective(&own, Some(&inheritable(&parent)));
    assert_eq!(spec.quota.as_ref().unwrap().pods, Some(3));
    assert_eq!(spec.isolation, Isolation::Namespace);
    assert_eq!(names(&spec), ["cache", "db"]);
    assert_eq!(spec.infrastructure[1], own.infrastructure[0]);
}

#[test]
fn branch_inherits_its_parents_pod_security_unless_it_sets_its_own() {
    let parent = crate::api::EnvironmentSpec { pod_security: Some(PodSecurity::Baseline), ..Default::default() };
    let own = crate::api::EnvironmentSpec::default();
    assert_eq!(effective(&own, Some(&inheritable(&parent))).pod_security, Some(PodSecurity::Baseline));
    let strict = crate::api::EnvironmentSpec { pod_security: Some(PodSecurity::Restricted), ..Default::default() };
    assert_eq!(effective(&strict, Some(&parent)).pod_security, Some(PodSecurity::Restricted));
    assert_eq!(effective(&own, None).pod_security, None, "restricted, the default");
}

/// prod → staging → pr: pr got staging's own component but neither prod's database nor its quota.
#[test]
fn branch_of_a_branch_gets_its_grandparents_component_and_quota() {
    for staging_follows in [false, true] {
        let (prod, staging) = (prod(), staging(staging_follows));
        let out = Case::branch(pr(false), &[&staging, &prod]).decide();
        let (components, pods) = provisioned(&out);
        assert_eq!(components, ["ConfigMap/db-config", "ConfigMap/cache-config"], "staging follows: {staging_follows}");
        assert_eq!(pods.as_deref(), Some("50"), "the grandparent's quota");
        let branch = status(&out).branch.clone().unwrap();
        assert_eq!(branch.parent, "staging");
        assert_eq!(names(&branch.snapshot), ["db", "cache"], "the snapshot holds what staging passes down");
    }
}

#[test]
fn branch_a_parent_that_keeps_a_snapshot_passes_down_the_snapshot_not_its_parents_spec_now() {
    // staging branched when prod had only its database; prod has a queue since.
    let snapshot = inheritable(&prod().spec);
    let staging = with_status(staging(false), |s| {
        s.branch = Some(BranchStatus { parent: "prod".into(), parent_generation: 1, snapshot });
    });
    let mut prod = prod();
    prod.spec.infrastructure.push(serde_json::from_value(component("queue", vec![configmap("queue-config")])).unwrap());
    let out = Case::branch(pr(false), &[&staging, &prod]).decide();
    assert_eq!(provisioned(&out).0, ["ConfigMap/db-config", "ConfigMap/cache-config"]);
}

#[test]
fn branch_following_all_the_way_up_follows_a_change_of_the_grandparent() {
    let staging = with_status(staging(true), |s| {
        s.branch =
            Some(BranchStatus { parent: "prod".into(), parent_generation: 1, snapshot: inheritable(&prod().spec) });
    });
    let pr = with_status(pr(true), |s| {
        s.branch = Some(BranchStatus { parent: "staging".into(), parent_generation: 1, snapshot: Default::default() });
    });
    let mut prod = prod();
    prod.spec.quota = Some(Quota { pods: Some(70), ..Default::default() });
    let out = Case::branch(pr, &[&staging, &prod]).decide();
    assert_eq!(provisioned(&out).1.as_deref(), Some("70"));
}

#[test]
fn branch_without_follow_parent_keeps_its_snapshot() {
    let kept = BranchStatus { parent: "staging".into(), parent_generation: 1, snapshot: Default::default() };
    let pr = with_status(pr(false), |s| s.branch = Some(kept.clone()));
    let (prod, staging) = (prod(), staging(false));
    let out = Case::branch(pr, &[&staging, &prod]).decide();
    assert!(provisioned(&out).0.is_empty(), "the parent's later components stay out");
    assert_eq!(status(&out).branch, Some(kept));
}

#[test]
fn branch_cycles_of_any_length_are_found_by_their_members() {
    let e = |name: &str, from: &str| env(name, json!({"from": from}));
    let (x, y) = (e("x", "y"), e("y", "x"));
    assert_eq!(Case::branch(x.clone(), &[&y]).chain.end, End::Cycle(vec!["x".into(), "y".into(), "x".into()]));
    let (a, b, c, d) = (e("a", "b"), e("b", "c"), e("c", "a"), e("d", "a"));
    assert_eq!(
        Case::branch(c.clone(), &[&a, &b]).chain.end,
        End::Cycle(vec!["c".into(), "a".into(), "b".into(), "c".into()])
    );
    assert_eq!(
        Case::branch(d, &[&a, &b, &c]).chain.end,
        End::IntoCycle(vec!["a".into(), "b".into(), "c".into(), "a".into()]),
        "d leads into the cycle but is not in it"
    );
}

#[test]
fn branch_a_cycle_is_reported_with_an_event_and_touches_nothing() {
    let (x, y) = (env("x", json!({"from": "y"})), env("y", json!({"from": "x"})));
    let mut case = Case::branch(x, &[&y]);
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Failed));
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::ParentCycle));
    assert!(condition(&out, condition::DEGRADED).message.contains("x -> y -> x"));
    assert_eq!(out.events(), [Reason::ParentCycle]);
    assert!(!provisions(&out), "neither namespace is touched");
    case.after(&out);
    assert!(case.decide().events().is_empty(), "said once");
}

#[test]
fn branch_a_chain_deeper_than_the_bound_is_refused_with_an_event() {
    // e0 branches from e1, e1 from e2, and so on; the last one is a root.
    let chain = |len: usize| -> Vec<Environment> {
        (0..=len)
            .map(|i| {
                if i == len {
                    env(&format!("e{i}"), json!({}))
                } else {
                    env(&format!("e{i}"), json!({"from": format!("e{}", i + 1)}))
                }
            })
            .collect()
    };
    let deepest = chain(MAX_DEPTH);
    let refs: Vec<&Environment> = deepest[1..].iter().collect();
    let out = Case::branch(deepest[0].clone(), &refs).decide();
    assert_ne!(phase(&out), Some(EnvironmentPhase::Failed), "{MAX_DEPTH} above is allowed");
    let too_deep = chain(MAX_DEPTH + 1);
    let refs: Vec<&Environment> = too_deep[1..].iter().collect();
    let case = Case::branch(too_deep[0].clone(), &refs);
    assert_eq!(case.chain.end, End::TooDeep);
    let out = case.decide();
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::BranchTooDeep));
    assert!(condition(&out, condition::DEGRADED).message.contains("more than 8 Environments"));
    assert_eq!(out.events(), [Reason::BranchTooDeep]);
    assert!(!provisions(&out));
    assert_eq!(out.requeue, Some(Duration::from_secs(60)), "a change far above wakes nothing here");
}

#[test]
fn branch_a_missing_parent_blocks_it_unless_it_keeps_a_snapshot() {
    let case = Case::branch(pr(false), &[]);
    let out = case.decide();
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::ParentNotFound));
    assert!(condition(&out, condition::DEGRADED).message.contains("parent Environment staging not found"));
    assert_eq!(out.requeue, Some(Duration::from_secs(10)));
    assert!(!provisions(&out));
    let snapshot = inheritable(&staging(false).spec);
    let kept = BranchStatus { parent: "staging".into(), parent_generation: 1, snapshot };
    let following = with_status(pr(true), |s| s.branch = Some(kept));
    let out = Case::branch(following, &[]).decide();
    assert_eq!(provisioned(&out).0, ["ConfigMap/cache-config"], "its last snapshot, kept");
}

#[test]
fn branch_a_missing_grandparent_blocks_it_unless_the_parent_keeps_a_snapshot() {
    let out = Case::branch(pr(false), &[&staging(false)]).decide();
    assert_eq!(cond(&out, condition::DEGRADED), is("True", Reason::ParentNotFound));
    assert!(
        condition(&out, condition::DEGRADED).message.contains("prod"),
        "{:?}",
        condition(&out, condition::DEGRADED)
    );
    let staging = with_status(staging(false), |s| {
        s.branch =
            Some(BranchStatus { parent: "prod".into(), parent_generation: 1, snapshot: inheritable(&prod().spec) });
    });
    let out = Case::branch(pr(false), &[&staging]).decide();
    assert_eq!(provisioned(&out).0, ["ConfigMap/db-config", "ConfigMap/cache-config"]);
}

fn live(name: &str, app: &str, version: &str) -> crate::api::Release {
    let mut r = fixtures::release(name, json!({"app": app, "version": version}));
    r.status = Some(crate::api::ReleaseStatus { phase: Some(ReleasePhase::Live), ..Default::default() });
    r
}

fn deployed(out: &Outcome) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Branch(r) => Some(r["metadata"]["name"].as_str().unwrap().to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn branch_gets_the_parents_live_versions_once_per_app() {
    let staging = staging(false);
    let mut case = Case::branch(pr(false), &[&staging, &prod()]);
    case.parent_releases = vec![live("shop-3", "shop", "3"), live("cart-1", "cart", "1")];
    let out = case.decide();
    assert_eq!(deployed(&out), ["shop-3", "cart-1"]);
    let copy = out.effects.iter().find_map(|e| if let Effect::Branch(r) = e { Some(r.clone()) } else { None }).unwrap();
    assert_eq!(copy["metadata"]["namespace"], "pr");
    assert_eq!(copy["metadata"]["labels"]["phaseloop.dev/branched-from"], "staging");
    assert_eq!(copy["spec"]["strategy"]["type"], "Rolling", "rolled out plainly: it was tested upstream");
    // A branch that has a version of an app keeps it.
    case.releases = vec![live("shop-2", "shop", "2")];
    assert_eq!(deployed(&case.decide()), ["cart-1"]);
}

#[test]
fn branch_following_its_parent_gets_each_new_live_version() {
    let staging = staging(false);
    let mut case = Case::branch(pr(true), &[&staging, &prod()]);
    case.parent_releases = vec![live("shop-3", "shop", "3")];
    case.releases = vec![live("shop-2", "shop", "2")];
    assert_eq!(deployed(&case.decide()), ["shop-3"]);
    case.releases.push(live("shop-3", "shop", "3"));
    assert!(deployed(&case.decide()).is_empty(), "once");
}
