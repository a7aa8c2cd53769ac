//! The integration and end-to-end tests, one binary (one link instead of
//! one per file): each module is what was a file of its own under `tests/`.
//! Shared support is `tests/common`; inputs are in `tests/data`.

#[path = "../common/mod.rs"]
mod common;

mod admin_tls;
mod architecture;
mod budgets;
mod cli;
mod compliance;
mod dashboards;
mod differential;
mod discovery;
mod durability;
mod e2e_prometheus;
mod explain;
mod faults;
mod fleet;
mod formats;
mod fresh_first;
mod hostile;
mod image;
mod k8s;
mod kubelet;
mod parallel_send;
mod probe_ack;
mod pull;
mod real_programs;
mod relay_mtls;
mod reload;
mod tls_rotation;
mod user_path;
