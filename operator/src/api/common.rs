//! Types and schema helpers shared by both kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{Schema, SchemaGenerator, json_schema};

/// A Go-style duration such as `30s`, `5m`, `1h30m` (what `kubectl` and every Kubernetes API use).
///
/// Parsing is done by `kube::core::Duration`, which follows Go's `time.ParseDuration`, within the
/// bounds of [`parse_duration`]; admission only lets through the subset matched by
/// [`DURATION_PATTERN`]. Decoding never fails: a stored value out of those bounds (written under
/// an older, looser schema) decodes as [`Duration::INVALID`], which validation reports for that
/// object alone. A failing decode would fail the LIST of every object of the kind, and
/// kube-core's parser would even panic on overflow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Duration(std::time::Duration);

/// How [`Duration::INVALID`] serializes, and what validation looks for.
pub const INVALID_DURATION: &str = "<invalid duration>";

impl Duration {
    /// A value that did not decode.
    pub const INVALID: Duration = Duration(std::time::Duration::MAX);

    pub fn is_invalid(self) -> bool {
        self == Self::INVALID
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_invalid() {
            return f.write_str(INVALID_DURATION);
        }
        std::fmt::Display::fmt(&kube::core::Duration::from(self.0), f)
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(parse_duration(&text).unwrap_or(Duration::INVALID))
    }
}

impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        duration_schema(g)
    }
}

/// Problems for every duration of `spec` that did not decode (see [`Duration`]).
pub fn duration_problems<T: serde::Serialize>(spec: &T) -> Vec<String> {
    let mut paths = Vec::new();
    if let Ok(value) = serde_json::to_value(spec) {
        invalid_durations(&value, "spec", &mut paths);
    }
    paths
        .into_iter()
        .map(|p| format!("{p}: not a duration within bounds (at most 9 digits a number, no sign)"))
        .collect()
}

/// The paths in `value` (a spec as JSON) holding a duration that did not decode.
pub fn invalid_durations(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) if s == INVALID_DURATION => out.push(path.to_string()),
        serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| invalid_durations(v, &format!("{path}.{k}"), out)),
        serde_json::Value::Array(a) => {
            a.iter().enumerate().for_each(|(i, v)| invalid_durations(v, &format!("{path}[{i}]"), out))
        }
        _ => {}
    }
}

/// Non-negative Go durations with explicit units: what [`Duration`] accepts minus signs and bare
/// numbers. Kept in one place so the schema and the docs cannot disagree.
///
/// At most nine digits per number: [`Duration`]'s parser panics on overflow (it multiplies a
/// `std::time::Duration` by a float), and a panic while decoding a watched object would take the
/// operator down for everyone. With nine digits and the 32-character bound, the largest value is
/// about 10^13 seconds, far from overflowing.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h))+$";

/// Parses a duration a person typed (the plugin's arguments) within the bounds the schema puts on
/// stored ones: no sign, at most nine digits a number, at most 32 characters. [`Duration`]'s own
/// parser panics on overflow and takes `-1h` for a negative duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digit_runs_ok = s.split(|c: char| !c.is_ascii_digit()).all(|run| run.len() <= 9);
    if s.is_empty() || s.len() > 32 || s.contains(['-', '+']) || !digit_runs_ok {
        return Err(format!("{s:?} is not a duration like 90s, 30m or 1h30m (no sign, at most 9 digits a number)"));
    }
    let d: kube::core::Duration =
        s.parse().map_err(|e| format!("{s:?} is not a duration like 90s, 30m or 1h30m: {e:?}"))?;
    Ok(Duration(d.into()))
}

/// The least each bounded duration may be, as admission checks it (CEL on the types): a stored
/// value below it (written before the bound existed) is reported by validation instead.
pub mod least {
    use std::time::Duration;
    /// Analysis and scaling intervals, test timeouts, analysis steps: anything looked at again.
    pub const INTERVAL: Duration = Duration::from_secs(1);
    /// `strategy.progressDeadline`: pods need time to start.
    pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(10);
    /// An Environment's `ttl` and `sleepAfter`.
    pub const LIFETIME: Duration = Duration::from_secs(10);
    /// `testEnvironment.ttl`: a test Environment must be provisioned and run its tests.
    pub const TEST_ENVIRONMENT_TTL: Duration = Duration::from_secs(60);
}

/// A problem when `value` (at `path`) is below `least`.
pub fn below(path: &str, value: Duration, least: std::time::Duration) -> Option<String> {
    let v: std::time::Duration = value.into();
    (!value.is_invalid() && v < least)
        .then(|| format!("{path}: {value} is below the least allowed, {}", Duration(least)))
}

/// DNS-1123 label: names of namespaces, Services and components.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Schema of a duration field: a bounded string in Go duration syntax.
pub fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": DURATION_PATTERN,
    })
}

/// Schema of an optional duration field (nullable, so server-side apply can clear it).
pub fn optional_duration_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = duration_schema(g);
    s.insert("nullable".into(), true.into());
    s
}

/// Schema of a list of standard `metav1.Condition`s, keyed by `type` so server-side apply merges
/// them per condition (Kubernetes API conventions).
pub fn conditions_schema(g: &mut SchemaGenerator) -> Schema {
    let mut s = g.subschema_for::<Vec<Condition>>();
    s.insert("x-kubernetes-list-type".into(), "map".into());
    s.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    s.insert("maxItems".into(), 16.into());
    s
}

/// Schema of an arbitrary embedded Kubernetes object (kept as-is, validated by its own API later).
pub fn embedded_object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-embedded-resource": true,
    })
}

/// Schema of an object stored as-is (already validated elsewhere).
pub fn preserved_object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Condition types used by both kinds.
pub mod condition {
    /// The object is doing what its spec asks.
    pub const READY: &str = "Ready";
    /// Something is wrong that needs a person: invalid spec, conflict, failing dependency.
    pub const DEGRADED: &str = "Degraded";
    /// Environment: every infrastructure component is ready.
    pub const INFRASTRUCTURE_READY: &str = "InfrastructureReady";
    /// Environment: the seed Job succeeded.
    pub const SEEDED: &str = "Seeded";
    /// Environment with a `ttl`: True while it will delete itself at `status.expiresAt` (or does);
    /// False while a reached ttl is held (the operator's clock disagrees with the API server's, or
    /// the spec is invalid). The reason says which.
    pub const EXPIRING: &str = "Expiring";
    /// Release: tests passed.
    pub const TESTED: &str = "Tested";
    /// Release: the gate is open (approved, promotion rules met).
    pub const APPROVED: &str = "Approved";
    /// Release: a rollout is in progress.
    pub const PROGRESSING: &str = "Progressing";
    /// Release: the app serves from this Release.
    pub const AVAILABLE: &str = "Available";
    /// Release (Live): the previous version is warm and a revert would take all traffic at once;
    /// False with the reason when it is not (window ended, no previous version, warming, refused).
    pub const REVERT_READY: &str = "RevertReady";
    /// Release: a deletion waits, because the Release still serves (it is Live, or the warm
    /// previous version of the Live one).
    pub const DELETING: &str = "Deleting";
    /// Release: the autoscaler reads its load and owns the replica count (False: the read fails,
    /// another autoscaler targets the app, or the Environment sleeps; the reason says which).
    pub const SCALING_ACTIVE: &str = "ScalingActive";
    /// Release: the autoscaler wants more or fewer replicas than its bounds or rate limits allow.
    pub const SCALING_LIMITED: &str = "ScalingLimited";
}

/// A status that can say what went wrong: both kinds' statuses.
pub trait Reported {
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    /// The human-readable summary, where the kind has one.
    fn set_message(&mut self, _message: String) {}
}

/// Annotations understood by phaseloop.
pub mod annotation {
    /// Deleting a production Environment requires this annotation set to `"true"`.
    pub const ALLOW_DELETE: &str = "phaseloop.dev/allow-delete";
    /// Wakes a sleeping Environment.
    pub const WAKE: &str = "phaseloop.dev/wake";
    /// On an Environment: an RFC 3339 time that moves its expiry later (`kubectl phaseloop env
    /// extend`); the admission policy `phaseloop.dev-environment-expiry` refuses any other value.
    pub const EXPIRES_AT: &str = "phaseloop.dev/expires-at";
    /// RFC 3339 time of the commit a Release ships; the start of its DORA lead time.
    pub const COMMIT_TIME: &str = "phaseloop.dev/commit-time";
    /// Approves a Release; its value names who approved (`kubectl phaseloop approve`). Setting it
    /// needs the verb `approve`, and it must name the requester (an admission policy in `crds/`).
    pub const APPROVED_BY: &str = "phaseloop.dev/approved-by";
    /// Promotes past the current pause (`kubectl phaseloop promote`); its value names who asks
    /// (checked at admission, like every control annotation); consumed.
    pub const PROMOTE: &str = "phaseloop.dev/promote";
    /// Aborts a rollout (`kubectl phaseloop abort`); its value names who asks; consumed.
    pub const ABORT: &str = "phaseloop.dev/abort";
    /// Reverts a Live Release to the previous one within the revert window
    /// (`kubectl phaseloop revert`); its value names who asks; consumed.
    pub const REVERT: &str = "phaseloop.dev/revert";
    /// Who created a Release, recorded by the API server at creation (an admission policy writes
    /// the requester's user name, whatever the client sent) and never changed: with an
    /// Environment's `promotion.separationOfDuties`, its author's approval does not count.
    pub const CREATED_BY: &str = "phaseloop.dev/created-by";
    /// Lets a rollout go on past a failed analysis or a missed progress deadline when
    /// `autoRollback` is off (`kubectl phaseloop promote --override`); its value names who, and
    /// setting it needs the verb `approve`. Consumed.
    pub const OVERRIDE: &str = "phaseloop.dev/override";
}

/// Labels phaseloop puts on what it manages.
pub mod label {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const VERSION: &str = "app.kubernetes.io/version";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGER: &str = "phaseloop";
    pub const ENVIRONMENT: &str = "phaseloop.dev/environment";
    pub const TIER: &str = "phaseloop.dev/tier";
    /// The install a Release or Environment belongs to (an operator started with that
    /// `--instance-id`); absent: the install without one. Also on an Environment's namespace, whose
    /// Releases must carry the Environment's instance (an admission policy checks it).
    pub const INSTANCE: &str = "phaseloop.dev/instance";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_bounds_stored_duration_decodes_as_invalid_and_is_found() {
        let d: Duration = serde_json::from_value(serde_json::json!("99999999999999999999h")).unwrap();
        assert!(d.is_invalid());
        let spec = serde_json::json!({"a": {"b": [INVALID_DURATION, "5m"]}, "c": "5m"});
        let mut found = Vec::new();
        invalid_durations(&spec, "spec", &mut found);
        assert_eq!(found, ["spec.a.b[0]"]);
        let ok: Duration = serde_json::from_value(serde_json::json!("1h30m")).unwrap();
        assert_eq!(serde_json::to_value(ok).unwrap(), serde_json::json!("5400s"));
    }

    #[test]
    fn typed_durations_are_bounded_and_unsigned() {
        assert_eq!(parse_duration("1h30m").map(std::time::Duration::from), Ok(std::time::Duration::from_secs(5400)));
        for bad in ["-1h", "+1h", "", "99999999999999999999h", "1x", "1h-30m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_largest_durations_the_schema_admits_parse_without_overflow() {
        // 32 characters of the largest components the pattern allows.
        for s in ["999999999.999999999h999999999h", "999999999h999999999h999999999h", "999999999.999999999ns"] {
            assert!(s.len() <= 32);
            let d: Duration = s.parse().unwrap();
            assert!(std::time::Duration::from(d) > std::time::Duration::ZERO, "{s}");
        }
    }
}
