//! `kubectl phaseloop diff <release>`: what a Release changes against the app's Live Release in
//! the same namespace, field by field (a promotion request, before anyone approves it). A pure
//! function of the two specs.

use serde_json::Value;

use crate::api::ReleaseSpec;

/// One field that differs: its path (`template.spec.containers[0].image`), the Live value and
/// the candidate's (`None`: absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub path: String,
    pub live: Option<String>,
    pub candidate: Option<String>,
}

/// The fields of `candidate` that differ from `live`, in path order.
pub fn changes(live: &ReleaseSpec, candidate: &ReleaseSpec) -> Vec<Change> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &serde_json::to_value(live).unwrap_or_default(), &mut a);
    flatten("", &serde_json::to_value(candidate).unwrap_or_default(), &mut b);
    let mut paths: Vec<&String> = a.iter().chain(&b).map(|(p, _)| p).collect();
    paths.sort();
    paths.dedup();
    let get = |v: &[(String, String)], p: &str| v.iter().find(|(q, _)| q == p).map(|(_, x)| x.clone());
    paths
        .into_iter()
        .filter_map(|p| {
            let (l, c) = (get(&a, p), get(&b, p));
            (l != c).then(|| Change { path: p.clone(), live: l, candidate: c })
        })
        .collect()
}

/// Leaves of `v` as (path, JSON text).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, x, out);
            }
        }
        Value::Array(xs) if !xs.is_empty() => {
            for (i, x) in xs.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        Value::Null => {}
        leaf => out.push((prefix.to_string(), leaf.to_string())),
    }
}

/// The changes as the plugin prints them.
pub fn render(live_release: &str, candidate_release: &str, changes: &[Change]) -> String {
    let mut out = format!("--- {live_release} (Live)\n+++ {candidate_release}\n");
    for c in changes {
        let (l, r) = (c.live.as_deref().unwrap_or("(none)"), c.candidate.as_deref().unwrap_or("(none)"));
        out += &format!("{}: {l} -> {r}\n", c.path);
    }
    if changes.is_empty() {
        out += "no change\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fixtures;

    #[test]
    fn only_the_fields_that_differ_with_both_values() {
        let live = fixtures::release(
            "shop-2",
            json!({"version": "2", "replicas": 2,
            "template": {"spec": {"containers": [{"name": "app", "image": "shop:2"}]}}}),
        )
        .spec;
        let candidate = fixtures::release(
            "shop-3",
            json!({"version": "3", "replicas": 6,
            "template": {"spec": {"containers": [{"name": "app", "image": "shop:3",
                "resources": {"requests": {"cpu": "500m"}}}]}}}),
        )
        .spec;
        let c = changes(&live, &candidate);
        let paths: Vec<&str> = c.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "replicas",
                "template.spec.containers[0].image",
                "template.spec.containers[0].resources.requests.cpu",
                "version"
            ]
        );
        assert_eq!(c[0].live.as_deref(), Some("2"));
        assert_eq!(c[0].candidate.as_deref(), Some("6"));
        assert_eq!(c[2].live, None, "absent on the Live side");
        let text = render("shop-2", "shop-3", &c);
        assert!(text.contains("template.spec.containers[0].image: \"shop:2\" -> \"shop:3\""), "{text}");
        assert!(render("a", "b", &[]).ends_with("no change\n"));
    }
}
