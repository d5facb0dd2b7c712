//! The benchmarks' smoke runs, part of the end-to-end suite (`e2e/scripts/run-e2e.sh` runs them
//! after the e2e binary, against the same cluster and operator): each benchmark with a few steps,
//! to check that it works and that its figures are sane. `make bench` measures.

mod fleet;
mod scaling;
mod soak;
