//! The watch streams the controllers run on, built for memory: cached objects lose their managed
//! fields, owned children and trigger-only watches are metadata-only, pages are bounded (the
//! `watcher::Config` carries `Config::page_size`), and every event is stamped for the
//! watch-to-reconcile latency.

use std::{fmt::Debug, sync::Arc};

use futures::{Stream, StreamExt, TryStreamExt, stream::BoxStream};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;

pub use super::fields::{Meta, lean};
use super::{Context, fields};

/// Full objects of `K` into the controller's cache, each event stamped as pending for the object
/// and acknowledging this process's status write it carries.
pub fn objects<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    ctx: Arc<Context>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(api, config).default_backoff().modify(lean).reflect(writer).touched_objects().inspect_ok(move |o| {
        ctx.written.acknowledged(o);
        ctx.pending.mark(fields::key_of(o))
    })
}

/// Metadata of `K` (into a children cache when `writer` is given), lean. An `Api` of
/// `PartialObjectMeta` makes metadata-only LIST and WATCH requests.
pub fn metadata<K>(
    api: Api<Meta<K>>,
    config: watcher::Config,
    writer: Option<Writer<Meta<K>>>,
) -> BoxStream<'static, Result<Meta<K>, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let events = watcher(api, config).default_backoff().modify(lean);
    match writer {
        Some(w) => events.reflect(w).touched_objects().boxed(),
        None => events.touched_objects().boxed(),
    }
}

/// Marks each object a trigger maps to as pending, for the watch-to-reconcile latency.
pub fn marked<P>(ctx: &Context, refs: Vec<ObjectRef<P>>) -> Vec<ObjectRef<P>>
where
    P: Resource<DynamicType = ()>,
{
    for r in &refs {
        ctx.pending.mark(fields::key(r.namespace.as_deref(), &r.name));
    }
    refs
}

/// Controller settings shared by both controllers.
pub fn controller_config(ctx: &Context) -> kube::runtime::controller::Config {
    // Bounded concurrency bounds the memory of a re-list, when every object is reconciled at once.
    kube::runtime::controller::Config::default().concurrency(ctx.config.concurrency)
}

/// The controlling owner of `meta` of kind `kind` (`phaseloop.dev` group).
pub fn owner(meta: &kube::api::ObjectMeta, kind: &str) -> Option<(String, Option<String>)> {
    let o = meta
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind && o.api_version.starts_with("phaseloop.dev/"))?;
    Some((o.name.clone(), meta.namespace.clone()))
}

/// All objects of `K`, or those of `namespace` (single-namespace mode).
pub fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
