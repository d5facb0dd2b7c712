//! The real node's Gateway: Traefik with its kubernetesGateway provider, started by
//! `e2e/scripts/start-node.sh` inside the node's network namespace, serving the Gateway
//! `$E2E_GATEWAY_NAMESPACE/$E2E_GATEWAY_NAME` (one HTTP listener, routes from every namespace).
//!
//! Helpers to write HTTPRoutes attached to it, to find its address, and to know when a route's
//! current rules are what Traefik serves: the route's status says Traefik accepted that generation,
//! and Traefik's own API (inside the namespace) shows the same backends and weights, so a test
//! measures who answers only once the change is live.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Context, bail};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::real_node::{in_netns, now_ms};

/// The field manager of the routes the tests write.
pub const FIELD_MANAGER: &str = "phaseloop-e2e";

/// The Gateway's namespace (`E2E_GATEWAY_NAMESPACE`, set by env.sh).
pub fn namespace() -> String {
    std::env::var("E2E_GATEWAY_NAMESPACE").unwrap_or_else(|_| "phaseloop-gateway".into())
}

/// The Gateway's name (`E2E_GATEWAY_NAME`, set by env.sh).
pub fn name() -> String {
    std::env::var("E2E_GATEWAY_NAME").unwrap_or_else(|_| "e2e".into())
}

/// Traefik's API and ping, on 127.0.0.1 inside the node's network namespace (`E2E_GATEWAY_ADMIN_URL`).
fn admin_url() -> String {
    std::env::var("E2E_GATEWAY_ADMIN_URL").unwrap_or_else(|_| "http://127.0.0.1:9000".into())
}

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", kind))
}

/// The HTTPRoutes of namespace `ns`.
pub fn routes(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource("HTTPRoute"))
}

/// The Gateway's URL inside the node's namespace, `http://<address>:<port>/`, from its status:
/// only once Traefik has marked it Programmed and published its address.
pub async fn url(client: &Client) -> anyhow::Result<String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace(), &resource("Gateway"));
    let gw = api.get(&name()).await.with_context(|| format!("Gateway {}/{}", namespace(), name()))?;
    let programmed = gw.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Programmed" && c["status"] == "True");
    anyhow::ensure!(programmed, "Gateway {} is not Programmed: {}", name(), gw.data["status"]);
    let address = gw.data["status"]["addresses"][0]["value"].as_str().context("no address in the Gateway's status")?;
    let port = gw.data["spec"]["listeners"][0]["port"].as_u64().context("no listener port")?;
    Ok(format!("http://{address}:{port}/"))
}

/// A backendRef to Service `service` (port 80) with `weight`.
pub fn backend(service: &str, weight: u32) -> Value {
    json!({"name": service, "port": 80, "weight": weight})
}

/// A rule without matches (every request of the route's hostnames) over `backends`.
pub fn weighted_rule(backends: Vec<Value>) -> Value {
    json!({"backendRefs": backends})
}

/// A rule for the requests whose `header` is exactly `value`, over `backends`.
pub fn header_rule(header: &str, value: &str, backends: Vec<Value>) -> Value {
    json!({
        "matches": [{"headers": [{"type": "Exact", "name": header, "value": value}]}],
        "backendRefs": backends,
    })
}

/// An HTTPRoute `name` in `ns` attached to the Gateway for `hostname`, with `rules`.
pub fn http_route(ns: &str, name: &str, hostname: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": self::name(), "namespace": namespace()}],
            "hostnames": [hostname],
            "rules": rules,
        }
    })
}

/// Writes `route` by server-side apply (field manager [`FIELD_MANAGER`]) and returns it.
pub async fn apply_route(client: &Client, route: &Value) -> anyhow::Result<DynamicObject> {
    let ns = route["metadata"]["namespace"].as_str().context("route namespace")?;
    let name = route["metadata"]["name"].as_str().context("route name")?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(routes(client, ns).patch(name, &params, &Patch::Apply(route)).await?)
}

/// The backends and weights of each rule, as a set of sorted lists of (Service, weight); a
/// backendRef's weight defaults to 1.
pub type RuleWeights = BTreeSet<Vec<(String, u64)>>;

/// The rules of an HTTPRoute object as [`RuleWeights`].
pub fn route_weights(route: &DynamicObject) -> RuleWeights {
    let rules = route.data["spec"]["rules"].as_array().cloned().unwrap_or_default();
    rules
        .iter()
        .map(|r| {
            let mut b: Vec<(String, u64)> = r["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| (b["name"].as_str().unwrap_or_default().to_string(), b["weight"].as_u64().unwrap_or(1)))
                .collect();
            b.sort();
            b
        })
        .collect()
}

/// Whether the route's status says the Gateway accepted its current generation and resolved
/// every backend.
fn accepted(route: &DynamicObject) -> bool {
    let generation = route.metadata.generation.unwrap_or_default();
    route.data["status"]["parents"].as_array().into_iter().flatten().any(|p| {
        let ours = p["parentRef"]["name"] == name().as_str()
            && p["parentRef"]["namespace"].as_str().is_none_or(|n| n == namespace());
        let holds = |t: &str| {
            p["conditions"].as_array().into_iter().flatten().any(|c| {
                c["type"] == t && c["status"] == "True" && c["observedGeneration"].as_i64() == Some(generation)
            })
        };
        ours && holds("Accepted") && holds("ResolvedRefs")
    })
}

fn traefik_get(path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", admin_url());
    let out = in_netns(&["curl", "-fsS", "--max-time", "5", &url]);
    if !out.status.success() {
        bail!("GET {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// What Traefik serves for HTTPRoute `ns/name` right now, read from its API: for each of the
/// route's routers, the weighted backends of its service. A backend with a weight whose Service
/// has no server (no ready endpoint), or that Traefik answers with an error status, is reported
/// with the suffix ` (no servers)`, so it never equals a route's backend; at weight 0 it gets no
/// request, so it may have none (a canary scaled to zero).
pub fn traefik_weights(ns: &str, name: &str) -> anyhow::Result<RuleWeights> {
    let raw = traefik_get("/api/rawdata")?;
    // Router names begin with the normalized kind, namespace, name and Gateway (Traefik's
    // makeRouterName); services are qualified by the provider.
    let norm =
        |s: &str| s.split(|c: char| !c.is_alphanumeric()).filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    let prefix = format!("httproute-{}-{}-gw-{}-{}-ep-", norm(ns), norm(name), norm(&namespace()), norm(&self::name()));
    let services = &raw["services"];
    let backend_of = format!("-svc-{ns}-");
    let mut rules = RuleWeights::new();
    for (router, r) in raw["routers"].as_object().into_iter().flatten() {
        if !router.starts_with(&prefix) {
            continue;
        }
        let service = r["service"].as_str().unwrap_or_default();
        let qualified =
            if service.contains('@') { service.to_string() } else { format!("{service}@kubernetesgateway") };
        let mut backends = Vec::new();
        for s in services[&qualified]["weighted"]["services"].as_array().into_iter().flatten() {
            let child = s["name"].as_str().unwrap_or_default();
            let child = child.split('@').next().unwrap_or_default();
            // <router>-svc-<namespace>-<Service>-<index>
            let svc = child
                .rsplit_once(&backend_of)
                .and_then(|(_, rest)| rest.rsplit_once('-'))
                .map(|(svc, _)| svc.to_string())
                .unwrap_or_else(|| child.to_string());
            let servers = services[&format!("{child}@kubernetesgateway")]["loadBalancer"]["servers"]
                .as_array()
                .map_or(0, Vec::len);
            let failing = s.get("status").is_some_and(|st| !st.is_null());
            let weight = s["weight"].as_u64().unwrap_or(1);
            let label = if weight > 0 && (servers == 0 || failing) { format!("{svc} (no servers)") } else { svc };
            backends.push((label, weight));
        }
        backends.sort();
        rules.insert(backends);
    }
    Ok(rules)
}

/// Waits until HTTPRoute `ns/name` is live as it stands now: its status says the Gateway
/// accepted this generation and resolved its backends, and Traefik serves exactly its rules'
/// backends and weights, every backend with a weight with servers. Returns when that was seen
/// (unix ms): the requests sent from then on meet these rules.
pub async fn wait_route_live(client: &Client, ns: &str, name: &str, timeout: Duration) -> anyhow::Result<u64> {
    let api = routes(client, ns);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let route = api.get(name).await?;
        let want = route_weights(&route);
        let last = if accepted(&route) {
            match traefik_weights(ns, name) {
                Ok(have) if have == want => return Ok(now_ms()),
                Ok(have) => format!("Traefik serves {have:?}, the route says {want:?}"),
                Err(e) => format!("Traefik's API: {e:#}"),
            }
        } else {
            format!("route status: {}", route.data["status"])
        };
        if tokio::time::Instant::now() > deadline {
            bail!("HTTPRoute {ns}/{name} not live after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
