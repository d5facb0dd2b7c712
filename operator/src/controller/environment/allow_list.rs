//! The infrastructure allow-list: the kinds an Environment's components may hold, whatever the
//! operator's credentials would allow, and the API groups never allowed at all.

/// The default allow-list (`--infrastructure-kinds`): workloads, their configuration and storage,
/// as `resource.group` (`configmaps` for the core group, `deployments.apps`).
pub const DEFAULT_INFRASTRUCTURE_KINDS: &[&str] = &[
    "deployments.apps",
    "statefulsets.apps",
    "jobs.batch",
    "cronjobs.batch",
    "configmaps",
    "secrets",
    "services",
    "persistentvolumeclaims",
    "serviceaccounts",
    "poddisruptionbudgets.policy",
];

/// API groups never allowed in infrastructure, whatever the allow-list says: who may do what
/// (RBAC), what the API server admits (webhooks, policies), which APIs exist, and certificates.
/// A component holding them would let anyone who may create an Environment escalate through
/// phaseloop's credentials.
pub const NEVER_INFRASTRUCTURE: &[&str] = &[
    "rbac.authorization.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "certificates.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
];

/// Why a kind (`plural` in `group`) may not be an infrastructure object under `allowed`, if it
/// may not.
pub fn allowed(allowed: &[String], group: &str, plural: &str, kind: &str) -> Result<(), String> {
    let name = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
    if NEVER_INFRASTRUCTURE.contains(&group) {
        return Err(format!("{kind} ({name}) is never allowed in infrastructure: it would grant or change access"));
    }
    if !allowed.iter().any(|a| a == &name) {
        return Err(format!(
            "{kind} ({name}) is not in the operator's infrastructure allow-list ({}); an operator admin can \
             add it (--infrastructure-kinds, chart value infrastructure.kinds)",
            allowed.join(", ")
        ));
    }
    Ok(())
}

/// The default allow-list, as the configuration holds it.
pub fn default_kinds() -> Vec<String> {
    DEFAULT_INFRASTRUCTURE_KINDS.iter().map(|k| k.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_kinds_are_refused_even_when_listed() {
        let listed = vec!["rolebindings.rbac.authorization.k8s.io".to_string(), "configmaps".into()];
        let why = allowed(&listed, "rbac.authorization.k8s.io", "rolebindings", "RoleBinding").unwrap_err();
        assert!(why.contains("never allowed"), "{why}");
        assert_eq!(allowed(&listed, "", "configmaps", "ConfigMap"), Ok(()));
    }

    #[test]
    fn a_kind_outside_the_list_is_refused_with_the_flag_that_adds_it() {
        let why = allowed(&default_kinds(), "networking.k8s.io", "ingresses", "Ingress").unwrap_err();
        assert!(why.contains("ingresses.networking.k8s.io") && why.contains("--infrastructure-kinds"), "{why}");
        assert_eq!(allowed(&default_kinds(), "apps", "deployments", "Deployment"), Ok(()));
    }
}
