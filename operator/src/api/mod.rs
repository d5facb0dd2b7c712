//! The `phaseloop.dev/v1alpha1` API: `Environment` and `Release`.
//!
//! Doc comments on these types become the `kubectl explain` text and the CRD field descriptions, so
//! they are written for users. Validation that the API server can do (bounds, patterns, CEL rules)
//! lives on the types; [`crd`] turns them into the YAML in `crds/`, beside the admission policies of
//! [`admission`] (who may approve, who writes status, what production and infrastructure allow).

pub mod admission;
pub mod common;
pub mod crd;
pub mod environment;
pub mod reason;
pub mod reference;
pub mod release;

pub use common::*;
pub use environment::*;
pub use reason::Reason;
pub use release::*;

/// API group of every phaseloop kind.
pub const GROUP: &str = "phaseloop.dev";
/// API version served and stored.
pub const VERSION: &str = "v1alpha1";
