//! What the cluster serves: pods and Services of the benchmark, watched by the harness, and
//! whether an app serves a version fully.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::time::Instant;

use super::LABEL;

/// What the harness keeps of a pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub ready: bool,
    pub terminating: bool,
}

impl PodView {
    fn of(p: &Pod) -> Self {
        PodView {
            labels: p.labels().clone(),
            image: p.spec.as_ref().and_then(|s| s.containers.first()).and_then(|c| c.image.clone()).unwrap_or_default(),
            ready: p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            terminating: p.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// Whether an app serves `image` fully: the pods its Service selects that can take traffic
/// (ready, not terminating) are at least `replicas`, and all run `image`.
pub fn serves<'a>(
    selector: &BTreeMap<String, String>,
    pods: impl IntoIterator<Item = &'a PodView>,
    image: &str,
    replicas: i32,
) -> bool {
    if selector.is_empty() {
        return false;
    }
    let mut on = 0;
    for p in pods {
        let selected = selector.iter().all(|(k, v)| p.labels.get(k) == Some(v));
        if !selected || !p.ready || p.terminating {
            continue;
        }
        if p.image != image {
            return false;
        }
        on += 1;
    }
    on >= replicas
}

pub(super) type AppKey = (String, String); // namespace, app

#[derive(Default)]
struct Seen {
    /// Pods by app, then by name.
    pods: HashMap<AppKey, HashMap<String, PodView>>,
    /// Service selectors by (namespace, name = app).
    services: HashMap<AppKey, BTreeMap<String, String>>,
}

/// Pods and Services of the benchmark's namespaces, kept current by two watches.
#[derive(Clone, Default)]
pub struct Observer(Arc<Mutex<Seen>>);

impl Observer {
    /// Starts the watches (they run until the process ends).
    pub fn start(client: &Client) -> Self {
        let me = Observer::default();
        let pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(&format!("{LABEL}=pod")))
            .default_backoff();
        let state = me.0.clone();
        tokio::spawn(async move {
            let mut pods = std::pin::pin!(pods);
            let mut init: Option<HashMap<AppKey, HashMap<String, PodView>>> = None;
            while let Some(ev) = pods.next().await {
                let Ok(ev) = ev else { continue };
                let key = |p: &Pod| {
                    (
                        p.namespace().unwrap_or_default(),
                        p.labels().get("app.kubernetes.io/name").cloned().unwrap_or_default(),
                    )
                };
                let mut s = state.lock().expect("observer lock");
                match ev {
                    watcher::Event::Init => init = Some(HashMap::new()),
                    watcher::Event::InitApply(p) => {
                        if let Some(i) = init.as_mut() {
                            i.entry(key(&p)).or_default().insert(p.name_any(), PodView::of(&p));
                        }
                    }
                    watcher::Event::InitDone => s.pods = init.take().unwrap_or_default(),
                    watcher::Event::Apply(p) => {
                        s.pods.entry(key(&p)).or_default().insert(p.name_any(), PodView::of(&p));
                    }
                    watcher::Event::Delete(p) => {
                        if let Some(m) = s.pods.get_mut(&key(&p)) {
                            m.remove(&p.name_any());
                        }
                    }
                }
            }
        });
        let services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default()).default_backoff();
        let state = me.0.clone();
        tokio::spawn(async move {
            let mut services = std::pin::pin!(services);
            let mut init: Option<HashMap<AppKey, BTreeMap<String, String>>> = None;
            let ours = |s: &Service| s.namespace().is_some_and(|n| n.starts_with("peers-"));
            let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
            let selector = |s: &Service| s.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
            while let Some(ev) = services.next().await {
                let Ok(ev) = ev else { continue };
                let mut st = state.lock().expect("observer lock");
                match ev {
                    watcher::Event::Init => init = Some(HashMap::new()),
                    watcher::Event::InitApply(s) if ours(&s) => {
                        if let Some(i) = init.as_mut() {
                            i.insert(key(&s), selector(&s));
                        }
                    }
                    watcher::Event::InitDone => st.services = init.take().unwrap_or_default(),
                    watcher::Event::Apply(s) if ours(&s) => {
                        st.services.insert(key(&s), selector(&s));
                    }
                    watcher::Event::Delete(s) => {
                        st.services.remove(&key(&s));
                    }
                    _ => {}
                }
            }
        });
        me
    }

    /// Apps of `apps` that serve `image` fully now.
    fn serving(&self, apps: &[AppKey], image: &str, replicas: i32) -> Vec<bool> {
        let s = self.0.lock().expect("observer lock");
        let none = HashMap::new();
        apps.iter()
            .map(|k| {
                let Some(sel) = s.services.get(k) else { return false };
                serves(sel, s.pods.get(k).unwrap_or(&none).values(), image, replicas)
            })
            .collect()
    }

    /// Pods of the benchmark present (any state).
    pub(super) fn pods(&self) -> usize {
        self.0.lock().expect("observer lock").pods.values().map(HashMap::len).sum()
    }

    /// Polls every 100ms until every app serves `image`; returns when, and when each app did
    /// (an app that stops serving it is counted again when it serves it again).
    pub(super) async fn wait_all(
        &self,
        apps: &[AppKey],
        image: &str,
        replicas: i32,
        deadline: Instant,
    ) -> anyhow::Result<(Instant, Vec<Instant>)> {
        let mut since: Vec<Option<Instant>> = vec![None; apps.len()];
        loop {
            let now = Instant::now();
            for (at, ok) in since.iter_mut().zip(self.serving(apps, image, replicas)) {
                *at = if ok { at.or(Some(now)) } else { None };
            }
            if since.iter().all(Option::is_some) {
                return Ok((now, since.into_iter().flatten().collect()));
            }
            if now > deadline {
                let left = since.iter().filter(|s| s.is_none()).count();
                bail!("{left} of {} apps not serving {image} by the deadline", apps.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(version: &str, ready: bool, terminating: bool, extra: &[(&str, &str)]) -> PodView {
        let mut labels = BTreeMap::from([("app.kubernetes.io/name".to_string(), "app-00001".to_string())]);
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        PodView { labels, image: format!("bench:{version}"), ready, terminating }
    }

    #[test]
    fn an_app_serves_a_version_when_every_selected_serving_pod_runs_it() {
        let by_name = BTreeMap::from([("app.kubernetes.io/name".to_string(), "app-00001".to_string())]);
        let v2 = || (0..4).map(|_| pod("v2", true, false, &[])).collect::<Vec<_>>();
        assert!(serves(&by_name, &v2(), "bench:v2", 4));
        // A v1 pod still selected and ready: not yet.
        let mut mixed = v2();
        mixed.push(pod("v1", true, false, &[]));
        assert!(!serves(&by_name, &mixed, "bench:v2", 4));
        // Terminating or unready v1 pods take no traffic.
        let mut leaving = v2();
        leaving.push(pod("v1", true, true, &[]));
        leaving.push(pod("v1", false, false, &[]));
        assert!(serves(&by_name, &leaving, "bench:v2", 4));
        // Too few ready v2 pods.
        assert!(!serves(&by_name, &v2()[..3], "bench:v2", 4));
        // A v1 pod the Service no longer selects (phaseloop's version label) does not count.
        let by_version = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "app-00001".to_string()),
            ("app.kubernetes.io/version".to_string(), "v2".to_string()),
        ]);
        let mut warm: Vec<PodView> =
            (0..4).map(|_| pod("v2", true, false, &[("app.kubernetes.io/version", "v2")])).collect();
        warm.push(pod("v1", true, false, &[("app.kubernetes.io/version", "v1")]));
        assert!(serves(&by_version, &warm, "bench:v2", 4));
        assert!(!serves(&BTreeMap::new(), &warm, "bench:v2", 4), "no Service: nothing served");
    }
}
