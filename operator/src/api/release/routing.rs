//! How a Release's traffic reaches its versions through Gateway API routes: exact weights and
//! header routes, apart from pod counts.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How the app's traffic reaches its versions. Without it, the Service `<app>` selects the serving
/// pods, so a version's share of requests follows its share of Ready pods (approximate: a 5% step
/// of 4 pods serves 25%).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    /// Steer requests through Gateway API HTTPRoutes: `setWeight` sets exact route weights whatever
    /// the pod counts, `setHeaderRoute` sends matching requests to the candidate at any weight.
    #[serde(rename = "gatewayAPI")]
    pub gateway_api: GatewayApiRouting,
}

/// The HTTPRoutes a Release steers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiRouting {
    /// HTTPRoutes in the Release's namespace. phaseloop sets the `backendRefs` of the named rules
    /// (to the Services `<app>-stable` and `<app>-canary`, weighted) and adds a rule of its own for
    /// a header route; every other part of each route stays its owner's.
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o.name == r.name))").message("each HTTPRoute is named once"))]
    pub http_routes: Vec<RouteRef>,
}

/// One HTTPRoute and the rules of it that phaseloop steers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteRef {
    /// The HTTPRoute's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// Names of the rules to steer (`spec.rules[].name`); empty: every rule of the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub rules: Vec<String>,
}

/// Requests that reach the candidate whatever the weight: those with a header of this value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.exact) != has(self.regex)").message("a header route matches exactly one of exact, regex"))]
pub struct HeaderRoute {
    /// The header's name, e.g. `x-canary`.
    #[schemars(length(min = 1, max = 256), regex(pattern = "^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$"))]
    pub name: String,
    /// The value, matched exactly (a Core feature of every conformant Gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub exact: Option<String>,
    /// A regular expression (implementation-specific: only where the Gateway supports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub regex: Option<String>,
}

/// The candidate's pods apart from its weight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.replicas) ? 1 : 0) + (has(self.percent) ? 1 : 0) + (has(self.matchTrafficWeight) && self.matchTrafficWeight ? 1 : 0) == 1")
    .message("setCanaryScale sets exactly one of replicas, percent, matchTrafficWeight: true"))]
pub struct CanaryScale {
    /// This many pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// This share of the app's total, rounded up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,
    /// Back to pods following the weight (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
}

/// Blue-green settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    /// Steer requests through Gateway API HTTPRoutes: the switch is one route write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<TrafficRouting>,
    /// With `trafficRouting`: requests with this header reach the candidate during its preview;
    /// no other request does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_header: Option<HeaderRoute>,
}
