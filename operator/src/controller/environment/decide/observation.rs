//! What a reconcile observed, the whole input of [`super::decide`]: gathered by
//! `reconcile/observe.rs` from the caches and the API server before anything is written.

use std::collections::HashMap;

use jiff::SignedDuration;
use k8s_openapi::{api::batch::v1::Job, apimachinery::pkg::apis::meta::v1::Time};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::branch::Chain;
use crate::{
    api::{Environment, Release},
    controller::Config,
};

/// The namespace an Environment owns, as found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NamespaceSeen {
    /// None of that name.
    #[default]
    Absent,
    /// This Environment's (its label says so); `deleting`: being deleted.
    Ours { deleting: bool },
    /// Someone else's: never touched, never deleted.
    Foreign,
}

/// A kind an infrastructure object names, as discovery found it.
#[derive(Clone, Debug, PartialEq)]
pub struct KindSeen {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// The kinds infrastructure objects name (in the spec and in status), by discovery; `Err`: why
/// unknown.
pub type Kinds = HashMap<GroupVersionKind, Result<KindSeen, String>>;
/// Infrastructure objects as they are in the namespace, by kind and name (absent: not there, or
/// of a kind not read).
pub type Objects = HashMap<(String, String), DynamicObject>;

/// Everything [`super::decide`] looks at.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub env: &'a Environment,
    pub now: Time,
    /// This operator's clock minus the API server's, as last measured from the `Date` header of
    /// its responses (`None`: never measured).
    pub skew: Option<SignedDuration>,
    pub config: &'a Config,
    /// The Environments `spec.from` leads to, parent first.
    pub chain: Chain,
    pub namespace: NamespaceSeen,
    /// The Releases of the namespace.
    pub releases: &'a [Release],
    /// The Releases of the parent's namespace, for a branch.
    pub parent_releases: &'a [Release],
    /// With `promotion.mode: Automatic`, the Releases of `promotion.from`'s namespace (`None`: that
    /// Environment does not exist, or the mode is manual).
    pub upstream_releases: Option<&'a [Release]>,
    pub kinds: &'a Kinds,
    pub objects: &'a Objects,
    /// The seed Job, when the seed has not succeeded yet and the Job exists.
    pub seed_job: Option<&'a Job>,
}

impl Observation<'_> {
    /// The infrastructure object `kind`/`name` as it is in the namespace.
    pub fn object(&self, kind: &str, name: &str) -> Option<&DynamicObject> {
        self.objects.get(&(kind.to_string(), name.to_string()))
    }
}
