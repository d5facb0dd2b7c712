//! Observing what a Release steers through the Gateway API: its HTTPRoutes (from the routes
//! cache) and the Ready endpoints of its pods behind the app's canary Service.

use kube::{Api, api::ListParams, runtime::reflector::ObjectRef};

use crate::{
    api::Release,
    controller::{
        Context, Error,
        release::{
            traffic::{
                self,
                gateway::{self, RouteSeen},
            },
            workload,
        },
    },
};

/// Ready endpoints of `rel`'s own pods behind its app's canary Service: one LIST, only for a
/// routed Release rolling out. Counted by pod (the Service's selector may have just moved from
/// another version, and its EndpointSlices lag behind).
pub async fn canary_endpoints(ctx: &Context, rel: &Release) -> Result<i32, Error> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), rel.ns());
    let service = gateway::canary_service(&rel.spec.app);
    let of_service = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let pods = format!("{}-", workload::deployment_name(&rel.spec.app, &rel.spec.version));
    let ready = slices
        .list(&of_service)
        .await?
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .filter(|e| e.target_ref.as_ref().and_then(|t| t.name.as_deref()).is_some_and(|n| n.starts_with(&pods)))
        .count();
    Ok(ready as i32)
}

/// The HTTPRoutes `rel` steers, from the routes cache; or why they cannot be read.
pub fn routes_of(ctx: &Context, rel: &Release) -> (Vec<(crate::api::RouteRef, Option<RouteSeen>)>, Option<String>) {
    let Some(routing) = traffic::routing(rel) else { return (vec![], None) };
    let Some(store) = &ctx.caches.routes else {
        let why = "this operator does not steer Gateway API routes: run it with --gateway-api (chart value trafficRouting.gatewayAPI)";
        return (vec![], Some(why.into()));
    };
    let ar = traffic::gateway::api_resource();
    let routes = routing.gateway_api.http_routes.iter().map(|r| {
        let key = ObjectRef::new_with(&r.name, ar.clone()).within(rel.ns());
        (r.clone(), store.get(&key).map(|o| RouteSeen::of(&o)))
    });
    (routes.collect(), None)
}
