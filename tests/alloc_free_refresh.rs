//! STYLE habit 6: a REGISTER refresh allocates nothing. A counting global
//! allocator (counting only on the test's own thread) wraps the real one, and
//! the sans-IO registrar is driven directly with real REGISTER bytes.

mod common;

use std::net::SocketAddr;

use sipreg::auth::{client_response, format_nc, ha1};
use sipreg::registrar::{Handled, Policy};
use sipreg::sip::{scan, AuthHeader, HeaderId};

use common::counting::{counted, Counting};
use common::sans_io::{SansIo, PASSWORD, REALM};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn register(cseq: u32, branch: &str, auth: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=f1\r\n\
         To: <sip:alice@127.0.0.1>\r\n\
         Call-ID: alloc-test-1\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: <sip:alice@127.0.0.1:5070>\r\n\
         {auth}\
         User-Agent: test\r\n\
         Expires: 600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn refresh_with_digest_allocates_nothing() {
    let mut io = SansIo::new(Policy {
        max_expires: 3600,
        default_expires: 600,
        ..Policy::default()
    });
    let source: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut handle = |bytes: &[u8], mono_ms: u64| {
        let h = io.udp(bytes, source, mono_ms);
        (h, io.out.reply.clone(), io.out.timers.len())
    };

    // Challenge, then register (these may allocate: new device, nonce entry).
    let (h, reply, _) = handle(&register(1, "a1", ""), 1000);
    assert_eq!(h, Handled::Reply(401));
    let msg = scan(&reply).unwrap();
    let challenge = AuthHeader::parse(msg.value(HeaderId::WwwAuthenticate).unwrap()).unwrap();
    let nonce = challenge.param(b"nonce").unwrap().to_vec();
    let opaque = challenge.param(b"opaque").unwrap().to_vec();
    let key = ha1(b"alice", REALM, PASSWORD);
    let auth_for = |nc: u32| {
        let cnonce = b"c0ffee";
        let resp = client_response(
            &key,
            &nonce,
            b"REGISTER",
            b"sip:127.0.0.1",
            Some((nc, cnonce)),
        );
        format!(
            "Authorization: Digest username=\"alice\", realm=\"sipreg\", nonce=\"{}\", uri=\"sip:127.0.0.1\", response=\"{}\", algorithm=MD5, qop=auth, nc={}, cnonce=\"c0ffee\", opaque=\"{}\"\r\n",
            String::from_utf8_lossy(&nonce),
            String::from_utf8_lossy(&resp),
            String::from_utf8_lossy(&format_nc(nc)),
            String::from_utf8_lossy(&opaque),
        )
    };
    let (h, _, timers) = handle(&register(2, "a2", &auth_for(1)), 2000);
    assert_eq!(h, Handled::Reply(200));
    assert_eq!(timers, 1);
    // Warm-up refresh: grows reusable buffers (reply, transaction slots) once.
    let (h, _, _) = handle(&register(3, "a3", &auth_for(2)), 3000);
    assert_eq!(h, Handled::Reply(200));

    // Steady state: build the request outside the counted region, then count
    // exactly what the registrar does for a refresh.
    for (i, cseq) in (4..20u32).enumerate() {
        let req = register(cseq, &format!("r{cseq}"), &auth_for(cseq - 1));
        let (h, allocs) = counted(|| io.udp(&req, source, 4000 + i as u64 * 1000));
        assert_eq!(
            h,
            Handled::Reply(200),
            "{}",
            String::from_utf8_lossy(&io.out.reply)
        );
        // The event armed by the first registration stays in the wheel and
        // re-arms itself when it fires; a refresh sends nothing.
        assert!(io.out.timers.is_empty(), "a refresh scheduled a timer");
        assert_eq!(allocs, 0, "refresh {cseq} allocated {allocs} times");
    }
    let (bindings, armed, deadline) = io
        .registry
        .read(b"alice@127.0.0.1", |d| {
            d.map(|d| (d.bindings.len(), d.armed_ms, d.bindings[0].expires_at_ms))
        })
        .expect("registered");
    assert_eq!(bindings, 1);
    assert!(
        armed < deadline,
        "the first event stays armed, before the refreshed deadline"
    );
}
