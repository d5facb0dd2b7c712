//! Objects the unit tests build: one Release and one Environment builder, each a minimal valid
//! object with the test's fields laid over it, so a test states only what it is about.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::{
    api::{Environment, EnvironmentSpec, Release, ReleaseSpec},
    controller::mock_api::merge,
};

/// Release `name` in namespace `prod`: app `shop`, version `1`, one container, with `spec` laid
/// over it (objects merge, anything else replaces). Generation 1, uid `uid-<name>`, created at
/// [`time`]`(0)`, no status.
pub fn release(name: &str, spec: Value) -> Release {
    let mut base = json!({"app": "shop", "version": "1",
        "template": {"spec": {"containers": [{"name": "app", "image": "shop:1"}]}}});
    merge(&mut base, spec);
    let spec: ReleaseSpec = serde_json::from_value(base).expect("a valid Release spec");
    let mut r = Release::new(name, spec);
    r.metadata.namespace = Some("prod".into());
    r.metadata.uid = Some(format!("uid-{name}"));
    r.metadata.generation = Some(1);
    r.metadata.creation_timestamp = Some(time(0));
    r
}

/// Environment `name`, with `spec` laid over the defaults (as [`release`]). Generation 1, uid
/// `uid-<name>`, created at [`time`]`(0)`, no status.
pub fn env(name: &str, spec: Value) -> Environment {
    let mut base = serde_json::to_value(EnvironmentSpec::default()).expect("serializable");
    merge(&mut base, spec);
    let spec: EnvironmentSpec = serde_json::from_value(base).expect("a valid Environment spec");
    let mut e = Environment::new(name, spec);
    e.metadata.uid = Some(format!("uid-{name}"));
    e.metadata.generation = Some(1);
    e.metadata.creation_timestamp = Some(time(0));
    e
}

/// A fixed instant plus `seconds` (2026-11-26T10:00:00Z + seconds), to the second as stored.
pub fn time(seconds: i64) -> Time {
    Time(jiff::Timestamp::from_second(1_795_687_200 + seconds).expect("in range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builders_lay_the_test_fields_over_a_valid_object() {
        let r =
            release("shop-2", json!({"version": "2", "replicas": 5, "template": {"metadata": {"labels": {"a": "b"}}}}));
        assert_eq!((r.spec.app.as_str(), r.spec.version.as_str(), r.spec.replicas), ("shop", "2", 5));
        let template = r.spec.template.clone();
        assert_eq!(template.spec.unwrap().containers[0].image.as_deref(), Some("shop:1"), "merged, not replaced");
        assert_eq!(template.metadata.unwrap().labels.unwrap()["a"], "b");
        assert_eq!(time(0).0.to_string(), "2026-11-26T10:00:00Z");
        let e = env("pr-1", json!({"tier": "preview", "ttl": "4h"}));
        assert_eq!(e.spec.tier, crate::api::Tier::Preview);
    }
}
