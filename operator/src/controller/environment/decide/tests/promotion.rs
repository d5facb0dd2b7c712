//! Promotion requests (`promotion.mode: Automatic`): a version Live upstream for its soak gets its
//! Release opened here, once; the overlay; a newer version supersedes a request not started;
//! only versions Live upstream are requested.

use super::*;
use crate::api::{Release, ReleasePhase, ReleaseStatus};

use super::super::promotion::{PROMOTED_FROM, PROMOTED_FROM_RELEASE};

/// Production, promoting from staging automatically after a 60s soak, with `extra` laid over its
/// promotion.
fn production(extra: Value) -> Environment {
    let mut promotion = json!({"from": "staging", "mode": "Automatic", "soak": "60s", "requireApproval": true});
    crate::controller::mock_api::merge(&mut promotion, extra);
    env("production", json!({"tier": "production", "promotion": promotion}))
}

/// Release `name` of shop `version` in staging, in `phase` since `at` (seconds).
fn upstream(name: &str, version: &str, phase: ReleasePhase, at: i64) -> Release {
    let mut r = fixtures::release(name, json!({"app": "shop", "version": version, "approval": {"required": true}}));
    r.metadata.namespace = Some("staging".into());
    let mut status = ReleaseStatus { phase: Some(phase), ..Default::default() };
    status.phase_times.insert(ReleasePhase::Live.as_str().into(), fixtures::time(at));
    status.phase_times.insert(phase.as_str().into(), fixtures::time(at));
    r.status = Some(status);
    r
}

/// A Release here (production) of shop `version`, in `phase` (`None`: no status yet).
fn here(name: &str, version: &str, phase: Option<ReleasePhase>, promoted: bool) -> Release {
    let mut r = fixtures::release(name, json!({"app": "shop", "version": version}));
    r.metadata.namespace = Some("production".into());
    r.metadata.resource_version = Some(format!("rv-{name}"));
    if promoted {
        r.metadata.labels = Some([(PROMOTED_FROM.to_string(), "staging".to_string())].into());
    }
    r.status = phase.map(|p| ReleaseStatus { phase: Some(p), ..Default::default() });
    r
}

fn opened(out: &Outcome) -> Vec<Release> {
    out.effects.iter().filter_map(|e| if let Effect::Promote(r) = e { Some((**r).clone()) } else { None }).collect()
}

fn superseded(out: &Outcome) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| if let Effect::Supersede { name, .. } = e { Some(name.clone()) } else { None })
        .collect()
}

fn events(out: &Outcome, reason: Reason) -> Vec<String> {
    out.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event { reason: r, note, .. } if *r == reason => Some(note.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_version_live_upstream_for_its_soak_gets_its_release_opened_once() {
    let mut case = Case::new(production(json!({})));
    case.upstream_releases = Some(vec![upstream("shop-3", "3", ReleasePhase::Live, 0)]);
    // Soaking: nothing yet, and a look again when the soak ends (Live at 0, now 10, soak 60).
    let out = case.decide();
    assert!(opened(&out).is_empty());
    assert_eq!(out.requeue, Some(Duration::from_secs(51)), "{out:?}");

    case.now = 61;
    let out = case.decide();
    let [r] = &opened(&out)[..] else { panic!("one request: {out:?}") };
    assert_eq!((r.name_any(), r.namespace().as_deref()), ("shop-3".to_string(), Some("production")));
    assert_eq!((r.spec.app.as_str(), r.spec.version.as_str()), ("shop", "3"));
    assert_eq!(r.spec.approval, None, "approval is this Environment's (requireApproval), not upstream's");
    assert_eq!(r.labels().get(PROMOTED_FROM).map(String::as_str), Some("staging"));
    assert_eq!(r.annotations().get(PROMOTED_FROM_RELEASE).map(String::as_str), Some("staging/shop-3"));
    let created = fixtures::time(0).0.to_string();
    assert_eq!(
        r.annotations().get(crate::api::annotation::COMMIT_TIME),
        Some(&created),
        "its lead time starts where the upstream one did"
    );
    let record = &out.status.as_ref().unwrap().promotions;
    assert_eq!((record.len(), record[0].version.as_str(), record[0].release.as_str()), (1, "3", "shop-3"));
    assert_eq!(events(&out, Reason::PromotionRequested).len(), 1);

    // Recorded: the next reconcile opens nothing, even before the Release is in the cache, and even
    // once it is gone (a request refused by deleting it stays refused).
    case.after(&out);
    assert!(opened(&case.decide()).is_empty());
    // The status write was lost (a restart), the Release is there: nothing either.
    case.env.status = None;
    case.releases = vec![here("shop-3", "3", Some(ReleasePhase::AwaitingApproval), true)];
    assert!(opened(&case.decide()).is_empty());
}

#[test]
fn the_overlay_sets_replicas_and_every_containers_resources() {
    let overlay = json!({"overlay": {"replicas": 6, "resources": {"requests": {"cpu": "500m"}}}});
    let mut case = Case::new(production(overlay));
    case.now = 100;
    case.upstream_releases = Some(vec![upstream("shop-3", "3", ReleasePhase::Live, 0)]);
    let r = opened(&case.decide()).pop().unwrap();
    assert_eq!(r.spec.replicas, 6);
    let containers = &r.spec.template.spec.as_ref().unwrap().containers;
    assert!(containers.iter().all(|c| c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0 == "500m"));
}

#[test]
fn a_newer_upstream_version_supersedes_a_request_that_has_not_started() {
    let mut case = Case::new(production(json!({})));
    case.now = 200;
    case.upstream_releases = Some(vec![
        upstream("shop-3", "3", ReleasePhase::Superseded, 0),
        upstream("shop-4", "4", ReleasePhase::Live, 100),
    ]);
    case.releases = vec![here("shop-3", "3", Some(ReleasePhase::AwaitingApproval), true)];
    let out = case.decide();
    assert_eq!(superseded(&out), ["shop-3"]);
    let Effect::Supersede { resource_version, .. } =
        out.effects.iter().find(|e| matches!(e, Effect::Supersede { .. })).unwrap()
    else {
        unreachable!()
    };
    assert_eq!(resource_version, "rv-shop-3", "deleted only if still the Release decided on");
    assert_eq!(opened(&out).iter().map(|r| r.name_any()).collect::<Vec<_>>(), ["shop-4"]);
    assert_eq!(events(&out, Reason::PromotionSuperseded).len(), 1);

    // Started (rolling out), made by hand, or not promoted: never deleted.
    for kept in [
        here("shop-3", "3", Some(ReleasePhase::Progressing), true),
        here("shop-3", "3", Some(ReleasePhase::Live), true),
        here("shop-3", "3", None, false),
    ] {
        case.releases = vec![kept];
        let out = case.decide();
        assert!(superseded(&out).is_empty(), "{:?}", case.releases);
        assert_eq!(opened(&out).len(), 1, "the new version is still requested");
    }
}

#[test]
fn only_a_version_live_upstream_now_is_requested_and_only_in_automatic_mode() {
    let mut case = Case::new(production(json!({})));
    case.now = 500;
    for phase in [ReleasePhase::RolledBack, ReleasePhase::Reverted, ReleasePhase::Progressing] {
        case.upstream_releases = Some(vec![upstream("shop-3", "3", phase, 0)]);
        assert!(opened(&case.decide()).is_empty(), "{phase:?}");
    }
    // A version that already has a Release here (made by a person) is not requested.
    case.upstream_releases = Some(vec![upstream("shop-3", "3", ReleasePhase::Live, 0)]);
    case.releases = vec![here("mine", "3", Some(ReleasePhase::Live), false)];
    assert!(opened(&case.decide()).is_empty());
    // The upstream's name is taken here by another version: the request gets a name of its own.
    case.releases = vec![here("shop-3", "2", Some(ReleasePhase::Live), false)];
    assert_eq!(opened(&case.decide())[0].name_any(), "shop-3-from-staging");
    // Manual mode, the default: nothing.
    let mut manual = Case::new(production(json!({"mode": "Manual"})));
    manual.now = 500;
    manual.upstream_releases = case.upstream_releases.clone();
    assert!(opened(&manual.decide()).is_empty());
}
