//! The sans-IO request path per operation, without sockets: scan, auth,
//! registry update and response writing, as a worker runs it.
//! - `options/retransmission`: a repeated OPTIONS answered from the cache
//! - `register-noauth/new`: a REGISTER creating a binding for a fresh AOR
//! - `register-digest/refresh`: an authenticated refresh (qop=auth, rising nc)
//! - `register/challenge`: a REGISTER without credentials → 401

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sipreg::auth::{client_response, format_nc, ha1, CredentialStore, NonceSecret};
use sipreg::registrar::txcache::TxCache;
use sipreg::registrar::{Handled, Inbound, Now, Output, Policy, Registrar, WorkerCtx};
use sipreg::registry::{Registry, Transport};
use sipreg::sip::{scan, AuthHeader, HeaderId};
use sipreg::stats::WorkerStats;

fn registrar(no_auth: bool) -> Registrar {
    let policy = Policy {
        max_expires: 3600,
        default_expires: 600,
        no_auth,
        nonce_ttl_secs: 3600,
        ..Policy::default()
    };
    let creds = CredentialStore::new(b"sipreg").with_password(b"secret");
    Registrar::new(
        policy,
        Arc::new(Registry::new()),
        creds,
        NonceSecret::random().expect("urandom"),
    )
}

fn request(method: &str, user: &str, cseq: u32, branch: u64, auth: &str) -> Vec<u8> {
    format!(
        "{method} sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK{branch:x}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@127.0.0.1>;tag=f{branch:x}\r\n\
         To: <sip:{user}@127.0.0.1>\r\n\
         Call-ID: bench-{user}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:{user}@127.0.0.1:5070>\r\n\
         {auth}User-Agent: bench\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

struct Harness {
    registrar: Registrar,
    stats: WorkerStats,
    tx: TxCache,
    out: Output,
    now_ms: u64,
}

impl Harness {
    fn new(no_auth: bool) -> Self {
        Harness {
            registrar: registrar(no_auth),
            stats: WorkerStats::default(),
            tx: TxCache::new(),
            out: Output::default(),
            now_ms: 1000,
        }
    }

    fn handle(&mut self, bytes: &[u8]) -> Handled {
        self.now_ms += 1;
        let source: SocketAddr = ([127, 0, 0, 1], 5070).into();
        let inb = Inbound {
            bytes,
            source,
            transport: Transport::Udp,
            conn: None,
        };
        let mut ctx = WorkerCtx {
            stats: &self.stats,
            transactions: &mut self.tx,
            limiter: None,
        };
        let now = Now::at(self.now_ms, 1_800_000_000);
        self.registrar.handle(&inb, now, &mut ctx, &mut self.out)
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("registrar");
    g.throughput(Throughput::Elements(1));

    let mut h = Harness::new(false);
    let options = request("OPTIONS", "probe", 1, 1, "");
    let mut branch = 0u64;
    // One OPTIONS repeated: after the first, the transaction cache answers,
    // so this is the floor of scan + cache lookup + copy.
    g.bench_function("options/retransmission", |b| {
        b.iter(|| assert_eq!(h.handle(black_box(&options)), Handled::Reply(200)))
    });

    // Request bytes are built in criterion's untimed setup (iter_batched), so
    // only handling is measured and no request repeats (each has its own
    // branch, so the transaction cache never answers for the registrar).
    let mut h = Harness::new(true);
    let mut n = 0u64;
    g.bench_function("register-noauth/new", |b| {
        b.iter_batched(
            || {
                n += 1;
                request("REGISTER", &format!("u{n}"), 1, n, "")
            },
            |r| assert_eq!(h.handle(&r), Handled::Reply(200)),
            BatchSize::SmallInput,
        )
    });

    let mut h = Harness::new(false);
    g.bench_function("register/challenge", |b| {
        b.iter_batched(
            || {
                branch += 1;
                request("REGISTER", "alice", 1, branch, "")
            },
            |r| assert_eq!(h.handle(&r), Handled::Reply(401)),
            BatchSize::SmallInput,
        )
    });

    // Authenticated refreshes of one binding: one nonce, rising nc and CSeq.
    let mut h = Harness::new(false);
    assert_eq!(
        h.handle(&request("REGISTER", "alice", 1, 1, "")),
        Handled::Reply(401)
    );
    let reply = h.out.reply.clone();
    let msg = scan(&reply).expect("401 scans");
    let ch = AuthHeader::parse(msg.value(HeaderId::WwwAuthenticate).expect("challenge"))
        .expect("parses");
    let nonce = ch.param(b"nonce").expect("nonce").to_vec();
    let opaque = ch.param(b"opaque").expect("opaque").to_vec();
    let key = ha1(b"alice", b"sipreg", b"secret");
    let mut nc = 0u32;
    g.bench_function("register-digest/refresh", |b| {
        b.iter_batched(
            || {
                nc += 1;
                let resp = client_response(&key, &nonce, b"REGISTER", b"sip:127.0.0.1", Some((nc, b"cn")));
                let auth = format!(
                    "Authorization: Digest username=\"alice\", realm=\"sipreg\", nonce=\"{}\", uri=\"sip:127.0.0.1\", response=\"{}\", algorithm=MD5, qop=auth, nc={}, cnonce=\"cn\", opaque=\"{}\"\r\n",
                    String::from_utf8_lossy(&nonce),
                    String::from_utf8_lossy(&resp),
                    String::from_utf8_lossy(&format_nc(nc)),
                    String::from_utf8_lossy(&opaque)
                );
                request("REGISTER", "alice", nc + 1, u64::from(nc) + 10, &auth)
            },
            |r| assert_eq!(h.handle(&r), Handled::Reply(200)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(registrar_benches, benches);
criterion_main!(registrar_benches);
