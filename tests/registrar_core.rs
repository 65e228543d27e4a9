//! The sans-IO registrar driven directly (no sockets): what it stores for a
//! binding, which the black-box tests cannot see.

use std::net::SocketAddr;
use std::sync::Arc;

use sipreg::auth::{CredentialStore, NonceSecret};
use sipreg::registrar::txcache::TxCache;
use sipreg::registrar::{Handled, Inbound, Now, Output, Policy, Registrar, TimerEvent, WorkerCtx};
use sipreg::registry::{ConnRef, Registry, Transport};
use sipreg::stats::WorkerStats;

fn registrar() -> (Registrar, Arc<Registry>) {
    let registry = Arc::new(Registry::new());
    let policy = Policy {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 600,
        max_contacts: 10,
        domain: None,
        no_auth: true,
        nonce_ttl_secs: 300,
        redirect_auth: false,
    };
    let r = Registrar::new(
        policy,
        registry.clone(),
        CredentialStore::new(b"sipreg"),
        NonceSecret::random().expect("urandom"),
    );
    (r, registry)
}

const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKtcp1\r\n\
From: <sip:bob@example.com>;tag=1\r\n\
To: <sip:bob@Example.COM>\r\n\
Call-ID: core-1\r\n\
CSeq: 1 REGISTER\r\n\
Contact: <sip:bob@192.0.2.10:5060;transport=tcp>;q=0.5\r\n\
User-Agent: Core/1.0\r\n\
Expires: 120\r\n\
Content-Length: 0\r\n\r\n";

#[test]
fn tcp_binding_remembers_its_connection_source_and_deadline() {
    let (r, registry) = registrar();
    let stats = WorkerStats::default();
    let mut tx = TxCache::new();
    let mut out = Output::default();
    let source: SocketAddr = "198.51.100.4:40111".parse().unwrap();
    let conn = ConnRef {
        worker: 1,
        token: 7,
        id: 4242,
    };
    let inb = Inbound {
        bytes: REGISTER,
        source,
        transport: Transport::Tcp,
        conn: Some(conn),
    };
    let now = Now {
        mono_ms: 10_000,
        unix_secs: 1_800_000_000,
        unix_millis: 0,
    };
    let mut ctx = WorkerCtx {
        stats: &stats,
        transactions: &mut tx,
    };
    assert_eq!(r.handle(&inb, now, &mut ctx, &mut out), Handled::Reply(200));
    let reply = String::from_utf8_lossy(&out.reply).into_owned();
    assert!(
        reply.contains("Contact: <sip:bob@192.0.2.10:5060;transport=tcp>;expires=120;q=0.5\r\n"),
        "{reply}"
    );
    assert_eq!(out.timers.len(), 1);
    assert_eq!(out.timers[0].deadline_ms, 10_000 + 120_000);
    assert!(matches!(
        &out.timers[0].event,
        TimerEvent::Expiry { aor, .. } if &**aor == b"bob@example.com"
    ));

    let stored = registry.read(b"bob@example.com", |d| d.map(|d| d.bindings[0].clone()));
    let b = stored.expect("binding stored under the lower-cased AOR");
    assert_eq!(b.transport, Transport::Tcp);
    assert_eq!(b.conn, Some(conn));
    assert_eq!(b.source, source);
    assert_eq!(&*b.user_agent, b"Core/1.0");
    assert_eq!(b.q, Some(500));
    assert_eq!(b.expires_at_ms, 130_000);
}
