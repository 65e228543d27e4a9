//! The admin HTTP API and Prometheus metrics (`--http`).
//!
//! Split like the SIP side: a pure core and a thin I/O shell.
//! - [`api`]: routing and JSON rendering, `handle(state, method, path, query,
//!   body) -> Response`, no sockets (unit-tested against a real [`Registry`]).
//! - [`metrics`]: the Prometheus text exposition (format 0.0.4).
//! - [`url`]: percent-decoding and the query string.
//! - [`http`]: request framing with `httparse` (limits, keep-alive), sans-IO.
//! - [`server`]: the admin thread, one `mio` loop owning the listener and at
//!   most [`server::MAX_CONNECTIONS`] non-blocking connections.
//!
//! The admin thread never blocks a SIP worker: it reads the device table only
//! through the registry's closures (one shard read-locked at a time, never
//! across a syscall), reads counters with relaxed atomic loads, and sends
//! GB28181 queries through [`QuerySender`], which queues them to the worker
//! that owns the device's flow.

pub mod api;
pub mod http;
pub mod metrics;
pub mod server;
pub mod url;

use std::sync::Arc;

use crate::auth::NonceCounts;
use crate::gb28181::QuerySender;
use crate::registry::Registry;
use crate::stats::{GbStats, PersistStats, TimerStats, WorkerStats};

pub use api::{handle, Response};
pub use server::spawn;

/// Everything the admin API reads or acts on; shared with the rest of the
/// server through `Arc`s.
pub struct AdminState {
    pub registry: Arc<Registry>,
    /// One per worker, in worker-id order (the `worker` label of /metrics).
    pub worker_stats: Vec<Arc<WorkerStats>>,
    pub timer_stats: Arc<TimerStats>,
    pub gb_stats: Arc<GbStats>,
    pub queries: Arc<dyn QuerySender>,
    /// State snapshots (all zero without `--state`).
    pub persist: Arc<PersistStats>,
    /// The registrar's nonce-count table, for its capacity and refusals.
    pub nonce_counts: Arc<NonceCounts>,
}
