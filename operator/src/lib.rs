//! phaseloop: a Kubernetes operator for the Ops half of the DevOps loop — Test, Release, Deploy,
//! Operate, Monitor — driven by two custom resources, `Environment` and `Release`.
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod clock;
pub mod controller;
pub mod dora;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod leader;
pub mod metrics;
pub mod prometheus;
pub mod promql;
pub mod scaling;
pub mod server;
pub mod uninstall;
