//! sipload: a SIP load generator and bare responder for measuring sipreg.
//!
//! Sans-IO parts — [`flow`] (per-device state machine), [`msg`] (request
//! building), [`stats`] — are pure and unit-tested; [`engine`] and
//! [`responder`] are the socket shells; every `unsafe` block lives in
//! [`mmsg`]. See README.md for usage.

pub mod cli;
pub mod engine;
pub mod flow;
pub mod mmsg;
pub mod msg;
pub mod responder;
pub mod stats;
