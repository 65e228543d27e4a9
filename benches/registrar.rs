//! The sans-IO request path per operation, without sockets: scan, auth,
//! registry update and response writing, as a worker runs it.
//! - `options/retransmission`: a repeated OPTIONS answered from the cache
//! - `register-noauth/new`: a REGISTER creating a binding for a fresh AOR
//! - `register/challenge`: a REGISTER without credentials → 401
//! - `register-digest/refresh`: an authenticated refresh (qop=auth, rising nc)
//!
//! Each case is set up once ([`CASES`]) and run in two modes:
//! - criterion (no arguments, as `cargo bench` runs it): time per operation;
//! - `registrar ir CASE N`: N operations and nothing else, for instruction
//!   counting under callgrind (`perf/register_ir.sh`), which is stable on a
//!   shared, noisy machine where wall-clock figures are not. Requests are built
//!   outside [`Harness::handle`], the function callgrind collects.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput};
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

    /// One measured operation. Never inlined: `perf/register_ir.sh` collects
    /// instructions only inside this function (`--toggle-collect`).
    #[inline(never)]
    fn handle(&mut self, bytes: &[u8]) -> Handled {
        self.exchange(bytes)
    }

    /// As [`handle`](Self::handle), for setup: inlined into its caller, so the
    /// requests that prepare a case are not collected with the measured ones.
    #[inline(always)]
    fn exchange(&mut self, bytes: &[u8]) -> Handled {
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

/// Where a case's requests come from.
enum Requests {
    /// The same bytes every time.
    Repeat(Vec<u8>),
    /// A fresh request per operation, built outside the measurement: each has
    /// its own branch, so the transaction cache never answers for the registrar.
    Fresh(Box<dyn FnMut() -> Vec<u8>>),
}

impl Requests {
    /// Fresh requests built by `make` from a running number: 1, 2, 3…
    fn numbered(mut make: impl FnMut(u64) -> Vec<u8> + 'static) -> Self {
        let mut n = 0u64;
        Requests::Fresh(Box::new(move || {
            n += 1;
            make(n)
        }))
    }
}

/// A harness ready for the measured operations, what they are fed, and what
/// each must return.
struct Case {
    harness: Harness,
    requests: Requests,
    expect: Handled,
}

/// Builds a case: its harness, its requests and the expected outcome.
type Setup = fn() -> Case;

/// Every case by name, for both modes.
const CASES: [(&str, Setup); 4] = [
    ("options/retransmission", options_retransmission),
    ("register-noauth/new", register_noauth_new),
    ("register/challenge", register_challenge),
    ("register-digest/refresh", register_digest_refresh),
];

/// One OPTIONS repeated: the first is answered here, every measured one from
/// the transaction cache, so this is the floor of scan + cache lookup + copy.
fn options_retransmission() -> Case {
    let mut harness = Harness::new(false);
    let options = request("OPTIONS", "probe", 1, 1, "");
    assert_eq!(harness.exchange(&options), Handled::Reply(200));
    Case {
        harness,
        requests: Requests::Repeat(options),
        expect: Handled::Reply(200),
    }
}

/// Each REGISTER creates a binding for a new AOR.
fn register_noauth_new() -> Case {
    Case {
        harness: Harness::new(true),
        requests: Requests::numbered(|n| request("REGISTER", &format!("u{n}"), 1, n, "")),
        expect: Handled::Reply(200),
    }
}

/// A REGISTER without credentials, answered with a fresh nonce.
fn register_challenge() -> Case {
    Case {
        harness: Harness::new(false),
        requests: Requests::numbered(|branch| request("REGISTER", "alice", 1, branch, "")),
        expect: Handled::Reply(401),
    }
}

/// Authenticated refreshes of one binding: one nonce, rising nc and CSeq.
fn register_digest_refresh() -> Case {
    let mut harness = Harness::new(false);
    assert_eq!(
        harness.exchange(&request("REGISTER", "alice", 1, 1, "")),
        Handled::Reply(401)
    );
    let msg = scan(&harness.out.reply).expect("401 scans");
    let ch = AuthHeader::parse(msg.value(HeaderId::WwwAuthenticate).expect("challenge"))
        .expect("parses");
    let nonce = ch.param(b"nonce").expect("nonce").to_vec();
    let opaque = ch.param(b"opaque").expect("opaque").to_vec();
    let key = ha1(b"alice", b"sipreg", b"secret");
    Case {
        harness,
        requests: Requests::numbered(move |n| {
            let nc = u32::try_from(n).expect("fewer than 2^32 operations");
            let resp = client_response(
                &key,
                &nonce,
                b"REGISTER",
                b"sip:127.0.0.1",
                Some((nc, b"cn")),
            );
            let auth = format!(
                "Authorization: Digest username=\"alice\", realm=\"sipreg\", nonce=\"{}\", uri=\"sip:127.0.0.1\", response=\"{}\", algorithm=MD5, qop=auth, nc={}, cnonce=\"cn\", opaque=\"{}\"\r\n",
                String::from_utf8_lossy(&nonce),
                String::from_utf8_lossy(&resp),
                String::from_utf8_lossy(&format_nc(nc)),
                String::from_utf8_lossy(&opaque)
            );
            request("REGISTER", "alice", nc + 1, n + 10, &auth)
        }),
        expect: Handled::Reply(200),
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("registrar");
    g.throughput(Throughput::Elements(1));
    for (name, setup) in CASES {
        let Case {
            mut harness,
            requests,
            expect,
        } = setup();
        match requests {
            Requests::Repeat(bytes) => g.bench_function(name, |b| {
                b.iter(|| assert_eq!(harness.handle(black_box(&bytes)), expect))
            }),
            // Request bytes are built in criterion's untimed setup.
            Requests::Fresh(mut next) => g.bench_function(name, |b| {
                b.iter_batched(
                    &mut next,
                    |r| assert_eq!(harness.handle(&r), expect),
                    BatchSize::SmallInput,
                )
            }),
        };
    }
    g.finish();
}

/// `n` operations of one case, each request built before the call to
/// [`Harness::handle`] and its outcome asserted after.
fn ir(case: &str, n: u64) {
    let setup = CASES
        .iter()
        .find(|(name, _)| *name == case)
        .unwrap_or_else(|| {
            let names: Vec<&str> = CASES.iter().map(|(name, _)| *name).collect();
            panic!("unknown case {case}; one of {}", names.join(", "))
        })
        .1;
    let Case {
        mut harness,
        requests,
        expect,
    } = setup();
    match requests {
        Requests::Repeat(bytes) => {
            for _ in 0..n {
                assert_eq!(harness.handle(black_box(&bytes)), expect);
            }
        }
        Requests::Fresh(mut next) => {
            for _ in 0..n {
                let r = next();
                assert_eq!(harness.handle(black_box(&r)), expect);
            }
        }
    }
}

fn main() {
    // `cargo bench` appends `--bench`; criterion reads its own arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [mode, case, n] = &args[..] {
        if mode == "ir" {
            ir(case, n.parse().expect("N is a number of operations"));
            return;
        }
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
