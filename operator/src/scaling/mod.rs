//! The Operate phase's scaling decision: a pure function of the spec, the autoscaler's memory
//! (kept in `status.scaling`), the current total replicas, one load reading and the time.
//!
//! It follows the Kubernetes HorizontalPodAutoscaler (`pkg/controller/podautoscaler`), for an
//! external metric with an average-value target:
//!
//! 1. **Bounds first.** A current count outside `[min, max]` is brought back inside at once.
//! 2. **Raw recommendation.** `ratio = observed / (target × current)`; within `1 ± tolerance` the
//!    current count stays, otherwise `ceil(observed / target)` (= `ceil(current × ratio)`). From
//!    zero replicas there is no ratio: `ceil(observed / target)`.
//! 3. **Stabilization.** Scaling up goes no higher than the lowest recommendation of the scale-up
//!    window; scaling down goes no lower than the highest recommendation of the scale-down window
//!    (defaults 0s and 300s), so short dips and spikes do not move the count.
//! 4. **Rate limits.** Each policy allows `value` pods or percent per `period`, counted from the
//!    count at the start of the period (the scale events of the period are remembered); `Max`
//!    picks the most permissive policy, `Min` the least, `Disabled` forbids the direction.
//!    Defaults: up, +100% or +4 pods per 15s, whichever is more; down, −100% per 15s.
//! 5. **Clamp** to `[min, max]`.
//!
//! Beyond the HPA: a failed or empty read never scales down. It holds the current count, and after
//! `fallback.afterFailures` consecutive failures holds `fallback.replicas` if that is higher.

#[cfg(test)]
mod tests;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    Reason, ScaleEvent, Scaling, ScalingPolicy, ScalingPolicyType, ScalingRecommendation, ScalingRules, ScalingStatus,
    SelectPolicy,
};

/// Why the autoscaler settled on its count; the variant name is the condition reason.
#[derive(Clone, Debug, PartialEq)]
pub enum Why {
    /// The load is within the tolerance of the target: no change.
    WithinTolerance,
    /// The count follows the load.
    FollowsLoad,
    /// A larger or smaller recommendation within the stabilization window holds the count.
    Stabilized,
    /// A scale-up or scale-down rate limit caps the change.
    RateLimited,
    /// The load asks for more than `maxReplicas`.
    TooManyReplicas,
    /// The load asks for fewer than `minReplicas`.
    TooFewReplicas,
    /// The direction is `Disabled` by its `selectPolicy`.
    DirectionDisabled,
    /// The read failed; the count is held (never scaled down blind).
    MetricUnavailable(String),
    /// The read failed `afterFailures` times in a row: the fallback count is held.
    Fallback(String),
}

impl Why {
    /// The reason used in conditions and Events.
    pub fn reason(&self) -> Reason {
        match self {
            Why::WithinTolerance => Reason::WithinTolerance,
            Why::FollowsLoad => Reason::FollowsLoad,
            Why::Stabilized => Reason::Stabilized,
            Why::RateLimited => Reason::RateLimited,
            Why::TooManyReplicas => Reason::TooManyReplicas,
            Why::TooFewReplicas => Reason::TooFewReplicas,
            Why::DirectionDisabled => Reason::DirectionDisabled,
            Why::MetricUnavailable(_) => Reason::MetricUnavailable,
            Why::Fallback(_) => Reason::FallbackReplicas,
        }
    }

    /// Whether the bounds or rate limits kept the count from what the load asks for.
    pub fn limited(&self) -> bool {
        matches!(self, Why::RateLimited | Why::TooManyReplicas | Why::TooFewReplicas | Why::DirectionDisabled)
    }
}

/// One load reading: a number, or why there is none.
pub type Reading = Result<f64, String>;

/// Defaults of the HPA's `behavior`.
const DEFAULT_PERIOD: Duration = Duration::from_secs(15);
const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// One direction's rules with the HPA defaults filled in.
#[derive(Clone, Debug, PartialEq)]
struct Rules {
    window: Duration,
    select: SelectPolicy,
    policies: Vec<ScalingPolicy>,
}

fn policy(type_: ScalingPolicyType, value: i32) -> ScalingPolicy {
    ScalingPolicy { type_, value, period: DEFAULT_PERIOD.into() }
}

fn rules(given: Option<&ScalingRules>, up: bool) -> Rules {
    let default_window = if up { Duration::ZERO } else { DEFAULT_SCALE_DOWN_WINDOW };
    let default_policies = if up {
        vec![policy(ScalingPolicyType::Percent, 100), policy(ScalingPolicyType::Pods, 4)]
    } else {
        vec![policy(ScalingPolicyType::Percent, 100)]
    };
    Rules {
        window: given.and_then(|r| r.stabilization_window).map_or(default_window, Into::into),
        select: given.and_then(|r| r.select_policy).unwrap_or(SelectPolicy::Max),
        policies: match given {
            Some(r) if !r.policies.is_empty() => r.policies.clone(),
            _ => default_policies,
        },
    }
}

fn since(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)).unwrap_or(Timestamp::MIN)
}

/// Net replicas added (positive) or removed (negative) by the scale events after `cutoff`.
fn change_since(events: &[ScaleEvent], cutoff: Timestamp) -> i64 {
    events.iter().filter(|e| e.time.0 > cutoff).map(|e| i64::from(e.to) - i64::from(e.from)).sum()
}

/// The highest count the scale-up policies allow now (HPA `calculateScaleUpLimitWithScalingRules`).
fn scale_up_limit(current: i32, events: &[ScaleEvent], r: &Rules, now: Timestamp) -> i64 {
    if r.select == SelectPolicy::Disabled {
        return current.into();
    }
    let proposals = r.policies.iter().map(|p| {
        let start = i64::from(current) - change_since(events, since(now, p.period.into()));
        match p.type_ {
            ScalingPolicyType::Pods => start + i64::from(p.value),
            ScalingPolicyType::Percent => (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64,
        }
    });
    let limit = if r.select == SelectPolicy::Min { proposals.min() } else { proposals.max() };
    limit.unwrap_or(current.into())
}

/// The lowest count the scale-down policies allow now (HPA `calculateScaleDownLimitWithBehaviors`).
fn scale_down_limit(current: i32, events: &[ScaleEvent], r: &Rules, now: Timestamp) -> i64 {
    if r.select == SelectPolicy::Disabled {
        return current.into();
    }
    let proposals = r.policies.iter().map(|p| {
        let start = i64::from(current) - change_since(events, since(now, p.period.into()));
        match p.type_ {
            ScalingPolicyType::Pods => start - i64::from(p.value),
            ScalingPolicyType::Percent => (start as f64 * (1.0 - f64::from(p.value) / 100.0)) as i64,
        }
    });
    // The most permissive scale-down is the lowest count.
    let limit = if r.select == SelectPolicy::Min { proposals.max() } else { proposals.min() };
    limit.unwrap_or(current.into())
}

/// The raw recommendation for a load reading (steps 2 of the module docs).
pub fn recommend(current: i32, observed: f64, target: f64, tolerance: f64) -> i64 {
    let wanted = (observed.max(0.0) / target).ceil();
    if current > 0 {
        let ratio = observed.max(0.0) / (target * f64::from(current));
        if (1.0 - ratio).abs() <= tolerance {
            return current.into();
        }
    }
    wanted.min(i32::MAX as f64) as i64
}

/// The seed of the autoscaler's memory: as the HPA does on first sight, the current count counts
/// as a recommendation made now, so a fresh autoscaler does not scale down at once.
fn seeded(previous: &ScalingStatus, current: i32, now: Timestamp) -> Vec<ScalingRecommendation> {
    if previous.measured_at.is_none() && previous.recommendations.is_empty() {
        vec![ScalingRecommendation { time: Time(now), replicas: current }]
    } else {
        previous.recommendations.clone()
    }
}

/// Decides the total replicas for one reading. Returns the next `status.scaling` (memory pruned,
/// the reading and decision recorded) and why.
pub fn decide(
    spec: &Scaling,
    previous: &ScalingStatus,
    current: i32,
    reading: Reading,
    now: Timestamp,
) -> (ScalingStatus, Why) {
    let behavior = spec.behavior.as_ref();
    let up = rules(behavior.and_then(|b| b.scale_up.as_ref()), true);
    let down = rules(behavior.and_then(|b| b.scale_down.as_ref()), false);
    let (min, max) = (spec.min_replicas, spec.max_replicas.max(spec.min_replicas));
    let mut next = previous.clone();
    next.measured_at = Some(Time(now));
    let mut recommendations = seeded(previous, current, now);

    let (desired, why) = match reading {
        Err(error) => {
            next.consecutive_failures = previous.consecutive_failures.saturating_add(1);
            let fallback = spec.fallback.as_ref().filter(|f| next.consecutive_failures >= f.after_failures);
            match fallback {
                Some(f) => {
                    let hold = f.replicas.map_or(current, |r| r.clamp(min, max)).max(current);
                    (hold, Why::Fallback(error))
                }
                None => (current, Why::MetricUnavailable(error)),
            }
        }
        Ok(observed) => {
            next.consecutive_failures = 0;
            next.observed_value = Some(observed);
            if current > max {
                (max, Why::TooManyReplicas)
            } else if current < min {
                (min, Why::TooFewReplicas)
            } else {
                let raw = recommend(current, observed, spec.metric.target_per_replica, spec.tolerance);
                let raw = raw.clamp(0, i32::MAX.into()) as i32;
                let (stable, stabilized) = stabilize(current, raw, &recommendations, &up, &down, now);
                recommendations.push(ScalingRecommendation { time: Time(now), replicas: raw });
                let (limited, why) = limit(current, stable, min, max, &next.scale_events, &up, &down, now);
                let why = match why {
                    Some(w) => w,
                    None if stabilized => Why::Stabilized,
                    None if limited == current && raw == current => Why::WithinTolerance,
                    None => Why::FollowsLoad,
                };
                (limited, why)
            }
        }
    };

    if desired != current {
        next.scale_events.push(ScaleEvent { time: Time(now), from: current, to: desired });
        next.last_scale_time = Some(Time(now));
    }
    let keep_recommendations = since(now, up.window.max(down.window));
    recommendations.retain(|r| r.time.0 > keep_recommendations || r.time.0 == now);
    next.recommendations = recommendations;
    let longest = up.policies.iter().chain(&down.policies).map(|p| Duration::from(p.period)).max().unwrap_or_default();
    next.scale_events.retain(|e| e.time.0 > since(now, longest));
    next.desired_replicas = Some(desired);
    next.reason = Some(message(&why, &next, spec, current, desired));
    (next, why)
}

/// Step 3: the recommendation after the stabilization windows, and whether they changed it.
fn stabilize(
    current: i32,
    raw: i32,
    history: &[ScalingRecommendation],
    up: &Rules,
    down: &Rules,
    now: Timestamp,
) -> (i32, bool) {
    let (up_cutoff, down_cutoff) = (since(now, up.window), since(now, down.window));
    let mut up_rec = raw;
    let mut down_rec = raw;
    for r in history {
        if r.time.0 > up_cutoff {
            up_rec = up_rec.min(r.replicas);
        }
        if r.time.0 > down_cutoff {
            down_rec = down_rec.max(r.replicas);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    (stabilized, stabilized != raw)
}

/// Steps 4 and 5: the rate limits, then the bounds. `Some(why)` when they changed the count.
#[allow(clippy::too_many_arguments)]
fn limit(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    events: &[ScaleEvent],
    up: &Rules,
    down: &Rules,
    now: Timestamp,
) -> (i32, Option<Why>) {
    if desired > current {
        if up.select == SelectPolicy::Disabled {
            return (current, Some(Why::DirectionDisabled));
        }
        let rate = scale_up_limit(current, events, up, now).max(current.into());
        let (allowed, why) =
            if i64::from(max) > rate { (rate as i32, Why::RateLimited) } else { (max, Why::TooManyReplicas) };
        if desired > allowed {
            return (allowed, Some(why));
        }
    } else if desired < current {
        if down.select == SelectPolicy::Disabled {
            return (current, Some(Why::DirectionDisabled));
        }
        let rate = scale_down_limit(current, events, down, now).min(current.into());
        let (allowed, why) =
            if i64::from(min) < rate { (rate as i32, Why::RateLimited) } else { (min, Why::TooFewReplicas) };
        if desired < allowed {
            return (allowed, Some(why));
        }
    }
    (desired, None)
}

fn message(why: &Why, next: &ScalingStatus, spec: &Scaling, current: i32, desired: i32) -> String {
    let load = next.observed_value.map_or("no reading".to_string(), |v| format!("load {v}"));
    let target = spec.metric.target_per_replica;
    let change = if desired == current { format!("{current} replicas") } else { format!("{current} → {desired}") };
    match why {
        Why::WithinTolerance => {
            format!("{load} is within {}% of {target} per replica: {change}", spec.tolerance * 100.0)
        }
        Why::FollowsLoad => format!("{load} at {target} per replica: {change}"),
        Why::Stabilized => format!("{load}; held by the stabilization window: {change}"),
        Why::RateLimited => format!("{load}; capped by the scaling rate limit: {change}"),
        Why::TooManyReplicas => format!("{load}; capped at maxReplicas {}: {change}", spec.max_replicas),
        Why::TooFewReplicas => format!("{load}; held at minReplicas {}: {change}", spec.min_replicas),
        Why::DirectionDisabled => format!("{load}; this scaling direction is disabled: {change}"),
        Why::MetricUnavailable(e) => {
            format!("load unreadable ({} in a row: {e}); holding {change}", next.consecutive_failures)
        }
        Why::Fallback(e) => {
            format!("load unreadable ({} in a row: {e}); fallback: {change}", next.consecutive_failures)
        }
    }
}

/// When the next reading is due.
pub fn next_due(spec: &Scaling, status: Option<&ScalingStatus>, now: Timestamp) -> Duration {
    let interval: Duration = spec.interval.into();
    let Some(last) = status.and_then(|s| s.measured_at.as_ref()) else { return Duration::ZERO };
    let elapsed = Duration::try_from(now.duration_since(last.0)).unwrap_or_default();
    interval.saturating_sub(elapsed)
}
