//! The Environment controller: keeps a namespace and everything in it that is not the app itself
//! true to the Environment's spec, expires it at its ttl, puts it to sleep when idle, and deletes
//! it (namespace first) when the Environment goes.
//!
//! A reconcile observes, decides, then acts (`reconcile/`). [`decide::decide`] is the whole
//! decision, a pure function of what was observed; its parts, pure too: [`validate`](mod@validate),
//! [`desired`] (the objects built), [`infrastructure`] (component objects and their readiness),
//! [`allow_list`] (the kinds infrastructure may hold).

pub mod allow_list;
pub mod decide;
pub mod desired;
pub mod infrastructure;
pub mod pipeline;
mod reconcile;
pub mod validate;

use kube::ResourceExt;

pub use reconcile::{controller, run};
pub use validate::{is_quantity, pod_security_problem, validate};

use crate::api::Environment;

/// Name of this controller in metrics and logs.
pub const NAME: &str = "environment";
/// Finalizer that makes deletion wait for the namespace to be gone.
pub const FINALIZER: &str = "phaseloop.dev/environment";
/// Annotation with an RFC 3339 time that moves `expiresAt` later (`kubectl phaseloop env extend`).
pub const EXTEND_ANNOTATION: &str = crate::api::annotation::EXPIRES_AT;

/// The namespace an Environment owns.
pub fn namespace_of(env: &Environment) -> String {
    env.spec.namespace.clone().unwrap_or_else(|| env.name_any())
}
