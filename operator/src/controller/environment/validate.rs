//! What an Environment's spec may not ask for, beyond what its schema and CEL rules refuse: each
//! problem says what to change.

use crate::api::{EnvironmentSpec, PodSecurity};

/// Why an Environment may not have the Pod Security level it asks for: looser than `max`, what the
/// operator's configuration allows (`--max-pod-security`).
pub fn pod_security_problem(asked: Option<PodSecurity>, max: PodSecurity) -> Option<String> {
    let asked = asked.filter(|a| *a > max)?;
    Some(format!(
        "spec.podSecurity {} is looser than this operator allows ({}): an operator admin can allow it \
         (--max-pod-security, chart value environments.maxPodSecurity)",
        asked.as_str(),
        max.as_str()
    ))
}

/// Spec problems the API server cannot see: each message says what to change.
pub fn validate(name: &str, spec: &EnvironmentSpec) -> Vec<String> {
    use crate::api::{below, least};
    let mut problems = crate::api::duration_problems(spec);
    problems.extend(spec.ttl.and_then(|t| below("spec.ttl", t, least::LIFETIME)));
    problems.extend(spec.sleep_after.and_then(|t| below("spec.sleepAfter", t, least::LIFETIME)));
    let restart = spec.seed.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.restart_policy.as_deref());
    if let Some(policy) = restart.filter(|p| !matches!(*p, "Never" | "OnFailure")) {
        problems.push(format!(
            "spec.seed.template.spec.restartPolicy: {policy} is not allowed for a Job; use Never or OnFailure"
        ));
    }
    if spec.from.as_deref() == Some(name) {
        problems.push("spec.from names this Environment itself; branch from another Environment".to_string());
    }
    if spec.promotion.as_ref().and_then(|p| p.from.as_deref()) == Some(name) {
        problems.push("spec.promotion.from names this Environment itself".to_string());
    }
    // Quantities are int-or-string in the schema; the ResourceQuota and LimitRange would be
    // refused later (with a 500 from server-side apply), so they are checked here.
    let quota = spec.quota.as_ref();
    let defaults = spec.defaults.as_ref();
    let amounts = [
        ("spec.quota.cpu", quota.and_then(|q| q.cpu.as_ref())),
        ("spec.quota.memory", quota.and_then(|q| q.memory.as_ref())),
        ("spec.defaults.requests.cpu", defaults.and_then(|d| d.requests.as_ref()).and_then(|r| r.cpu.as_ref())),
        ("spec.defaults.requests.memory", defaults.and_then(|d| d.requests.as_ref()).and_then(|r| r.memory.as_ref())),
        ("spec.defaults.limits.cpu", defaults.and_then(|d| d.limits.as_ref()).and_then(|r| r.cpu.as_ref())),
        ("spec.defaults.limits.memory", defaults.and_then(|d| d.limits.as_ref()).and_then(|r| r.memory.as_ref())),
    ];
    for (path, value) in amounts {
        if let Some(q) = value.filter(|q| !is_quantity(&q.0)) {
            problems.push(format!("{path}: {:?} is not a quantity (e.g. 500m, 2, 4Gi)", q.0));
        }
    }
    problems
}

/// Kubernetes' quantity syntax: `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`, and not negative.
pub fn is_quantity(s: &str) -> bool {
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, rest) = s.split_at(number_end);
    let digits = number.trim_start_matches('+');
    let number_ok = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.');
    let suffix_end = rest.find(|c: char| !"eEinumkKMGTP".contains(c)).unwrap_or(rest.len());
    let exponent = rest[suffix_end..].trim_start_matches(['+', '-']);
    number_ok && digits.chars().any(|c| c.is_ascii_digit()) && exponent.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_kubernetes_parses_them() {
        for ok in ["1", "500m", "2.5", "4Gi", "128Mi", "1e3", "0"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["lots", "", "-1", "1 Gi", "Gi", ".", "4GB"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn a_pod_security_level_looser_than_the_operator_allows_is_a_problem() {
        use crate::api::PodSecurity::*;
        assert_eq!(pod_security_problem(None, Restricted), None);
        assert_eq!(pod_security_problem(Some(Restricted), Restricted), None);
        assert_eq!(pod_security_problem(Some(Baseline), Privileged), None);
        let why = pod_security_problem(Some(Privileged), Restricted).unwrap();
        assert!(why.contains("podSecurity privileged") && why.contains("--max-pod-security"), "{why}");
        assert!(pod_security_problem(Some(Privileged), Baseline).is_some());
    }
}
