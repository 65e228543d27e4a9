//! The registrar without sockets, driven as a worker drives it: the one
//! fixture of the sans-IO tests (allocation counts, registrar and GB28181
//! cores), so each builds only what it varies (policy, platform).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use sipreg::auth::{CredentialStore, NonceSecret};
use sipreg::registrar::txcache::TxCache;
use sipreg::registrar::{Handled, Inbound, Now, Output, Policy, Registrar, WorkerCtx};
use sipreg::registry::{ConnRef, Registry, Transport};
use sipreg::stats::WorkerStats;

/// Realm and shared password of the fixture's registrar.
pub const REALM: &[u8] = b"sipreg";
pub const PASSWORD: &[u8] = b"secret";

/// One worker's per-request state around a registrar over its own table.
pub struct SansIo {
    pub registrar: Registrar,
    pub registry: Arc<Registry>,
    pub stats: WorkerStats,
    pub tx: TxCache,
    /// The last request's reply and timers.
    pub out: Output,
}

impl SansIo {
    /// A registrar with `policy` over a fresh table, realm [`REALM`] and the
    /// shared password [`PASSWORD`].
    pub fn new(policy: Policy) -> Self {
        Self::with(policy, |r| r)
    }

    /// As [`new`](Self::new), the registrar finished by `finish` (e.g.
    /// `with_platform`).
    pub fn with(policy: Policy, finish: impl FnOnce(Registrar) -> Registrar) -> Self {
        let registry = Arc::new(Registry::new());
        let registrar = Registrar::new(
            policy,
            registry.clone(),
            CredentialStore::new(REALM).with_password(PASSWORD),
            NonceSecret::random().expect("urandom"),
        );
        SansIo {
            registrar: finish(registrar),
            registry,
            stats: WorkerStats::default(),
            tx: TxCache::new(),
            out: Output::default(),
        }
    }

    /// One request from `source` at monotonic `mono_ms` (the wall clock
    /// reads 1 800 000 000 s plus the same seconds). Allocates nothing of its
    /// own, so allocation counts around it are the registrar's.
    pub fn handle(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        transport: Transport,
        conn: Option<ConnRef>,
        mono_ms: u64,
    ) -> Handled {
        let inb = Inbound {
            bytes,
            source,
            transport,
            conn,
        };
        let mut ctx = WorkerCtx {
            stats: &self.stats,
            transactions: &mut self.tx,
            limiter: None,
        };
        let now = Now::at(mono_ms, 1_800_000_000 + mono_ms / 1000);
        self.registrar.handle(&inb, now, &mut ctx, &mut self.out)
    }

    /// [`handle`](Self::handle) over UDP.
    pub fn udp(&mut self, bytes: &[u8], source: SocketAddr, mono_ms: u64) -> Handled {
        self.handle(bytes, source, Transport::Udp, None, mono_ms)
    }
}
