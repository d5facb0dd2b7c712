//! Requests the operator makes to the API server, counted client-side by verb and resource: the
//! "API requests per object" of the benchmark, and a dashboard's view of write load.

/// The Kubernetes verb and resource of a request, from its method, path and query. Bounded: the
/// resource is the plural name of a kind (plus `/status` and the like for subresources), never a
/// name or namespace.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    // /api/v1/<rest> or /apis/<group>/<version>/<rest>
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    // namespaces/<ns>/<plural>[/<name>[/<sub>]] is namespaced; anything else is cluster-scoped.
    let rest = match rest {
        ["namespaces", _, plural, more @ ..] => [&[*plural][..], more].concat(),
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => ("other".to_string(), false),
        [plural] => (plural.to_string(), false),
        [plural, _name] => (plural.to_string(), true),
        [plural, _name, sub, ..] => (format!("{plural}/{sub}"), true),
    };
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource)
}

/// Whether a verb changes something (what a no-op reconcile must not do).
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn verbs_and_resources_come_from_method_path_and_query() {
        let c = |m: Method, p: &str, q: Option<&str>| {
            let (v, r) = classify(&m, p, q);
            format!("{v} {r}")
        };
        assert_eq!(
            c(Method::GET, "/apis/apps/v1/deployments", Some("labelSelector=a%3Db&limit=50")),
            "list deployments"
        );
        assert_eq!(
            c(Method::GET, "/apis/apps/v1/deployments", Some("watch=true&resourceVersion=5")),
            "watch deployments"
        );
        assert_eq!(c(Method::GET, "/apis/phaseloop.dev/v1alpha1/environments/dev", None), "get environments");
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/phaseloop.dev/v1alpha1/namespaces/shop/releases/web-1/status",
                Some("fieldManager=phaseloop")
            ),
            "patch releases/status"
        );
        assert_eq!(c(Method::PATCH, "/api/v1/namespaces/shop/services/web", None), "patch services");
        assert_eq!(c(Method::GET, "/api/v1/namespaces/shop", None), "get namespaces");
        assert_eq!(c(Method::GET, "/api/v1/namespaces", None), "list namespaces");
        assert_eq!(c(Method::POST, "/apis/events.k8s.io/v1/namespaces/shop/events", None), "create events");
        assert_eq!(c(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/x/leases/phaseloop", None), "update leases");
        assert_eq!(c(Method::DELETE, "/apis/batch/v1/namespaces/shop/jobs/t-1", None), "delete jobs");
        assert_eq!(c(Method::GET, "/version", None), "list other");
        assert!(is_write("patch") && is_write("delete") && !is_write("watch") && !is_write("get"));
    }
}
