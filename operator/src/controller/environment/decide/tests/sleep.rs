//! Sleep and wake: `sleepAfter` without Release activity, the wake annotation, a new Release.

use super::*;
use crate::api::annotation::WAKE;
use crate::controller::environment::decide::sleep::{self as rule, Decision};

fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}
const HOUR_AFTER: Option<std::time::Duration> = Some(std::time::Duration::from_secs(3600));

#[test]
fn sleep_comes_after_the_idle_time_and_not_before() {
    let active = t("2026-11-26T10:00:00Z");
    assert_eq!(
        rule::decide(HOUR_AFTER, active, None, false, t("2026-11-26T10:59:59Z")),
        Decision::Awake { sleep_at: Some(t("2026-11-26T11:00:00Z")) }
    );
    assert_eq!(rule::decide(HOUR_AFTER, active, None, false, t("2026-11-26T11:00:00Z")), Decision::Sleep);
}

#[test]
fn sleep_lasts_until_activity_or_the_wake_annotation() {
    let active = t("2026-11-26T10:00:00Z");
    let slept = Some(t("2026-11-26T11:00:00Z"));
    assert_eq!(rule::decide(HOUR_AFTER, active, slept, false, t("2026-11-27T00:00:00Z")), Decision::Sleep);
    assert_eq!(rule::decide(HOUR_AFTER, active, slept, true, t("2026-11-27T00:00:00Z")), Decision::Wake);
    let new_release = t("2026-11-26T12:00:00Z");
    assert_eq!(rule::decide(HOUR_AFTER, new_release, slept, false, t("2026-11-26T12:00:01Z")), Decision::Wake);
    let same_second = t("2026-11-26T11:00:00Z");
    assert_eq!(rule::decide(HOUR_AFTER, same_second, slept, false, same_second), Decision::Wake);
}

#[test]
fn sleep_removing_sleep_after_wakes_a_sleeping_environment() {
    let active = t("2026-11-26T10:00:00Z");
    assert_eq!(rule::decide(None, active, Some(active), false, active), Decision::Wake);
    assert_eq!(rule::decide(None, active, None, false, active), Decision::Awake { sleep_at: None });
}

#[test]
fn sleep_a_wake_request_postpones_it() {
    let active = t("2026-11-26T10:00:00Z");
    assert!(matches!(rule::decide(HOUR_AFTER, active, None, true, t("2026-11-26T12:00:00Z")), Decision::Awake { .. }));
}

fn sleepy() -> Environment {
    env("sleepy", json!({"sleepAfter": "15s", "infrastructure": [component("cache", vec![deployment("redis")])]}))
}

#[test]
fn sleep_an_awake_environment_is_looked_at_again_when_sleep_is_due() {
    let out = Case::new(sleepy()).decide();
    assert_eq!(status(&out).slept_at, None);
    assert_eq!(out.requeue, Some(Duration::from_secs(6)), "at creation + 15s, one second after");
}

#[test]
fn sleep_is_recorded_with_an_event_and_the_infrastructure_at_zero() {
    let mut case = Case::new(sleepy());
    case.now = 20;
    let out = case.decide();
    assert_eq!(phase(&out), Some(EnvironmentPhase::Sleeping));
    assert_eq!(out.transitions, [Transition::Sleep]);
    assert_eq!(
        status(&out).slept_at,
        Some(fixtures::time(20)),
        "what the Release controller holds the apps at zero by"
    );
    assert_eq!(out.events(), [Reason::Slept]);
    let replicas = out.effects.iter().find_map(|e| match e {
        Effect::Apply { object, .. } => Some(object.data["spec"]["replicas"].clone()),
        _ => None,
    });
    assert_eq!(replicas, Some(json!(0)));
    case.after(&out);
    let again = case.decide();
    assert!(again.events().is_empty() && again.transitions.is_empty(), "asleep already");
}

#[test]
fn sleep_the_wake_annotation_wakes_and_is_consumed_after_the_status() {
    let e = with_status(annotate(sleepy(), WAKE, "now"), |s| {
        s.phase = Some(EnvironmentPhase::Sleeping);
        s.slept_at = Some(fixtures::time(20));
    });
    let mut case = Case::new(e);
    case.now = 100;
    let out = case.decide();
    assert_eq!(status(&out).slept_at, None);
    assert_eq!(status(&out).last_activity, Some(fixtures::time(100)), "sleepAfter counts from the wake");
    assert_eq!(out.events(), [Reason::Woken]);
    assert_eq!(out.then, [Effect::Consume(WAKE)], "consumed once the status saying awake is written");
    assert!(!out.effects.contains(&Effect::Consume(WAKE)));
    assert_ne!(phase(&out), Some(EnvironmentPhase::Sleeping));
}

#[test]
fn sleep_a_new_release_wakes_it() {
    let e = with_status(sleepy(), |s| {
        s.phase = Some(EnvironmentPhase::Sleeping);
        s.slept_at = Some(fixtures::time(20));
    });
    let mut case = Case::new(e);
    case.now = 100;
    let mut release = fixtures::release("shop-2", json!({}));
    release.metadata.creation_timestamp = Some(fixtures::time(90));
    case.releases = vec![release];
    let out = case.decide();
    assert_eq!(status(&out).slept_at, None);
    assert_eq!(out.events(), [Reason::Woken]);
}
