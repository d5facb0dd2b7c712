//! The caches the controllers read, and their writers, built together once by the process before
//! any controller starts: each writer is handed to the one watch that fills its cache
//! ([`Writers`]), so which watch feeds which cache is plain in the code that wires them, and a
//! cache without a watch cannot exist.

use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::Job,
    core::v1::{LimitRange, Namespace, ResourceQuota, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    api::DynamicObject,
    runtime::reflector::{self, Store, store::Writer},
};

use super::{children::Children, fields::Meta};
use crate::api::{Environment, Release};

/// What the controllers read instead of asking the API server.
pub struct Caches {
    /// The Release controller's: every Release in scope.
    pub releases: Store<Release>,
    /// The Environment controller's (`None` in single-namespace mode, which runs none).
    pub environments: Option<Store<Environment>>,
    /// The Deployments phaseloop manages, without their pod templates (for their status).
    pub deployments: Store<Deployment>,
    /// Every HorizontalPodAutoscaler, to find one targeting a phaseloop Deployment.
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// Metadata of owned children, for applies that write only what changed.
    pub children: Children,
    /// Gateway API HTTPRoutes (`None` unless the operator runs with `--gateway-api`).
    pub routes: Option<Store<DynamicObject>>,
}

/// The writers of [`Caches`], each for the watch that fills its cache.
pub struct Writers {
    pub release: ReleaseWriters,
    /// `None` in single-namespace mode.
    pub environment: Option<EnvironmentWriters>,
}

/// The caches the Release controller's watches fill.
pub struct ReleaseWriters {
    pub releases: Writer<Release>,
    pub deployments: Writer<Deployment>,
    pub autoscalers: Writer<HorizontalPodAutoscaler>,
    pub deployment_meta: Writer<Meta<Deployment>>,
    pub service_meta: Writer<Meta<Service>>,
    pub routes: Option<Writer<DynamicObject>>,
}

/// The caches the Environment controller's watches fill.
pub struct EnvironmentWriters {
    pub environments: Writer<Environment>,
    pub namespaces: Writer<Meta<Namespace>>,
    pub statefulsets: Writer<Meta<StatefulSet>>,
    pub jobs: Writer<Meta<Job>>,
    pub quotas: Writer<Meta<ResourceQuota>>,
    pub limit_ranges: Writer<Meta<LimitRange>>,
    pub network_policies: Writer<Meta<NetworkPolicy>>,
}

/// Every cache, empty, with its writer; `environments`: whether the Environment controller runs;
/// `routes`: whether Gateway API routes are read.
pub fn new(environments: bool, routes: bool) -> (Caches, Writers) {
    let routes_w = routes.then(|| Writer::new(crate::controller::release::traffic::gateway::api_resource()));
    let routes = routes_w.as_ref().map(Writer::as_reader);
    let mut children = Children::default();
    let (releases, releases_w) = reflector::store();
    let (deployments, deployments_w) = reflector::store();
    let (autoscalers, autoscalers_w) = reflector::store();
    let release = ReleaseWriters {
        releases: releases_w,
        deployments: deployments_w,
        autoscalers: autoscalers_w,
        deployment_meta: children.cache::<Deployment>(),
        service_meta: children.cache::<Service>(),
        routes: routes_w,
    };
    let (env_store, environment) = if environments {
        let (store, writer) = reflector::store();
        let writers = EnvironmentWriters {
            environments: writer,
            namespaces: children.cache(),
            statefulsets: children.cache(),
            jobs: children.cache(),
            quotas: children.cache(),
            limit_ranges: children.cache(),
            network_policies: children.cache(),
        };
        (Some(store), Some(writers))
    } else {
        (None, None)
    };
    let caches = Caches { releases, environments: env_store, deployments, autoscalers, children, routes };
    (caches, Writers { release, environment })
}
