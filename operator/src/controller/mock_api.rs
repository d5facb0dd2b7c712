//! A scripted API server for unit tests of the reconcilers' error paths: a `kube::Client` whose
//! requests go to rules (`method`, a path fragment → status code and body) instead of a network,
//! and a log of every request to assert on afterwards.
//!
//! The end-to-end suite runs the real API server; this is for what it will not do on demand (a
//! conflict on the third request, a quota refusal, a namespace that is terminating). Rules, not
//! a fixed request sequence (as `tower-test` handles give): a test states how the server behaves
//! and then what the reconcile asked of it, so it does not break when an unrelated read is added.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::{Client, client::Body};
use serde_json::{Value, json};

use super::{Context, caches};
use crate::api::{Environment, Release};

/// One request the client sent.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl Recorded {
    /// Whether this is a `method` request whose path contains `fragment`.
    pub fn is(&self, method: &str, fragment: &str) -> bool {
        self.method == method && self.path().contains(fragment)
    }

    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

type Respond = Arc<dyn Fn(&Recorded) -> (u16, Value) + Send + Sync>;

/// The scripted server: the first rule matching a request answers it; unmatched requests get 404.
#[derive(Clone, Default)]
pub struct MockApi {
    rules: Arc<Mutex<Vec<(String, String, Respond)>>>,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl MockApi {
    /// Answers `method` requests whose path contains `fragment` with `respond`.
    pub fn on(
        &self,
        method: &str,
        fragment: &str,
        respond: impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static,
    ) {
        self.rules.lock().unwrap().push((method.into(), fragment.into(), Arc::new(respond)));
    }

    /// Answers with `stored` with the object sent laid over it (a patch the server took as it
    /// is), with a new resourceVersion, as the API server returns what it stored.
    pub fn accept(&self, method: &str, fragment: &str, stored: Value) {
        self.on(method, fragment, move |r| {
            let mut object = stored.clone();
            merge(&mut object, r.body.clone());
            object["metadata"]["resourceVersion"] = json!("2");
            (200, object)
        });
    }

    /// A client of this server.
    pub fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.answer(req).await) }
        });
        Client::new(service, "default")
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    /// The requests that wrote something (anything but GET and LIST).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let recorded = Recorded { method, uri, body };
        self.log.lock().unwrap().push(recorded.clone());
        let rule = self.rules.lock().unwrap().iter().find(|(m, f, _)| recorded.is(m, f)).map(|(_, _, r)| r.clone());
        let (code, body) = match rule {
            Some(respond) => respond(&recorded),
            None => status(404, "NotFound", &format!("{} not found", recorded.path()), &[]),
        };
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }
}

/// A `metav1.Status` failure as the API server sends it, with `causes` (reason, message).
pub fn status(code: u16, reason: &str, message: &str, causes: &[(&str, &str)]) -> (u16, Value) {
    let causes: Vec<Value> = causes.iter().map(|(r, m)| json!({"reason": r, "message": m})).collect();
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
        "reason": reason, "message": message, "details": {"causes": causes}});
    (code, body)
}

/// A Context on `api`'s client in single-namespace mode (`prod`) with `releases` cached and every
/// cache synced, as after a start; its Environment cache too when `environments` is given.
pub fn context(api: &MockApi, releases: &[Release], environments: Option<&[Environment]>) -> Arc<Context> {
    context_with(api, releases, environments, None)
}

/// [`context`] with a Prometheus client.
pub fn context_with(
    api: &MockApi,
    releases: &[Release],
    environments: Option<&[Environment]>,
    prometheus: Option<crate::prometheus::Prometheus>,
) -> Arc<Context> {
    use kube::runtime::watcher::Event;
    let (caches, mut w) = caches::new(environments.is_some(), false);
    let config =
        super::Config { watch_namespace: environments.is_none().then(|| "prod".to_string()), ..Default::default() };
    w.release.releases.apply_watcher_event(&Event::Init);
    for r in releases {
        w.release.releases.apply_watcher_event(&Event::InitApply(r.clone()));
    }
    w.release.releases.apply_watcher_event(&Event::InitDone);
    synced(&mut w.release.deployments);
    synced(&mut w.release.autoscalers);
    synced(&mut w.release.deployment_meta);
    synced(&mut w.release.service_meta);
    if let (Some(envs), Some(ew)) = (environments, w.environment.as_mut()) {
        ew.environments.apply_watcher_event(&Event::Init);
        for e in envs {
            ew.environments.apply_watcher_event(&Event::InitApply(e.clone()));
        }
        ew.environments.apply_watcher_event(&Event::InitDone);
        synced(&mut ew.namespaces);
        synced(&mut ew.statefulsets);
        synced(&mut ew.jobs);
        synced(&mut ew.quotas);
        synced(&mut ew.limit_ranges);
        synced(&mut ew.network_policies);
    }
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The writers go out of scope: a dropped writer keeps its store as it is.
    // The scripted server's clock agrees with the tests' (a real one says so in every response).
    metrics.observe_clock_skew(jiff::SignedDuration::ZERO);
    Arc::new(Context::new(api.client(), metrics, config, shutdown, caches, prometheus))
}

/// An empty cache, listed.
fn synced<K>(writer: &mut kube::runtime::reflector::store::Writer<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
    writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
}

/// `overlay` laid over `base`: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}
