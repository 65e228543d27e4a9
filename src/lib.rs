//! sipreg — an edge SIP registrar for IP phones, softphones and GB28181 devices.
//!
//! The crate is split into a sans-IO protocol core (`sip`, `auth`, `registrar`,
//! `timer::wheel`) that takes bytes and a `now` and returns what to send, and a thin
//! I/O shell (`transport`) that owns sockets and threads. See DESIGN.md.

pub mod admin;
pub mod auth;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod gb28181;
pub mod persist;
pub mod registrar;
pub mod registry;
pub mod server;
pub mod sip;
pub mod stats;
pub mod timer;
pub mod transport;
