//! The end-to-end tests: one test binary, one module per area (one link instead of one per
//! file). `e2e/scripts/run-e2e.sh` runs them in phases by module filter: the README tour
//! (`tour::`) first, then the kwok suite (every other module but `real_node::` and
//! `uninstall::`), then the real node's scenarios (`real_node::`) and last `uninstall::`.
//! `E2E_TEST=<module>` runs one module.
//!
//! The kwok suite's tests share one operator, one API server and one Prometheus, and run on one
//! thread pool: each holds [`phaseloop_e2e::shared`] while it runs, and a test that stops,
//! restarts, kills or reconfigures one of them, or deletes what other tests left, holds
//! [`phaseloop_e2e::alone`] and runs with no other test beside it.

mod bad_input;
mod crash_campaign;
mod deploy_invariants;
mod environments;
mod examples;
mod faults;
mod foundation;
mod installs;
mod leader_election;
mod monitor;
mod operate;
mod packaging;
mod pipelines;
mod prometheus_outage;
mod real_node;
mod releases;
mod routing;
mod tour;
mod trust;
mod uninstall;
