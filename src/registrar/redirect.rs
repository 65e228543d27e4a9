//! The redirect server (RFC 3261 §8.3, §21.3.3): a request addressed to an AOR
//! is answered from the device table with a 302 listing every live binding by
//! q, 480 for a known AOR with none, 404 for an unknown one. INVITE answers over
//! UDP are retransmitted until the ACK (RFC 3261 §17.2.1 timers G and H).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::gb28181::{Dest, Outbox};
use crate::registry::{aor_key, Binding, Transport, MAX_AOR};
use crate::sip::bytes::push_u64;
use crate::sip::{self, HeaderId, Message, Method, Scheme, Uri, Via};

use super::{Handled, Inbound, Now, Output, Registrar, Timer, TimerEvent, WorkerCtx};

/// RFC 3261 §17.1.1.1.
const T1_MS: u64 = 500;
const T2_MS: u64 = 4000;
/// Timer H: 64·T1.
const TIMER_H_MS: u64 = 64 * T1_MS;
/// Most INVITE answers awaiting their ACK; past it answers are sent once
/// (a flood cannot grow the table).
pub const MAX_INVITE_TRANSACTIONS: usize = 16_384;

struct Pending {
    to: SocketAddr,
    response: Vec<u8>,
    interval_ms: u64,
}

/// INVITE server transactions over UDP that answered with a final response
/// and wait for the ACK, keyed by (branch, source).
pub struct InviteTransactions {
    table: Mutex<HashMap<u64, Pending>>,
    keyer: std::collections::hash_map::RandomState,
    outbox: OnceLock<Arc<dyn Outbox>>,
}

impl Default for InviteTransactions {
    fn default() -> Self {
        InviteTransactions {
            table: Mutex::new(HashMap::new()),
            keyer: std::collections::hash_map::RandomState::new(),
            outbox: OnceLock::new(),
        }
    }
}

impl InviteTransactions {
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    /// RFC 3261 §17.2.3: an ACK for a non-2xx answer carries the INVITE's branch.
    fn key(&self, msg: &Message<'_>, source: SocketAddr) -> Option<u64> {
        let via = Via::parse(msg.top_via()?).ok()?;
        let branch = via.branch()?;
        let mut h = self.keyer.build_hasher();
        h.write(branch);
        std::hash::Hash::hash(&source, &mut h);
        Some(h.finish())
    }

    pub fn len(&self) -> usize {
        self.table.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An ACK ends its transaction; `true` when it matched one.
    pub fn ack(&self, msg: &Message<'_>, source: SocketAddr) -> bool {
        self.key(msg, source)
            .is_some_and(|k| self.table.lock().remove(&k).is_some())
    }

    /// Handles timers G (retransmit) and H (give up); returns a re-arm.
    pub fn on_timer(&self, event: &TimerEvent, now_ms: u64) -> Option<(u64, TimerEvent)> {
        match event {
            TimerEvent::InviteRetransmit { key } => {
                let mut table = self.table.lock();
                let p = table.get_mut(key)?;
                let (to, bytes) = (p.to, p.response.clone());
                p.interval_ms = (p.interval_ms * 2).min(T2_MS);
                let next = now_ms + p.interval_ms;
                drop(table);
                if let Some(o) = self.outbox.get() {
                    o.send(Dest::Udp(to), bytes);
                }
                Some((next, TimerEvent::InviteRetransmit { key: *key }))
            }
            TimerEvent::InviteTimeout { key } => {
                self.table.lock().remove(key);
                None
            }
            _ => None,
        }
    }

    /// Remembers an answer to an INVITE over UDP for retransmission.
    fn remember(&self, key: u64, to: SocketAddr, now: Now, out: &mut Output) {
        let mut table = self.table.lock();
        if table.len() >= MAX_INVITE_TRANSACTIONS {
            return;
        }
        table.insert(
            key,
            Pending {
                to,
                response: out.reply.clone(),
                interval_ms: T1_MS,
            },
        );
        drop(table);
        out.timers.push(Timer {
            deadline_ms: now.mono_ms + T1_MS,
            event: TimerEvent::InviteRetransmit { key },
        });
        out.timers.push(Timer {
            deadline_ms: now.mono_ms + TIMER_H_MS,
            event: TimerEvent::InviteTimeout { key },
        });
    }
}

/// Answers INVITE, SUBSCRIBE, REFER and non-MANSCDP MESSAGE from the table.
pub(super) fn handle(
    r: &Registrar,
    msg: &Message<'_>,
    ruri: &Uri<'_>,
    inb: &Inbound<'_>,
    now: Now,
    ctx: &mut WorkerCtx<'_>,
    out: &mut Output,
) -> Handled {
    let handled = answer(r, msg, ruri, inb, now, ctx, out);
    // RFC 3261 §17.2.1: over UDP the final answer to an INVITE is repeated
    // until the ACK arrives.
    if let (Handled::Reply(code), Some(Method::Invite), Transport::Udp) =
        (handled, msg.method(), inb.transport)
    {
        if code >= 300 {
            if let Some(key) = r.invites.key(msg, inb.source) {
                r.invites.remember(key, inb.source, now, out);
            }
        }
    }
    handled
}

fn answer(
    r: &Registrar,
    msg: &Message<'_>,
    ruri: &Uri<'_>,
    inb: &Inbound<'_>,
    now: Now,
    ctx: &mut WorkerCtx<'_>,
    out: &mut Output,
) -> Handled {
    // RFC 3261 §16.3 step 2 (as an element that would otherwise route it).
    if msg
        .value(HeaderId::MaxForwards)
        .is_some_and(|v| sip::parse_max_forwards(v) == Ok(0))
    {
        return r.reject(out, msg, inb, 483, "Too Many Hops");
    }
    if !matches!(ruri.scheme, Scheme::Sip | Scheme::Sips) {
        return r.reject(out, msg, inb, 404, "Not Found");
    }
    if !r.serves_domain(ruri) {
        return r.reject(out, msg, inb, 404, "Domain Not Served");
    }
    let mut key_buf = [0u8; MAX_AOR];
    let Some(aor) = aor_key(ruri, &mut key_buf) else {
        return r.reject(out, msg, inb, 404, "Not Found");
    };
    if r.policy.redirect_auth && !r.policy.no_auth {
        if let Err(h) = super::register::authenticate(r, msg, inb, now, ctx, out, None) {
            return h;
        }
    }
    enum Found {
        Redirected,
        NoBinding,
        Unknown,
    }
    let found = r.registry.read(aor, |d| {
        let Some(d) = d else {
            return Found::Unknown;
        };
        let mut live: Vec<&Binding> = d
            .bindings
            .iter()
            .filter(|b| b.expires_at_ms > now.mono_ms)
            .collect();
        if live.is_empty() {
            return Found::NoBinding;
        }
        // RFC 3261 §8.3: highest q first; a contact without q counts as 1.0.
        live.sort_by_key(|b| Reverse(b.q.unwrap_or(1000)));
        let mut w = r.start(out, msg, inb, 302, b"Moved Temporarily");
        let buf = w.raw();
        for b in live {
            buf.extend_from_slice(b"Contact: <");
            buf.extend_from_slice(b.uri());
            buf.extend_from_slice(b">;q=");
            super::register::push_qvalue(buf, b.q.unwrap_or(1000));
            buf.extend_from_slice(b";expires=");
            push_u64(buf, b.remaining_secs(now.mono_ms));
            buf.extend_from_slice(b"\r\n");
        }
        w.finish(b"");
        Found::Redirected
    });
    match found {
        Found::Redirected => Handled::Reply(302),
        Found::NoBinding => r.reject(out, msg, inb, 480, "Temporarily Unavailable"),
        Found::Unknown => r.reject(out, msg, inb, 404, "Not Found"),
    }
}
