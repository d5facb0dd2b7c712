//! Checks before the controllers start.

use kube::{Api, Client, api::ListParams};

use crate::api::{Environment, Release};

/// What to do when the API server does not serve phaseloop's kinds.
pub const NOT_INSTALLED: &str = "the API server does not serve phaseloop.dev/v1alpha1 (the CRDs are not \
     installed): kubectl apply -f crds/ (or install the Helm chart), then start the operator again";

/// Whether the API server serves the kinds the controllers watch (Releases, of `namespace` in
/// single-namespace mode, and Environments otherwise): without them the watches would only retry
/// and log, the caches never fill, and nothing would say why. One LIST of at most one object each.
pub async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<(), String> {
    let lp = ListParams::default().limit(1);
    let releases = super::watch::scoped::<Release>(client, namespace);
    let mut checks = vec![releases.list_metadata(&lp).await.map(|_| ())];
    if namespace.is_none() {
        checks.push(Api::<Environment>::all(client.clone()).list_metadata(&lp).await.map(|_| ()));
    }
    for check in checks {
        match check {
            Err(kube::Error::Api(e)) if e.code == 404 => return Err(NOT_INSTALLED.to_string()),
            Err(e) => return Err(format!("cannot list phaseloop's kinds: {e}")),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// What to do when `--gateway-api` is set and the API server does not serve HTTPRoutes.
pub const NO_GATEWAY_API: &str = "--gateway-api is set but the API server does not serve \
     gateway.networking.k8s.io/v1 HTTPRoutes: install the Gateway API CRDs (standard channel), or run \
     the operator without --gateway-api (chart value trafficRouting.gatewayAPI=false)";

/// Whether the API server serves HTTPRoutes (with `--gateway-api`), in `namespace` in
/// single-namespace mode: one LIST of at most one route.
pub async fn check_gateway_api(client: &Client, namespace: Option<&str>) -> Result<(), String> {
    let ar = crate::controller::release::traffic::gateway::api_resource();
    let routes: Api<kube::api::DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    match routes.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Err(NO_GATEWAY_API.to_string()),
        Err(e) => Err(format!("cannot list HTTPRoutes (--gateway-api): {e}")),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::mock_api::{MockApi, status};

    fn empty_list() -> (u16, serde_json::Value) {
        (200, json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": []}))
    }

    #[tokio::test]
    async fn missing_crds_are_named_with_the_command_that_installs_them() {
        let api = MockApi::default();
        api.on("GET", "/releases", |_| {
            status(404, "NotFound", "the server could not find the requested resource", &[])
        });
        let err = check_crds(&api.client(), None).await.unwrap_err();
        assert!(err.contains("kubectl apply -f crds/"), "{err}");
        // Half installed (an old or partial apply): Environments missing.
        let api = MockApi::default();
        api.on("GET", "/releases", |_| empty_list());
        let err = check_crds(&api.client(), None).await.unwrap_err();
        assert!(err.contains("kubectl apply -f crds/"), "{err}");
    }

    #[tokio::test]
    async fn gateway_routing_without_the_gateway_api_says_what_to_install() {
        let api = MockApi::default();
        api.on("GET", "/httproutes", |_| {
            status(404, "NotFound", "the server could not find the requested resource", &[])
        });
        let err = check_gateway_api(&api.client(), Some("shop")).await.unwrap_err();
        assert!(err.contains("Gateway API CRDs"), "{err}");
        let api = MockApi::default();
        api.on("GET", "/httproutes", |_| empty_list());
        assert_eq!(check_gateway_api(&api.client(), None).await, Ok(()));
    }

    #[tokio::test]
    async fn served_kinds_pass_with_one_small_list_each() {
        let api = MockApi::default();
        api.on("GET", "/releases", |_| empty_list());
        api.on("GET", "/environments", |_| empty_list());
        check_crds(&api.client(), None).await.unwrap();
        let uris: Vec<String> = api.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(uris.len(), 2, "{uris:?}");
        assert!(uris.iter().all(|u| u.contains("limit=1")), "{uris:?}");
        // Single-namespace mode reads its namespace's Releases only (no rights on Environments).
        let api = MockApi::default();
        api.on("GET", "/namespaces/shop/releases", |_| empty_list());
        check_crds(&api.client(), Some("shop")).await.unwrap();
        assert_eq!(api.requests().len(), 1);
    }

    #[tokio::test]
    async fn other_failures_say_what_failed() {
        let api = MockApi::default();
        api.on("GET", "/releases", |_| status(403, "Forbidden", "releases.phaseloop.dev is forbidden", &[]));
        let err = check_crds(&api.client(), None).await.unwrap_err();
        assert!(err.contains("forbidden") && !err.contains("crds/"), "{err}");
    }
}
