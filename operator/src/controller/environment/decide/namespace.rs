//! The namespace and what phaseloop keeps in it besides the infrastructure: the Pod Security
//! level it enforces, the quota, the container defaults and the isolation.

use super::{Draft, Effect};
use crate::{
    api::{EnvironmentSpec, Isolation},
    controller::environment::desired,
};

/// The namespace `ns` and its quota, defaults and isolation as `spec` (the effective spec) asks.
pub(super) fn provision(d: &mut Draft<'_>, spec: &EnvironmentSpec, ns: &str) {
    let env = d.o.env;
    // Never looser than the operator allows, even when inherited from a parent.
    let level = spec.pod_security.unwrap_or_default().min(d.o.config.max_pod_security);
    let quota = spec.quota.as_ref().map(|q| Box::new(desired::resource_quota(env, ns, q)));
    let defaults = spec.defaults.as_ref().map(|q| Box::new(desired::limit_range(env, ns, q)));
    let isolation = (spec.isolation == Isolation::Namespace)
        .then(|| Box::new(desired::network_policy(env, ns, &d.o.config.monitoring_namespace)));
    d.effects.extend([
        Effect::Namespace(Box::new(desired::namespace(env, ns, level))),
        Effect::Quota(quota),
        Effect::Defaults(defaults),
        Effect::Isolation(isolation),
    ]);
}
