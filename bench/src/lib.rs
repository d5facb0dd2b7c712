//! phaseloop's benchmarks (`make bench`, the `phaseloop-bench` binary) on the local control plane,
//! with the operator running as a host process: the autoscaler's reaction (`scaling`), a fleet of
//! Environments and Releases against the same objects applied directly (`fleet`), the same apps
//! rolled out side by side with Argo Rollouts (`fleet::peers`), and ephemeral Environments coming
//! and going (`soak`). Their smoke runs (`tests/smoke`) are part of the end-to-end suite. They use
//! the e2e crate's helpers (the cluster's client, test namespaces, the audit log's reader).
#![forbid(unsafe_code)]

pub mod fleet;
pub mod scaling;
pub mod soak;
pub mod stats;
