//! Observing an Environment: everything its decision looks at, read before anything is written.
//! Its Releases, the Environments above it and their Releases come from the caches; its namespace
//! from the cache of phaseloop's namespaces (one that is not there is looked up: it may be
//! someone else's); the infrastructure objects (of any kind, so without a cache), the kinds they
//! name and the seed Job from the API server; the clock skew from the client's measurement.

use std::collections::HashSet;

use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Namespace},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, GroupVersionKind, ListParams, TypeMeta},
    discovery::{Scope, pinned_kind},
    runtime::reflector::ObjectRef,
};

use crate::{
    api::{Environment, EnvironmentSpec, PromotionMode, Release, label},
    controller::{
        Config, Context, Error,
        environment::{
            FINALIZER, allow_list,
            decide::{self, Chain, KindSeen, Kinds, NamespaceSeen, Objects, Observation},
            desired, namespace_of,
        },
        error::Context as _,
    },
};

/// What a reconcile observed, owned; [`Seen::observation`] lends it to the decision.
pub struct Seen {
    env: Environment,
    now: Time,
    skew: Option<jiff::SignedDuration>,
    chain: Chain,
    namespace: NamespaceSeen,
    releases: Vec<Release>,
    parent_releases: Vec<Release>,
    upstream_releases: Option<Vec<Release>>,
    kinds: Kinds,
    objects: Objects,
    seed_job: Option<Job>,
}

impl Seen {
    pub fn observation<'a>(&'a self, config: &'a Config) -> Observation<'a> {
        Observation {
            env: &self.env,
            now: self.now.clone(),
            skew: self.skew,
            config,
            chain: self.chain.clone(),
            namespace: self.namespace,
            releases: &self.releases,
            parent_releases: &self.parent_releases,
            upstream_releases: self.upstream_releases.as_deref(),
            kinds: &self.kinds,
            objects: &self.objects,
            seed_job: self.seed_job.as_ref(),
        }
    }
}

/// Observes `env` (see the module documentation). Before the finalizer is on nothing is read;
/// while the Environment is deleted, only its namespace.
pub async fn environment(ctx: &Context, env: &Environment) -> Result<Seen, Error> {
    let mut seen = Seen {
        env: env.clone(),
        now: Time(crate::controller::now()),
        skew: ctx.metrics.clock_skew(),
        chain: Chain::default(),
        namespace: NamespaceSeen::Absent,
        releases: vec![],
        parent_releases: vec![],
        upstream_releases: None,
        kinds: Kinds::new(),
        objects: Objects::new(),
        seed_job: None,
    };
    if !env.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(seen);
    }
    let ns = namespace_of(env);
    let deleting = env.metadata.deletion_timestamp.is_some();
    seen.namespace = namespace(ctx, env, &ns, deleting).await.context("observe", || format!("namespace {ns}"))?;
    if deleting {
        return Ok(seen);
    }
    let name = env.name_any();
    seen.chain = chain(ctx, env).await.context("observe", || format!("the parents of Environment {name}"))?;
    seen.releases = releases_in(ctx, &ns).await.context("observe", || format!("the Releases of {ns}"))?;
    if let Some(parent) = seen.chain.ancestors.first() {
        let theirs = namespace_of(parent);
        seen.parent_releases =
            releases_in(ctx, &theirs).await.context("observe", || format!("the Releases of {theirs}"))?;
    }
    if let Some(from) = automatic_from(env) {
        seen.upstream_releases = match environment_named(ctx, from).await? {
            Some(up) => {
                let theirs = namespace_of(&up);
                Some(releases_in(ctx, &theirs).await.context("observe", || format!("the Releases of {theirs}"))?)
            }
            None => None,
        };
    }
    // Nothing is read in a namespace that is someone else's: nothing will be done there.
    let Some(spec) = decide::spec_to_provision(env, &seen.chain).filter(|_| seen.namespace != NamespaceSeen::Foreign)
    else {
        return Ok(seen);
    };
    (seen.kinds, seen.objects) = infrastructure(ctx, &ns, env, &spec).await;
    if spec.seed.is_some() && !env.status.as_ref().is_some_and(|s| s.seeded) {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        seen.seed_job = jobs
            .get_opt(desired::SEED_JOB_NAME)
            .await
            .context("observe", || format!("the seed Job {ns}/{}", desired::SEED_JOB_NAME))?;
    }
    Ok(seen)
}

/// The namespace `ns`: this Environment's when the cache of phaseloop's namespaces has it with its
/// label; anything else (a foreign namespace is not in that cache) is looked up. While deleting,
/// always looked up: its deletion must be seen as it happens.
async fn namespace(ctx: &Context, env: &Environment, ns: &str, deleting: bool) -> Result<NamespaceSeen, Error> {
    let mine =
        |labels: &std::collections::BTreeMap<String, String>| labels.get(label::ENVIRONMENT) == Some(&env.name_any());
    if !deleting {
        ctx.caches.children.synced::<Namespace>().await;
        let cached = ctx.caches.children.get::<Namespace>(None, ns).ok().flatten();
        if let Some(m) = cached.filter(|m| mine(m.labels())) {
            return Ok(NamespaceSeen::Ours { deleting: m.metadata.deletion_timestamp.is_some() });
        }
    }
    Ok(match Api::<Namespace>::all(ctx.client.clone()).get_opt(ns).await? {
        None => NamespaceSeen::Absent,
        Some(n) if mine(n.labels()) => NamespaceSeen::Ours { deleting: n.metadata.deletion_timestamp.is_some() },
        Some(_) => NamespaceSeen::Foreign,
    })
}

/// The Environments above `env`, from the Environment cache (with this process's own status
/// writes laid over it); without a cache, from the API server, one GET each.
async fn chain(ctx: &Context, env: &Environment) -> Result<Chain, Error> {
    if env.spec.from.is_none() {
        return Ok(Chain::default());
    }
    if let Some(store) = crate::controller::synced_store(ctx.caches.environments.as_ref()).await {
        let lookup = |name: &str| store.get(&ObjectRef::new(name)).map(|e| (*ctx.written.freshest(e)).clone());
        return Ok(decide::walk(env, lookup));
    }
    let api: Api<Environment> = Api::all(ctx.client.clone());
    let mut found = std::collections::HashMap::new();
    let mut next = env.spec.from.clone();
    while let Some(name) = next.filter(|n| *n != env.name_any() && !found.contains_key(n)) {
        if found.len() > decide::MAX_DEPTH {
            break;
        }
        let parent = api.get_opt(&name).await?;
        next = parent.as_ref().and_then(|p| p.spec.from.clone());
        found.insert(name, parent);
    }
    Ok(decide::walk(env, |name| found.get(name).cloned().flatten()))
}

/// `promotion.from` of an Environment whose promotion is automatic.
pub fn automatic_from(env: &Environment) -> Option<&str> {
    let p = env.spec.promotion.as_ref().filter(|p| p.mode == PromotionMode::Automatic)?;
    p.from.as_deref()
}

/// The Environment `name`, from the Environment cache once synced, else read.
async fn environment_named(ctx: &Context, name: &str) -> Result<Option<Environment>, Error> {
    if let Some(store) = crate::controller::synced_store(ctx.caches.environments.as_ref()).await {
        return Ok(store.get(&ObjectRef::new(name)).map(|e| (*e).clone()));
    }
    Ok(Api::<Environment>::all(ctx.client.clone()).get_opt(name).await?)
}

/// The Releases of `ns`: from the Release controller's cache once it is synced, else listed.
async fn releases_in(ctx: &Context, ns: &str) -> Result<Vec<Release>, Error> {
    if let Some(store) = crate::controller::synced_store(Some(&ctx.caches.releases)).await {
        let mut releases: Vec<Release> = store
            .state()
            .into_iter()
            .filter(|r| r.namespace().as_deref() == Some(ns))
            .map(|r| (*ctx.written.freshest(r)).clone())
            .collect();
        releases.sort_by_key(|r| r.name_any());
        return Ok(releases);
    }
    Ok(Api::<Release>::namespaced(ctx.client.clone(), ns).list(&ListParams::default()).await?.items)
}

/// The kinds the infrastructure names (in `spec` and in status: pruning needs them too), each
/// looked up once, and the declared objects of the namespaced kinds the allow-list admits, as they
/// are in `ns`. A read that fails reads as absent: applying reports the problem.
async fn infrastructure(ctx: &Context, ns: &str, env: &Environment, spec: &EnvironmentSpec) -> (Kinds, Objects) {
    let declared: Vec<(GroupVersionKind, String)> = spec
        .infrastructure
        .iter()
        .flat_map(|c| &c.objects)
        .filter_map(|o| {
            let types: TypeMeta = serde_json::from_value(o.0.clone()).ok()?;
            let gvk = GroupVersionKind::try_from(&types).ok()?;
            Some((gvk, o.0["metadata"]["name"].as_str().unwrap_or_default().to_string()))
        })
        .collect();
    let stored = env.status.iter().flat_map(|s| &s.components).flat_map(|c| &c.objects).filter_map(|o| {
        let types = TypeMeta { api_version: o.api_version.clone(), kind: o.kind.clone() };
        GroupVersionKind::try_from(&types).ok()
    });
    let wanted: HashSet<GroupVersionKind> = declared.iter().map(|(g, _)| g.clone()).chain(stored).collect();
    let mut kinds = Kinds::new();
    for gvk in wanted {
        let found = match pinned_kind(&ctx.client, &gvk).await {
            Ok((resource, caps)) => Ok(KindSeen { resource, namespaced: caps.scope == Scope::Namespaced }),
            Err(e) => Err(format!("unknown kind {}/{} {}: {e}", gvk.group, gvk.version, gvk.kind)),
        };
        kinds.insert(gvk, found);
    }
    let mut objects = Objects::new();
    for (gvk, name) in declared.into_iter().filter(|(_, n)| !n.is_empty()) {
        let Some(Ok(kind)) = kinds.get(&gvk) else { continue };
        let r = &kind.resource;
        let allowed = allow_list::allowed(&ctx.config.infrastructure_kinds, &r.group, &r.plural, &gvk.kind).is_ok();
        if !kind.namespaced || !allowed {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, r);
        if let Ok(Some(live)) = api.get_opt(&name).await {
            objects.insert((gvk.kind.clone(), name), live);
        }
    }
    (kinds, objects)
}
