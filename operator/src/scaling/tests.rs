//! The HPA's documented behaviour as tables, and the invariants as properties.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn spec(extra: serde_json::Value) -> Scaling {
    let mut v = json!({"minReplicas": 1, "maxReplicas": 20, "metric": {"query": "q", "targetPerReplica": 100.0}});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// A status that has been deciding for a while (no first-sight seeding).
fn warm() -> ScalingStatus {
    ScalingStatus { measured_at: Some(Time(t(-15))), ..Default::default() }
}

fn rec(secs: i64, replicas: i32) -> ScalingRecommendation {
    ScalingRecommendation { time: Time(t(secs)), replicas }
}

fn event(secs: i64, from: i32, to: i32) -> ScaleEvent {
    ScaleEvent { time: Time(t(secs)), from, to }
}

/// No stabilization and no rate limits: the raw algorithm alone.
fn unbounded() -> serde_json::Value {
    let free = json!({"stabilizationWindow": "0s", "policies": [{"type": "Pods", "value": 1000, "period": "1s"}]});
    json!({"behavior": {"scaleUp": free, "scaleDown": free}})
}

#[test]
fn desired_is_the_ceiling_of_load_over_target_outside_the_tolerance() {
    // (current, observed load, expected)
    let table = [
        (2, 450.0, 5),   // 4.5 → 5
        (4, 400.0, 4),   // exactly on target
        (4, 430.0, 4),   // ratio 1.075: within 10%
        (4, 370.0, 4),   // ratio 0.925: within 10%
        (4, 450.0, 5),   // ratio 1.125: outside
        (4, 350.0, 4),   // ratio 0.875 → ceil(3.5) = 4
        (4, 290.0, 3),   // ratio 0.725 → 3
        (10, 100.0, 1),  // a big drop, nothing stabilizes
        (1, 0.0, 1),     // clamped to minReplicas 1
        (3, 5000.0, 20), // clamped to maxReplicas 20
    ];
    for (current, load, want) in table {
        let (s, _) = decide(&spec(unbounded()), &warm(), current, Ok(load), t(0));
        assert_eq!(s.desired_replicas, Some(want), "current {current}, load {load}");
    }
}

#[test]
fn the_tolerance_is_configurable() {
    let (s, why) = decide(&spec(json!({"tolerance": 0.0}).merge(unbounded())), &warm(), 4, Ok(430.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(5), Why::FollowsLoad));
    let (s, why) = decide(&spec(json!({"tolerance": 0.5}).merge(unbounded())), &warm(), 4, Ok(580.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(4), Why::WithinTolerance));
}

#[test]
fn a_count_outside_the_bounds_is_brought_back_at_once() {
    let (s, why) = decide(&spec(json!({"maxReplicas": 5})), &warm(), 9, Ok(900.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(5), Why::TooManyReplicas));
    let (s, why) = decide(&spec(json!({"minReplicas": 3})), &warm(), 1, Ok(0.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(3), Why::TooFewReplicas));
}

#[test]
fn scale_down_waits_for_the_default_five_minute_window() {
    let s0 = spec(json!({}));
    let mut status = warm();
    status.recommendations = vec![rec(-200, 8)];
    // Load for 2 replicas, but 8 were recommended 200s ago: held at the window's maximum.
    let (s, why) = decide(&s0, &status, 8, Ok(200.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(8), Why::Stabilized));
    // Once that recommendation is older than 300s, the highest one in the window wins (2, now).
    let (s, why) = decide(&s0, &s, 8, Ok(200.0), t(101));
    assert_eq!((s.desired_replicas, why), (Some(2), Why::FollowsLoad));
}

#[test]
fn a_dip_inside_the_window_scales_down_only_to_the_window_maximum() {
    let mut status = warm();
    status.recommendations = vec![rec(-250, 8), rec(-100, 5), rec(-50, 3)];
    let (s, _) = decide(&spec(json!({})), &status, 8, Ok(100.0), t(100));
    // -250 is out of the window now; 5 (at -100) is the highest left.
    assert_eq!(s.desired_replicas, Some(5));
}

#[test]
fn scale_up_is_immediate_by_default_and_stabilized_when_asked() {
    let (s, _) = decide(&spec(json!({})), &warm(), 2, Ok(400.0), t(0));
    assert_eq!(s.desired_replicas, Some(4));
    let windowed = spec(json!({"behavior": {"scaleUp": {"stabilizationWindow": "60s"}}}));
    let mut status = warm();
    status.recommendations = vec![rec(-30, 2)];
    let (s, why) = decide(&windowed, &status, 2, Ok(400.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(2), Why::Stabilized));
    let (s, _) = decide(&windowed, &s, 2, Ok(400.0), t(31));
    assert_eq!(s.desired_replicas, Some(4), "the low recommendation left the window");
}

#[test]
fn default_scale_up_rate_is_double_or_four_pods_whichever_is_more() {
    // From 1: max(2, 5) = 5. From 10: max(20, 14) = 20.
    let (s, why) = decide(&spec(json!({"maxReplicas": 100})), &warm(), 1, Ok(5000.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(5), Why::RateLimited));
    let (s, _) = decide(&spec(json!({"maxReplicas": 100})), &warm(), 10, Ok(5000.0), t(0));
    assert_eq!(s.desired_replicas, Some(20));
}

#[test]
fn rate_limits_count_from_the_start_of_the_period() {
    let s0 = spec(json!({"maxReplicas": 100}));
    let mut status = warm();
    // 5 → 10 happened 10s ago: the period started at 5, so +100% allows 10 and +4 allows 9.
    status.scale_events = vec![event(-10, 5, 10)];
    let (s, why) = decide(&s0, &status, 10, Ok(5000.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(10), Why::RateLimited));
    // 16s later that event is out of the 15s period.
    let (s, _) = decide(&s0, &status, 10, Ok(5000.0), t(6));
    assert_eq!(s.desired_replicas, Some(20));
}

#[test]
fn select_policy_min_picks_the_least_permissive_and_disabled_forbids() {
    let min = spec(json!({"maxReplicas": 100, "behavior": {"scaleUp": {"selectPolicy": "Min"}}}));
    let (s, _) = decide(&min, &warm(), 10, Ok(5000.0), t(0));
    assert_eq!(s.desired_replicas, Some(14), "min(20, 14)");
    let off = spec(json!({"behavior": {"scaleDown": {"selectPolicy": "Disabled", "stabilizationWindow": "0s"}}}));
    let (s, why) = decide(&off, &warm(), 8, Ok(100.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(8), Why::DirectionDisabled));
}

#[test]
fn scale_down_policies_in_pods_and_percent() {
    let pods = json!({"behavior": {"scaleDown": {"stabilizationWindow": "0s",
        "policies": [{"type": "Pods", "value": 2, "period": "60s"}]}}});
    let (s, why) = decide(&spec(pods.clone()), &warm(), 10, Ok(100.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(8), Why::RateLimited));
    // Within the same minute, 2 pods already went: no further scale-down.
    let (s, _) = decide(&spec(pods), &s, 8, Ok(100.0), t(30));
    assert_eq!(s.desired_replicas, Some(8));
    let percent = json!({"behavior": {"scaleDown": {"stabilizationWindow": "0s",
        "policies": [{"type": "Percent", "value": 50, "period": "60s"}]}}});
    let (s, _) = decide(&spec(percent), &warm(), 9, Ok(100.0), t(0));
    assert_eq!(s.desired_replicas, Some(4), "floor(9 × 0.5)");
}

#[test]
fn a_fresh_autoscaler_does_not_scale_down_at_once() {
    let (s, why) = decide(&spec(json!({})), &ScalingStatus::default(), 6, Ok(100.0), t(0));
    assert_eq!((s.desired_replicas, why), (Some(6), Why::Stabilized));
    assert_eq!(s.recommendations, vec![rec(0, 6), rec(0, 1)]);
}

#[test]
fn failed_reads_hold_then_fall_back_and_a_good_read_resets() {
    let s0 = spec(json!({"fallback": {"afterFailures": 2, "replicas": 6}}));
    let (s, why) = decide(&s0, &warm(), 3, Err("timeout".into()), t(0));
    assert_eq!((s.desired_replicas, s.consecutive_failures), (Some(3), 1));
    assert!(matches!(why, Why::MetricUnavailable(_)));
    let (s, why) = decide(&s0, &s, 3, Err("timeout".into()), t(15));
    assert_eq!((s.desired_replicas, s.consecutive_failures), (Some(6), 2));
    assert!(matches!(why, Why::Fallback(_)));
    assert!(s.reason.as_deref().unwrap().contains("2 in a row"), "{:?}", s.reason);
    // A lower fallback than the current count never scales down.
    let (s, _) = decide(&s0, &s, 9, Err("timeout".into()), t(30));
    assert_eq!(s.desired_replicas, Some(9));
    let (s, _) = decide(&s0, &s, 9, Ok(900.0), t(45));
    assert_eq!((s.desired_replicas, s.consecutive_failures), (Some(9), 0));
}

#[test]
fn scale_to_zero_and_back() {
    let s0 = spec(json!({"minReplicas": 0}).merge(unbounded()));
    let (s, _) = decide(&s0, &warm(), 3, Ok(0.0), t(0));
    assert_eq!(s.desired_replicas, Some(0));
    let (s, why) = decide(&s0, &s, 0, Ok(250.0), t(15));
    assert_eq!((s.desired_replicas, why), (Some(3), Why::FollowsLoad));
    // With default rules, from zero: +4 pods per period.
    let (s, _) = decide(&spec(json!({"minReplicas": 0, "maxReplicas": 50})), &warm(), 0, Ok(5000.0), t(0));
    assert_eq!(s.desired_replicas, Some(4));
}

#[test]
fn memory_is_pruned_to_the_windows_and_periods() {
    let mut status = warm();
    status.recommendations = vec![rec(-400, 9), rec(-100, 4)];
    status.scale_events = vec![event(-100, 9, 4), event(-5, 4, 5)];
    let (s, _) = decide(&spec(json!({})), &status, 5, Ok(500.0), t(0));
    assert_eq!(s.recommendations, vec![rec(-100, 4), rec(0, 5)]);
    assert_eq!(s.scale_events, vec![event(-5, 4, 5)]);
}

#[test]
fn a_change_is_recorded_as_a_scale_event_with_its_time() {
    let (s, _) = decide(&spec(unbounded()), &warm(), 2, Ok(450.0), t(0));
    assert_eq!(s.scale_events, vec![event(0, 2, 5)]);
    assert_eq!(s.last_scale_time, Some(Time(t(0))));
    assert_eq!(s.observed_value, Some(450.0));
    assert!(s.reason.unwrap().contains("2 → 5"));
}

#[test]
fn the_next_reading_is_due_one_interval_after_the_last() {
    let s0 = spec(json!({"interval": "15s"}));
    assert_eq!(next_due(&s0, None, t(0)), Duration::ZERO);
    let status = ScalingStatus { measured_at: Some(Time(t(0))), ..Default::default() };
    assert_eq!(next_due(&s0, Some(&status), t(10)), Duration::from_secs(5));
    assert_eq!(next_due(&s0, Some(&status), t(20)), Duration::ZERO);
}

trait Merge {
    fn merge(self, other: serde_json::Value) -> serde_json::Value;
}

impl Merge for serde_json::Value {
    fn merge(mut self, other: serde_json::Value) -> serde_json::Value {
        self.as_object_mut().unwrap().extend(other.as_object().unwrap().clone());
        self
    }
}

fn arb_rules() -> impl Strategy<Value = serde_json::Value> {
    let policy = (prop_oneof!["Pods", "Percent"], 1..200i32, 1..120i64)
        .prop_map(|(t, v, p)| json!({"type": t, "value": v, "period": format!("{p}s")}));
    (0..600i64, prop_oneof!["Max", "Min", "Disabled"], prop::collection::vec(policy, 0..3))
        .prop_map(|(w, s, p)| json!({"stabilizationWindow": format!("{w}s"), "selectPolicy": s, "policies": p}))
}

fn arb_spec() -> impl Strategy<Value = Scaling> {
    (0..10i32, 0..40i32, 0.5..500.0f64, 0.0..0.5f64, arb_rules(), arb_rules(), 1..5i32, 0..60i32).prop_map(
        |(min, span, target, tol, up, down, after, fb)| {
            serde_json::from_value(json!({"minReplicas": min, "maxReplicas": (min + span).max(1),
                "metric": {"query": "q", "targetPerReplica": target}, "tolerance": tol,
                "behavior": {"scaleUp": up, "scaleDown": down},
                "fallback": {"afterFailures": after, "replicas": fb}}))
            .unwrap()
        },
    )
}

/// A sequence of readings 15s apart; `None` is a failed read.
fn arb_readings() -> impl Strategy<Value = Vec<Option<f64>>> {
    prop::collection::vec(prop_oneof![1 => Just(None), 4 => (0.0..10_000.0f64).prop_map(Some)], 1..40)
}

proptest! {
    #[test]
    fn never_outside_the_bounds_once_inside(spec in arb_spec(), readings in arb_readings(), start in 0..60i32) {
        let (min, max) = (spec.min_replicas, spec.max_replicas);
        let mut current = start;
        let mut status = ScalingStatus::default();
        for (i, r) in readings.into_iter().enumerate() {
            let reading = r.ok_or_else(|| "down".to_string());
            let failed = reading.is_err();
            let (next, _) = decide(&spec, &status, current, reading, t(15 * i as i64));
            let desired = next.desired_replicas.unwrap();
            if failed {
                prop_assert!(desired >= current, "scaled down blind: {current} → {desired}");
            } else {
                prop_assert!((min..=max).contains(&desired), "{desired} outside [{min}, {max}]");
            }
            // Once inside the bounds, a failed read keeps it inside too (the fallback is clamped).
            if (min..=max).contains(&current) {
                prop_assert!((min..=max).contains(&desired), "left [{min}, {max}]: {current} → {desired}");
            }
            current = desired;
            status = next;
        }
    }

    #[test]
    fn within_the_scale_down_window_the_count_never_drops_below_a_recent_recommendation(
        spec in arb_spec(), readings in arb_readings(),
    ) {
        let window: Duration = spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref())
            .and_then(|r| r.stabilization_window).map_or(Duration::from_secs(300), Into::into);
        let mut current = spec.min_replicas;
        let mut status = ScalingStatus::default();
        let mut seen: Vec<(i64, i32)> = Vec::new();
        for (i, r) in readings.into_iter().enumerate() {
            let now = 15 * i as i64;
            let (next, _) = decide(&spec, &status, current, r.ok_or_else(|| "down".to_string()), t(now));
            let desired = next.desired_replicas.unwrap();
            if desired < current {
                let floor = seen.iter().filter(|(at, _)| now - at < window.as_secs() as i64).map(|(_, r)| *r).max();
                prop_assert!(floor.is_none_or(|f| desired >= f.min(current)),
                    "scaled down to {desired} with {floor:?} recommended within {window:?}");
            }
            seen.extend(next.recommendations.iter().filter(|r| r.time.0 == t(now)).map(|r| (now, r.replicas)));
            current = desired;
            status = next;
        }
    }

    #[test]
    fn within_the_scale_up_window_the_count_never_rises_above_a_recent_recommendation(
        spec in arb_spec(), readings in arb_readings(),
    ) {
        let window: Duration = spec.behavior.as_ref().and_then(|b| b.scale_up.as_ref())
            .and_then(|r| r.stabilization_window).map_or(Duration::ZERO, Into::into);
        let mut current = spec.min_replicas;
        let mut status = ScalingStatus::default();
        let mut seen: Vec<(i64, i32)> = Vec::new();
        for (i, r) in readings.into_iter().enumerate() {
            let now = 15 * i as i64;
            let failed = r.is_none();
            let (next, _) = decide(&spec, &status, current, r.ok_or_else(|| "down".to_string()), t(now));
            let desired = next.desired_replicas.unwrap();
            if desired > current && !failed && (spec.min_replicas..=spec.max_replicas).contains(&current) {
                let ceiling = seen.iter().filter(|(at, _)| now - at < window.as_secs() as i64).map(|(_, r)| *r).min();
                prop_assert!(ceiling.is_none_or(|c| desired <= c.max(current)),
                    "scaled up to {desired} with {ceiling:?} recommended within {window:?}");
            }
            seen.extend(next.recommendations.iter().filter(|r| r.time.0 == t(now)).map(|r| (now, r.replicas)));
            current = desired;
            status = next;
        }
    }
}
