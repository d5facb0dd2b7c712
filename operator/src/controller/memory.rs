//! Bounded memory: the operator's per-object bookkeeping forgets what is gone. Every map keyed by
//! object or app (watch events awaiting a reconcile, retry backoffs, reconcile reports, status
//! writes awaiting their watch event, the versions of applied children, the DORA ledger) and every
//! metric series labelled by namespace and app is swept against the caches every
//! [`SWEEP_EVERY`]: what no cached Release or Environment accounts for is dropped. A sweep rather
//! than deletion events, so that objects deleted while a watch was re-listing go too. The sizes
//! are on `/metrics` (`phaseloop_bookkeeping_entries{map}`), which is how the soak benchmark
//! checks that they end where they started.

use std::{collections::HashSet, sync::Arc, time::Duration};

use super::{Context, environment::namespace_of, fields};

/// How often the bookkeeping is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What the caches hold now: whatever is not in here is gone.
#[derive(Default, Debug)]
pub struct Live {
    /// Object keys (`namespace/name` of Releases, `name` of Environments).
    pub keys: HashSet<String>,
    pub uids: HashSet<String>,
    /// (namespace, app) of every cached Release.
    pub apps: HashSet<(String, String)>,
    /// Namespaces that hold a Release or belong to an Environment.
    pub namespaces: HashSet<String>,
}

impl Live {
    /// From the Release and Environment caches.
    pub fn of(ctx: &Context) -> Live {
        let mut live = Live::default();
        for r in ctx.caches.releases.state() {
            live.keys.insert(fields::key_of(&*r));
            live.uids.extend(r.metadata.uid.clone());
            live.apps.insert((r.ns().to_string(), r.spec.app.clone()));
            live.namespaces.insert(r.ns().to_string());
        }
        for e in ctx.caches.environments.iter().flat_map(|s| s.state()) {
            live.keys.insert(fields::key_of(&*e));
            live.namespaces.insert(namespace_of(&e));
        }
        live
    }
}

/// Drops what `live` does not account for, and reports the sizes left.
pub fn sweep(ctx: &Context, live: &Live) {
    ctx.pending.retain(|key| live.keys.contains(key));
    ctx.retries.retain(|key| live.keys.contains(key));
    ctx.reconciles.retain(|key| live.keys.contains(key));
    ctx.written.expire();
    ctx.caches.children.retain_namespaces(&live.namespaces);
    let (counted, unrestored) = ctx.dora_retain(&live.uids, &live.apps);
    let apps = ctx.metrics.retain_apps(&live.apps);
    let sizes = [
        ("pending", ctx.pending.entries()),
        ("retries", ctx.retries.entries()),
        ("reconciles", ctx.reconciles.entries()),
        ("written", ctx.written.entries()),
        ("applied", ctx.caches.children.applied_len()),
        ("dora_counted", counted),
        ("dora_unrestored", unrestored),
        ("metric_apps", apps),
    ];
    for (map, n) in sizes {
        ctx.metrics.set_bookkeeping(map, n);
    }
}

/// Sweeps every [`SWEEP_EVERY`] until shutdown, once the caches are ready.
pub async fn sweep_forever(ctx: Arc<Context>) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        if super::is_synced(&ctx.caches.releases) && ctx.caches.environments.as_ref().is_none_or(super::is_synced) {
            sweep(&ctx, &Live::of(&ctx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mock_api::{MockApi, context};

    fn release(ns: &str, name: &str, app: &str) -> crate::api::Release {
        let mut r = crate::fixtures::release(name, serde_json::json!({"app": app}));
        r.metadata.namespace = Some(ns.into());
        r.metadata.uid = Some(format!("uid-{ns}-{name}"));
        r
    }

    #[tokio::test]
    async fn what_the_caches_no_longer_hold_is_forgotten_and_what_they_hold_is_kept() {
        let kept = release("prod", "web-1", "web");
        let ctx = context(&MockApi::default(), std::slice::from_ref(&kept), None);
        // Bookkeeping of `kept` and of `gone`, a Release of a deleted preview namespace.
        for key in ["prod/web-1", "pr-7/web-3"] {
            ctx.pending.mark(key.into());
            ctx.reconciles.finished("release", key, Some("1"), None);
        }
        ctx.metrics.observe_scaling("prod", "web", Some(1.0), 1, 2);
        ctx.metrics.observe_scaling("pr-7", "web", Some(1.0), 1, 2);
        ctx.metrics.touch_dora("pr-7", "web");
        let live = Live::of(&ctx);
        assert_eq!(live.apps, HashSet::from([("prod".to_string(), "web".to_string())]));
        sweep(&ctx, &live);
        assert_eq!((ctx.pending.entries(), ctx.reconciles.entries()), (1, 1));
        let text = ctx.metrics.render();
        assert!(text.contains(r#"namespace="prod""#), "the live app keeps its series");
        assert!(!text.contains(r#"namespace="pr-7""#), "{text}");
        assert!(text.contains(r#"phaseloop_bookkeeping_entries{map="metric_apps"} 1"#), "{text}");
        // Once its Release goes too, nothing is left.
        sweep(&ctx, &Live::default());
        assert_eq!((ctx.pending.entries(), ctx.reconciles.entries()), (0, 0));
        assert!(!ctx.metrics.render().contains(r#"namespace="prod""#));
    }
}
