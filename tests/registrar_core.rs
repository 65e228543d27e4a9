//! The sans-IO registrar driven directly (no sockets): what it stores for a
//! binding, which the black-box tests cannot see.

mod common;

use std::net::SocketAddr;

use common::sans_io::SansIo;
use sipreg::registrar::{Handled, Policy, TimerEvent};
use sipreg::registry::{ConnRef, Transport};

/// A no-auth registrar and the per-worker state a transport would lend it.
type Core = SansIo;

fn core() -> Core {
    SansIo::new(Policy {
        max_expires: 3600,
        default_expires: 600,
        no_auth: true,
        ..Policy::default()
    })
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
    let mut core = core();
    let source: SocketAddr = "198.51.100.4:40111".parse().unwrap();
    let conn = ConnRef {
        worker: 1,
        token: 7,
        id: 4242,
    };
    let handled = core.handle(REGISTER, source, Transport::Tcp, Some(conn), 10_000);
    assert_eq!(handled, Handled::Reply(200));
    let (out, registry) = (&core.out, &core.registry);
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
    assert_eq!(b.user_agent(), b"Core/1.0");
    assert_eq!(b.q, Some(500));
    assert_eq!(b.expires_at_ms, 130_000);
}

fn invite(branch: &str) -> Vec<u8> {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@example.com>;tag=c\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: inv-{branch}\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn ack(branch: &str) -> Vec<u8> {
    String::from_utf8(invite(branch))
        .unwrap()
        .replace("INVITE sip:", "ACK sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .into_bytes()
}

/// RFC 3261 §17.2.1: the 302 to an INVITE over UDP waits for its ACK under
/// timers G and H, and the table forgets it on either.
#[test]
fn invite_transactions_end_on_ack_or_timer_h() {
    let mut core = core();
    let caller: SocketAddr = "198.51.100.9:5060".parse().unwrap();
    let send = |core: &mut Core, bytes: &[u8], transport| {
        core.handle(bytes, caller, transport, None, 5_000)
    };
    // Register bob first (no auth in this fixture).
    let reg = String::from_utf8(REGISTER.to_vec()).unwrap();
    assert_eq!(
        send(&mut core, reg.as_bytes(), Transport::Udp),
        Handled::Reply(200)
    );

    assert_eq!(
        send(&mut core, &invite("i1"), Transport::Udp),
        Handled::Reply(302)
    );
    let events: Vec<TimerEvent> = core.out.timers.iter().map(|t| t.event.clone()).collect();
    assert!(
        matches!(
            events[..],
            [
                TimerEvent::InviteRetransmit { .. },
                TimerEvent::InviteTimeout { .. }
            ]
        ),
        "{events:?}"
    );
    assert_eq!(core.registrar.invites.len(), 1);
    // Timer G re-arms with a doubled interval while no ACK has come.
    let rearm = core.registrar.invites.on_timer(&events[0], 5_500);
    assert!(
        matches!(rearm, Some((6_500, TimerEvent::InviteRetransmit { .. }))),
        "{rearm:?}"
    );
    // Timer H ends it; a later timer G finds nothing.
    assert_eq!(core.registrar.invites.on_timer(&events[1], 37_000), None);
    assert!(core.registrar.invites.is_empty());
    assert_eq!(core.registrar.invites.on_timer(&events[0], 37_500), None);

    // The ACK ends the next one; it is absorbed, never answered.
    assert_eq!(
        send(&mut core, &invite("i2"), Transport::Udp),
        Handled::Reply(302)
    );
    assert_eq!(core.registrar.invites.len(), 1);
    assert_eq!(
        send(&mut core, &ack("i2"), Transport::Udp),
        Handled::Dropped(sipreg::stats::Drop::Ack)
    );
    assert!(core.registrar.invites.is_empty());

    // Over TCP there is no timer G at all.
    assert_eq!(
        send(&mut core, &invite("i3"), Transport::Tcp),
        Handled::Reply(302)
    );
    assert!(core.out.timers.is_empty());
    assert!(core.registrar.invites.is_empty());
}

/// Nobody to answer: a request whose Via holds only empty elements is dropped
/// and counted, not answered with a Via-less 400 (a fuzzing finding).
#[test]
fn request_without_a_usable_via_is_dropped() {
    let mut core = core();
    let bytes = b"OPTIONS sip:h SIP/2.0\r\nVia: \t, \r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let source = "198.51.100.9:5060".parse().unwrap();
    let handled = core.handle(bytes, source, Transport::Udp, None, 1_000);
    assert_eq!(handled, Handled::Dropped(sipreg::stats::Drop::Unparseable));
    assert!(core.out.reply.is_empty());
}

/// An INVITE flood cannot grow the table of answers awaiting an ACK past its
/// bound; answers beyond it are still sent, just not repeated.
#[test]
fn invite_flood_is_bounded() {
    let mut core = core();
    let caller: SocketAddr = "198.51.100.9:5060".parse().unwrap();
    let limit = sipreg::registrar::redirect::MAX_INVITE_TRANSACTIONS;
    for i in 0..limit + 100 {
        // Unknown AOR: 404, which an INVITE over UDP also repeats until ACK.
        let h = core.handle(
            &invite(&format!("flood{i}")),
            caller,
            Transport::Udp,
            None,
            1_000,
        );
        assert_eq!(h, Handled::Reply(404));
    }
    assert_eq!(core.registrar.invites.len(), limit);
}
