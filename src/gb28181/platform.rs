//! The GB28181 platform core, shared by every worker: keep-alives and online
//! state, catalog and device-info aggregation, and server-originated queries as
//! RFC 3261 §17.1.2 non-INVITE client transactions driven by the timer wheel.
//! Sans-IO like the registrar: sockets are reached only through [`Outbox`].

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::xml::{self, Manscdp};
use super::{QueryError, QueryKind, QuerySender};
use crate::registrar::{Handled, Inbound, Now, Output, Timer, TimerEvent};
use crate::registry::{
    aor_key, Aor, Binding, CatalogStatus, Channel, ConnRef, Device, Registry, Transport, MAX_AOR,
};
use crate::sip::bytes::push_u64;
use crate::sip::{HeaderId, Message, NameAddr, StartLine, Uri, Via};
use crate::stats::{GbStats, WorkerStats};
use crate::timer::{now_ms, TimerCmd};

/// RFC 3261 §17.1.1.1 timer values.
pub const T1_MS: u64 = 500;
pub const T2_MS: u64 = 4000;
/// Timer F: 64·T1.
pub const TIMER_F_MS: u64 = 64 * T1_MS;
/// Most client transactions in flight (admin requests beyond get 503).
pub const MAX_TRANSACTIONS: usize = 10_000;
/// Most channels kept per device (a large NVR has a few hundred).
pub const MAX_CHANNELS: usize = 4096;
/// GB/T 28181 §6.1.2 example platform id, used when `--platform-id` is not set.
pub const DEFAULT_PLATFORM_ID: &str = "34020000002000000001";

/// Where a server-originated request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Udp(SocketAddr),
    Tcp(ConnRef),
}

/// Hands bytes to the worker that owns a flow; implemented by the transport.
pub trait Outbox: Send + Sync {
    fn send(&self, dest: Dest, bytes: Vec<u8>);
}

#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub platform_id: String,
    pub keepalive_timeout_ms: u64,
    /// How long a catalog may take to complete before it is reported partial.
    pub query_timeout_ms: u64,
    /// The SIP listen address (its IP may be unspecified: then the address the
    /// kernel would use towards the device goes into Via and From).
    pub listen: SocketAddr,
}

struct ClientTx {
    aor: Aor,
    kind: QueryKind,
    sn: u32,
    dest: Dest,
    bytes: Vec<u8>,
    interval_ms: u64,
}

pub struct Platform {
    cfg: PlatformConfig,
    registry: Arc<Registry>,
    pub stats: Arc<GbStats>,
    timers: Sender<TimerCmd<TimerEvent>>,
    outbox: OnceLock<Arc<dyn Outbox>>,
    transactions: Mutex<HashMap<u64, ClientTx>>,
    next_sn: AtomicU32,
    next_tx: AtomicU64,
}

impl Platform {
    pub fn new(
        cfg: PlatformConfig,
        registry: Arc<Registry>,
        stats: Arc<GbStats>,
        timers: Sender<TimerCmd<TimerEvent>>,
    ) -> Self {
        Platform {
            cfg,
            registry,
            stats,
            timers,
            outbox: OnceLock::new(),
            transactions: Mutex::new(HashMap::new()),
            next_sn: AtomicU32::new(1),
            // Distinct per run so a restarted platform never reuses a branch.
            next_tx: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
        }
    }

    /// Connects the platform to the workers once they exist.
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.outbox.set(outbox);
    }

    /// A MANSCDP MESSAGE from a device (GB/T 28181 §9.6 keep-alive, §9.5
    /// query responses). `aor` is the key built from its From URI.
    pub fn handle_message(
        &self,
        msg: &Message<'_>,
        inb: &Inbound<'_>,
        now: Now,
        stats: &WorkerStats,
        out: &mut Output,
        reply: impl FnOnce(&mut Output, u16, &str) -> Handled,
    ) -> Handled {
        let doc = match xml::parse(msg.body) {
            Ok(d) => d,
            Err(e) => {
                WorkerStats::inc(&self.stats.xml_errors);
                stats.parse_error(crate::stats::PARSE_ERROR_XML);
                return reply(out, 400, e.reason());
            }
        };
        let from_uri = msg
            .value(HeaderId::From)
            .and_then(|f| NameAddr::parse(f).ok())
            .and_then(|f| Uri::parse(f.uri).ok());
        let mut key = [0u8; MAX_AOR];
        let Some(aor) = from_uri.as_ref().and_then(|u| aor_key(u, &mut key)) else {
            return reply(out, 400, "Malformed From Header");
        };
        // Query answers change what operators see of the device: like
        // keep-alives, they count only from the flow it registered on.
        let from_device = |aor: &[u8]| {
            self.registry.read(aor, |d| {
                d.is_some_and(|d| d.bindings.iter().any(|b| same_flow(b, inb)))
            })
        };
        match doc {
            Manscdp::Keepalive { .. } => self.keepalive(aor, inb, now, out, reply),
            Manscdp::Catalog { .. } | Manscdp::DeviceInfo { .. } if !from_device(aor) => {
                WorkerStats::inc(&self.stats.answers_refused);
                reply(out, 403, "Not From The Registered Address")
            }
            Manscdp::Catalog {
                sn,
                sum_num,
                items,
                dropped,
                ..
            } => {
                let over_cap = dropped + self.catalog_part(aor, sn, sum_num, items, now, out);
                self.stats
                    .catalog_items_dropped
                    .fetch_add(over_cap as u64, std::sync::atomic::Ordering::Relaxed);
                if over_cap > 0 {
                    log::debug!(
                        "device {}: {over_cap} catalog items beyond the caps dropped",
                        String::from_utf8_lossy(aor)
                    );
                }
                reply(out, 200, "OK")
            }
            Manscdp::DeviceInfo { info, .. } => {
                self.registry.modify(aor, |d| {
                    if !d.bindings.is_empty() || d.gb().known {
                        d.gb_mut().info = Some(Box::new(info));
                    }
                });
                reply(out, 200, "OK")
            }
            Manscdp::Notify { .. } | Manscdp::Other { .. } => {
                WorkerStats::inc(&self.stats.notifications);
                reply(out, 200, "OK")
            }
        }
    }

    /// A keep-alive counts only from the flow the device registered on; it
    /// makes the device online and pushes its offline deadline out.
    fn keepalive(
        &self,
        aor: &[u8],
        inb: &Inbound<'_>,
        now: Now,
        out: &mut Output,
        reply: impl FnOnce(&mut Output, u16, &str) -> Handled,
    ) -> Handled {
        enum Verdict {
            Ok(Option<Timer>),
            NotRegistered,
            ElsewhereFrom,
        }
        let timeout = self.cfg.keepalive_timeout_ms;
        let verdict = self.registry.modify_keyed(aor, |key, d| {
            if d.bindings.is_empty() {
                return Verdict::NotRegistered;
            }
            if !d.bindings.iter().any(|b| same_flow(b, inb)) {
                return Verdict::ElsewhereFrom;
            }
            let gb = d.gb_mut();
            gb.known = true;
            gb.online = true;
            gb.last_keepalive_unix = Some(now.unix_secs);
            let deadline_ms = now.mono_ms + timeout;
            gb.keepalive_deadline_ms = Some(deadline_ms);
            // The pending timeout (if any) fires first and re-arms itself at
            // this deadline (`on_timer`), so the usual keep-alive sends nothing.
            if gb.keepalive_timer_ms.is_some_and(|at| at <= deadline_ms) {
                return Verdict::Ok(None);
            }
            gb.keepalive_generation += 1;
            gb.keepalive_timer_ms = Some(deadline_ms);
            Verdict::Ok(Some(Timer {
                deadline_ms,
                event: TimerEvent::KeepaliveTimeout {
                    aor: key.clone(),
                    generation: gb.keepalive_generation,
                },
            }))
        });
        match verdict {
            Verdict::Ok(timer) => {
                WorkerStats::inc(&self.stats.keepalives);
                out.timers.extend(timer);
                reply(out, 200, "OK")
            }
            Verdict::NotRegistered => {
                WorkerStats::inc(&self.stats.keepalives_rejected);
                reply(out, 403, "Device Not Registered")
            }
            Verdict::ElsewhereFrom => {
                WorkerStats::inc(&self.stats.keepalives_rejected);
                reply(out, 403, "Keep-Alive Not From The Registered Address")
            }
        }
    }

    /// Accumulates one part of a catalog response (GB/T 28181 §9.5.2): items
    /// are deduplicated by channel id within an SN, and replace the device's
    /// channels only once SumNum of them have arrived. Returns how many new
    /// items were dropped because the device already holds [`MAX_CHANNELS`].
    fn catalog_part(
        &self,
        aor: &[u8],
        sn: u32,
        sum_num: Option<usize>,
        items: Vec<Channel>,
        now: Now,
        out: &mut Output,
    ) -> usize {
        let timeout = self.cfg.query_timeout_ms;
        let mut over_cap = 0;
        let started = self.registry.modify_keyed(aor, |key, d| {
            if d.bindings.is_empty() && !d.gb().known {
                return None;
            }
            let gb = d.gb_mut();
            gb.known = true;
            let same_sn = matches!(gb.catalog, CatalogStatus::Pending { sn: s, .. } if s == sn);
            // A part of an SN we did not ask for (or a newer one) starts afresh.
            let fresh = !same_sn;
            if fresh {
                gb.pending_channels.clear();
            }
            let total = items.len();
            for (i, item) in items.into_iter().enumerate() {
                if gb.pending_channels.len() >= MAX_CHANNELS {
                    over_cap = total - i;
                    break;
                }
                if !gb
                    .pending_channels
                    .iter()
                    .any(|c| c.device_id == item.device_id)
                {
                    gb.pending_channels.push(item);
                }
            }
            let received = gb.pending_channels.len();
            let expected = sum_num.map(|n| n.min(MAX_CHANNELS));
            if expected.is_some_and(|n| received >= n) {
                gb.channels = std::mem::take(&mut gb.pending_channels);
                gb.catalog = CatalogStatus::Complete {
                    sn,
                    at_unix: now.unix_secs,
                };
                None
            } else {
                gb.catalog = CatalogStatus::Pending {
                    sn,
                    received,
                    expected,
                };
                fresh.then(|| key.clone())
            }
        });
        if let Some(aor) = started {
            // A device-initiated catalog (no query of ours) still gets a deadline.
            out.timers.push(Timer {
                deadline_ms: now.mono_ms + timeout,
                event: TimerEvent::CatalogTimeout { aor, sn },
            });
        }
        over_cap
    }

    /// A response from a device to one of our requests: a final response ends
    /// the client transaction (RFC 3261 §17.1.2.2). `None` when it is not ours.
    pub fn handle_response(&self, msg: &Message<'_>) -> Option<u16> {
        let StartLine::Response(status) = msg.start else {
            return None;
        };
        let tx = msg
            .top_via()
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch())
            .and_then(parse_branch)?;
        if status.code < 200 {
            return Some(status.code);
        }
        let done = self.transactions.lock().remove(&tx)?;
        if status.code >= 300 {
            log::info!(
                "device {} answered {} query SN {} with {}",
                String::from_utf8_lossy(&done.aor),
                done.kind.cmd_type(),
                done.sn,
                status.code
            );
        }
        Some(status.code)
    }

    /// Handles a GB28181 timer; returns a timer to re-arm, if any.
    pub fn on_timer(&self, event: &TimerEvent, now_ms: u64) -> Option<(u64, TimerEvent)> {
        match event {
            TimerEvent::KeepaliveTimeout { aor, generation } => {
                self.registry.modify(aor, |d| {
                    if d.gb().keepalive_generation != *generation {
                        return None;
                    }
                    let gb = d.gb_mut();
                    match gb.keepalive_deadline_ms {
                        // Keep-alives came since it was armed: wait for the newest.
                        Some(deadline_ms) if gb.online && deadline_ms > now_ms => {
                            gb.keepalive_timer_ms = Some(deadline_ms);
                            Some((deadline_ms, event.clone()))
                        }
                        _ => {
                            gb.keepalive_timer_ms = None;
                            if gb.online {
                                gb.online = false;
                                WorkerStats::inc(&self.stats.went_offline);
                                log::info!(
                                    "device {} offline: no keep-alive",
                                    String::from_utf8_lossy(aor)
                                );
                            }
                            None
                        }
                    }
                })
            }
            TimerEvent::CatalogTimeout { aor, sn } => {
                self.registry.modify(aor, |d| catalog_timed_out(d, *sn));
                None
            }
            TimerEvent::Retransmit { tx } => {
                let mut txs = self.transactions.lock();
                let t = txs.get_mut(tx)?;
                let (dest, bytes) = (t.dest, t.bytes.clone());
                t.interval_ms = (t.interval_ms * 2).min(T2_MS);
                let next = now_ms + t.interval_ms;
                drop(txs);
                WorkerStats::inc(&self.stats.query_retransmissions);
                self.send(dest, bytes);
                Some((next, TimerEvent::Retransmit { tx: *tx }))
            }
            TimerEvent::TransactionTimeout { tx } => {
                let t = self.transactions.lock().remove(tx)?;
                log::warn!(
                    "{} query SN {} to {}: no answer (timer F)",
                    t.kind.cmd_type(),
                    t.sn,
                    String::from_utf8_lossy(&t.aor)
                );
                let counter = match t.kind {
                    QueryKind::Catalog => &self.stats.catalog_timeouts,
                    QueryKind::DeviceInfo => &self.stats.info_timeouts,
                };
                WorkerStats::inc(counter);
                if t.kind == QueryKind::Catalog {
                    self.registry.modify(&t.aor, |d| catalog_timed_out(d, t.sn));
                }
                None
            }
            _ => None,
        }
    }

    fn send(&self, dest: Dest, bytes: Vec<u8>) {
        match self.outbox.get() {
            Some(o) => o.send(dest, bytes),
            None => log::warn!("query dropped: transport not started"),
        }
    }

    fn schedule(&self, deadline_ms: u64, event: TimerEvent) {
        let _ = self.timers.send(TimerCmd::At {
            deadline_ms,
            item: event,
        });
    }

    /// The local address a device should answer to: the listen address, or,
    /// when that is unspecified, the one the kernel routes towards the device
    /// (found by connecting a UDP socket; nothing is sent).
    fn local_addr_towards(&self, peer: SocketAddr) -> SocketAddr {
        if !self.cfg.listen.ip().is_unspecified() {
            return self.cfg.listen;
        }
        let probe = UdpSocket::bind((self.cfg.listen.ip(), 0)).and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        });
        match probe {
            Ok(a) => SocketAddr::new(a.ip(), self.cfg.listen.port()),
            Err(_) => self.cfg.listen,
        }
    }
}

/// A keep-alive (or any request) arrived on the flow this binding was made on.
fn same_flow(b: &Binding, inb: &Inbound<'_>) -> bool {
    match (b.transport, inb.transport) {
        (Transport::Udp, Transport::Udp) => b.source == inb.source,
        (Transport::Tcp, Transport::Tcp) => {
            b.conn.map(|c| c.id) == inb.conn.map(|c| c.id) && b.conn.is_some()
        }
        _ => false,
    }
}

fn catalog_timed_out(d: &mut Device, sn: u32) {
    let CatalogStatus::Pending {
        sn: pending,
        received,
        expected,
    } = d.gb().catalog
    else {
        return;
    };
    if pending != sn {
        return;
    }
    let gb = d.gb_mut();
    if received == 0 {
        gb.catalog = CatalogStatus::TimedOut { sn };
        return;
    }
    // Report what arrived without wiping channels it did not mention.
    for c in std::mem::take(&mut gb.pending_channels) {
        let at = gb.channels.iter().position(|o| o.device_id == c.device_id);
        match at {
            Some(i) => gb.channels[i] = c,
            None if gb.channels.len() < MAX_CHANNELS => gb.channels.push(c),
            None => {}
        }
    }
    gb.catalog = CatalogStatus::Partial {
        sn,
        received,
        expected,
    };
}

/// Our branches are `z9hG4bK-sipreg-` + 16 hex digits of the transaction id.
const BRANCH_PREFIX: &[u8] = b"z9hG4bK-sipreg-";

fn parse_branch(branch: &[u8]) -> Option<u64> {
    let hex = branch.strip_prefix(BRANCH_PREFIX)?;
    let text = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(text, 16).ok()
}

impl QuerySender for Platform {
    fn query(&self, device_id: &[u8], kind: QueryKind) -> Result<u32, QueryError> {
        if self.transactions.lock().len() >= MAX_TRANSACTIONS {
            return Err(QueryError::Busy);
        }
        let sn = self.next_sn.fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let target = self.registry.read_keyed(device_id, |d| {
            let (key, d) = d.ok_or(QueryError::UnknownDevice)?;
            // The freshest binding is the flow the device uses now.
            let b = d
                .bindings
                .iter()
                .max_by_key(|b| b.expires_at_ms)
                .ok_or(QueryError::NotRegistered)?;
            let dest = match (b.transport, b.conn) {
                (Transport::Tcp, Some(c)) => Dest::Tcp(c),
                _ => Dest::Udp(b.source),
            };
            Ok((key.clone(), b.uri().to_vec(), b.source, b.transport, dest))
        });
        let (aor, contact, source, transport, dest) = target?;
        if kind == QueryKind::Catalog {
            self.registry.modify(&aor, |d| {
                let gb = d.gb_mut();
                gb.catalog = CatalogStatus::Pending {
                    sn,
                    received: 0,
                    expected: None,
                };
                gb.pending_channels.clear();
            });
        }
        let tx = self.next_tx.fetch_add(1, Ordering::Relaxed);
        let local = self.local_addr_towards(source);
        let id = device_id.split(|&c| c == b'@').next().unwrap_or(device_id);
        let bytes = build_query(
            &self.cfg.platform_id,
            local,
            transport,
            &contact,
            tx,
            sn,
            kind,
            id,
        );
        let interval_ms = T1_MS;
        self.transactions.lock().insert(
            tx,
            ClientTx {
                aor: aor.clone(),
                kind,
                sn,
                dest,
                bytes: bytes.clone(),
                interval_ms,
            },
        );
        let counter = match kind {
            QueryKind::Catalog => &self.stats.catalog_queries,
            QueryKind::DeviceInfo => &self.stats.info_queries,
        };
        WorkerStats::inc(counter);
        self.send(dest, bytes);
        // RFC 3261 §17.1.2.2: timer E only over unreliable transports.
        if matches!(dest, Dest::Udp(_)) {
            self.schedule(now + interval_ms, TimerEvent::Retransmit { tx });
        }
        self.schedule(now + TIMER_F_MS, TimerEvent::TransactionTimeout { tx });
        if kind == QueryKind::Catalog {
            self.schedule(
                now + self.cfg.query_timeout_ms,
                TimerEvent::CatalogTimeout { aor, sn },
            );
        }
        Ok(sn)
    }
}

/// `MESSAGE` carrying a MANSCDP `<Query>` (GB/T 28181 §9.5.1, Annex A.2.4).
#[allow(clippy::too_many_arguments)]
fn build_query(
    platform_id: &str,
    local: SocketAddr,
    transport: Transport,
    contact: &[u8],
    tx: u64,
    sn: u32,
    kind: QueryKind,
    device_id: &[u8],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    body.extend_from_slice(b"<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>");
    body.extend_from_slice(kind.cmd_type().as_bytes());
    body.extend_from_slice(b"</CmdType>\r\n<SN>");
    push_u64(&mut body, u64::from(sn));
    body.extend_from_slice(b"</SN>\r\n<DeviceID>");
    body.extend_from_slice(device_id);
    body.extend_from_slice(b"</DeviceID>\r\n</Query>\r\n");

    let tx_hex = format!("{tx:016x}");
    let proto = match transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    let mut m = Vec::with_capacity(512 + body.len());
    m.extend_from_slice(b"MESSAGE ");
    m.extend_from_slice(contact);
    m.extend_from_slice(b" SIP/2.0\r\n");
    m.extend_from_slice(format!("Via: SIP/2.0/{proto} {local};rport;branch=").as_bytes());
    m.extend_from_slice(BRANCH_PREFIX);
    m.extend_from_slice(tx_hex.as_bytes());
    m.extend_from_slice(
        format!(
            "\r\nFrom: <sip:{platform_id}@{local}>;tag={}\r\n",
            &tx_hex[8..]
        )
        .as_bytes(),
    );
    m.extend_from_slice(b"To: <");
    m.extend_from_slice(contact);
    m.extend_from_slice(b">\r\n");
    m.extend_from_slice(
        format!("Call-ID: {tx_hex}@sipreg\r\nCSeq: {sn} MESSAGE\r\nMax-Forwards: 70\r\n")
            .as_bytes(),
    );
    m.extend_from_slice(b"Content-Type: Application/MANSCDP+xml\r\nContent-Length: ");
    push_u64(&mut m, body.len() as u64);
    m.extend_from_slice(b"\r\n\r\n");
    m.extend_from_slice(&body);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::scan;

    #[test]
    fn query_message_scans_and_carries_our_branch() {
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let m = build_query(
            DEFAULT_PLATFORM_ID,
            local,
            Transport::Udp,
            b"sip:34020000001320000001@127.0.0.1:5070",
            0xabc,
            7,
            QueryKind::Catalog,
            b"34020000001320000001",
        );
        let msg = scan(&m).expect("our MESSAGE scans");
        assert_eq!(
            msg.request().unwrap().uri,
            b"sip:34020000001320000001@127.0.0.1:5070"
        );
        let via = Via::parse(msg.top_via().unwrap()).unwrap();
        assert_eq!(parse_branch(via.branch().unwrap()), Some(0xabc));
        assert_eq!(msg.cseq().seq, 7);
        assert!(matches!(
            xml::parse(msg.body),
            Ok(Manscdp::Other { ref root, ref cmd_type }) if root == "Query" && cmd_type == "Catalog"
        ));
        assert_eq!(parse_branch(b"z9hG4bK-other"), None);
    }
}
