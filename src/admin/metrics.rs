//! `GET /metrics`: every counter of [`crate::stats`] and a few gauges from the
//! device table, in the Prometheus text exposition format 0.0.4 (`# HELP`,
//! `# TYPE`, then the samples of that family; every name starts `sipreg_`).
//!
//! Worker counters are summed across workers (each worker is the only writer
//! of its own, so the loads are relaxed and never contend); `requests`,
//! `responses` and `drops` are also given per worker.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;

use super::AdminState;
use crate::stats::{
    read, Drop, TcpClose, TcpReject, WorkerStats, METHOD_LABELS, PARSE_ERROR_LABELS, STATUS_CODES,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Appends families to a `String` (whose `fmt::Write` cannot fail, so the
/// `write!` results are discarded).
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        debug_assert!(
            !help.contains(['\n', '\\']),
            "HELP text needs escaping: {help}"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP sipreg_{name} {help}");
        let _ = writeln!(self.out, "# TYPE sipreg_{name} {kind}");
    }

    /// One sample; label values are this module's own constants, so they need
    /// no escaping (asserted).
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let _ = write!(self.out, "sipreg_{name}");
        for (i, (k, v)) in labels.iter().enumerate() {
            debug_assert!(
                !v.contains(['"', '\\', '\n']),
                "label value needs escaping: {v}"
            );
            let sep = if i == 0 { '{' } else { ',' };
            let _ = write!(self.out, "{sep}{k}=\"{v}\"");
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// What one walk of the device table counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounts {
    pub devices: u64,
    pub bindings: u64,
    pub online: u64,
    pub gb_known: u64,
    pub gb_online: u64,
    pub channels: u64,
}

/// Walks the whole table, one shard read-locked at a time. This is O(devices)
/// per scrape — about a few tens of milliseconds for a million devices on the
/// admin thread, never on a SIP worker — and keeps the gauges exact without a
/// counter that every registrar path would have to maintain.
pub fn table_counts(state: &AdminState) -> TableCounts {
    let mut c = TableCounts::default();
    state.registry.for_each(|_, d| {
        c.devices += 1;
        c.bindings += d.bindings.len() as u64;
        c.online += u64::from(super::api::is_online(d));
        c.gb_known += u64::from(d.gb().known);
        c.gb_online += u64::from(d.gb().known && d.gb().online);
        c.channels += d.gb().channels.len() as u64;
    });
    c
}

fn sum(workers: &[std::sync::Arc<WorkerStats>], f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
    workers.iter().map(|w| read(f(w))).sum()
}

/// Selects one counter of a worker.
type Field = fn(&WorkerStats) -> &AtomicU64;

/// Response class labels, index 0 = 1xx (as `WorkerStats::responses`).
const CLASS_LABELS: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// Appends the whole exposition to `out`.
pub fn render(state: &AdminState, out: &mut String) {
    let t = table_counts(state);
    let w = &state.worker_stats;
    let ts = &state.timer_stats;
    let gb = &state.gb_stats;
    let mut e = Exposition { out };

    e.family(
        "build_info",
        Kind::Gauge,
        "Always 1; the version label names the build.",
    );
    e.sample("build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);

    // --- the device table
    e.single(
        "registrations",
        Kind::Gauge,
        "Location bindings (registered contacts) in the table.",
        t.bindings,
    );
    e.single(
        "devices",
        Kind::Gauge,
        "Devices (addresses-of-record) in the table.",
        t.devices,
    );
    e.single(
        "devices_online",
        Kind::Gauge,
        "Devices online: GB28181 devices by keep-alive, others by a live binding.",
        t.online,
    );
    e.single(
        "gb_devices",
        Kind::Gauge,
        "Known GB28181 devices, online or not.",
        t.gb_known,
    );
    e.single(
        "gb_devices_online",
        Kind::Gauge,
        "GB28181 devices whose keep-alives are current.",
        t.gb_online,
    );
    e.single(
        "gb_channels",
        Kind::Gauge,
        "Catalog channels stored for all devices.",
        t.channels,
    );

    // --- table sizes (--expected-devices)
    let nc = &state.nonce_counts;
    e.single(
        "registry_capacity",
        Kind::Gauge,
        "Devices the table's shards have room for before they grow (--expected-devices pre-sizes it).",
        state.registry.capacity() as u64,
    );
    e.single(
        "nonce_table_capacity",
        Kind::Gauge,
        "Most nonces tracked for qop nonce-counts and one-time nonces (allocated on demand).",
        nc.capacity() as u64,
    );
    e.single(
        "nonce_table_entries",
        Kind::Gauge,
        "Nonces tracked now.",
        nc.len() as u64,
    );
    e.single(
        "nonce_table_full_total",
        Kind::Counter,
        "Right digests re-challenged with stale=true because the nonce table was full.",
        nc.full_total(),
    );

    // --- SIP traffic, summed over workers
    e.family(
        "requests_total",
        Kind::Counter,
        "SIP requests received, by method.",
    );
    for (i, m) in METHOD_LABELS.iter().enumerate() {
        e.sample(
            "requests_total",
            &[("method", m)],
            sum(w, |s| &s.requests[i]),
        );
    }
    e.family(
        "responses_total",
        Kind::Counter,
        "SIP responses sent, by status class.",
    );
    for (i, c) in CLASS_LABELS.iter().enumerate() {
        e.sample(
            "responses_total",
            &[("class", c)],
            sum(w, |s| &s.responses[i]),
        );
    }
    e.family(
        "responses_by_code_total",
        Kind::Counter,
        "SIP responses sent, by status code (\"other\" for the rest).",
    );
    for i in 0..=STATUS_CODES.len() {
        let code = STATUS_CODES
            .get(i)
            .map_or_else(|| "other".to_string(), u16::to_string);
        e.sample(
            "responses_by_code_total",
            &[("code", &code)],
            sum(w, |s| &s.responses_by_code[i]),
        );
    }
    e.family(
        "parse_errors_by_reason_total",
        Kind::Counter,
        "Malformed requests answered 4xx/5xx, by what was wrong.",
    );
    for (i, reason) in PARSE_ERROR_LABELS.iter().enumerate() {
        e.sample(
            "parse_errors_by_reason_total",
            &[("reason", reason)],
            sum(w, |s| &s.parse_errors_by_reason[i]),
        );
    }
    e.family(
        "drops_total",
        Kind::Counter,
        "Messages dropped without an answer, by reason.",
    );
    for d in Drop::ALL {
        e.sample(
            "drops_total",
            &[("reason", d.label())],
            sum(w, |s| &s.drops[d as usize]),
        );
    }
    let counters: [(&str, &str, Field); 14] = [
        (
            "parse_errors_total",
            "Requests answered 4xx/5xx because they were malformed.",
            |s| &s.parse_errors,
        ),
        (
            "auth_challenges_total",
            "Digest challenges sent (401).",
            |s| &s.auth_challenges,
        ),
        (
            "auth_failures_total",
            "Requests refused for bad or unknown credentials.",
            |s| &s.auth_failures,
        ),
        (
            "auth_lockouts_total",
            "Lockouts begun by the brute-force guard (--auth-fail-limit), per source or user.",
            |s| &s.auth_lockouts,
        ),
        (
            "auth_locked_rejections_total",
            "Requests answered 403 because their source or user was locked out.",
            |s| &s.auth_locked_rejections,
        ),
        (
            "retransmissions_total",
            "Retransmitted requests answered from the transaction cache.",
            |s| &s.retransmissions,
        ),
        (
            "rate_limited_total",
            "Requests answered 503 for exceeding --rate-limit (silent drops are in drops_total).",
            |s| &s.rate_limited,
        ),
        (
            "bindings_added_total",
            "Bindings created by REGISTER.",
            |s| &s.bindings_added,
        ),
        (
            "bindings_refreshed_total",
            "Bindings refreshed by REGISTER.",
            |s| &s.bindings_refreshed,
        ),
        (
            "bindings_removed_total",
            "Bindings removed by REGISTER (expires=0 or wildcard).",
            |s| &s.bindings_removed,
        ),
        ("tcp_accepted_total", "SIP TCP connections accepted.", |s| {
            &s.tcp_accepted
        }),
        (
            "worker_commands_dropped_total",
            "Server-originated requests dropped because a worker's command queue was full.",
            |s| &s.commands_dropped,
        ),
        (
            "timer_queue_waits_total",
            "Times a worker found the timer queue full and waited for it.",
            |s| &s.timer_queue_waits,
        ),
        (
            "udp_send_errors_total",
            "Answers over UDP the kernel refused to send.",
            |s| &s.udp_send_errors,
        ),
    ];
    for (name, help, f) in counters {
        e.single(name, Kind::Counter, help, sum(w, f));
    }

    // --- transport bounds (--tcp-*, --udp-rcvbuf)
    e.single(
        "tcp_connections",
        Kind::Gauge,
        "SIP TCP connections open.",
        sum(w, |s| &s.tcp_open),
    );
    e.family(
        "tcp_rejected_total",
        Kind::Counter,
        "SIP TCP connections closed at accept for being over a cap, by cap.",
    );
    for r in TcpReject::ALL {
        e.sample(
            "tcp_rejected_total",
            &[("reason", r.label())],
            sum(w, |s| &s.tcp_rejected[r as usize]),
        );
    }
    e.family(
        "tcp_closed_total",
        Kind::Counter,
        "SIP TCP connections the server closed, by reason.",
    );
    for c in TcpClose::ALL {
        e.sample(
            "tcp_closed_total",
            &[("reason", c.label())],
            sum(w, |s| &s.tcp_closed[c as usize]),
        );
    }
    // Every worker asks for the same size; the smallest grant is the one
    // that limits a burst.
    e.single(
        "udp_rcvbuf_bytes",
        Kind::Gauge,
        "UDP receive buffer per worker socket as the kernel reports it (SO_RCVBUF; Linux reports twice the usable size).",
        w.iter().map(|s| read(&s.udp_rcvbuf)).min().unwrap_or(0),
    );

    // --- timer thread
    e.single(
        "expirations_total",
        Kind::Counter,
        "Bindings removed because their registration expired.",
        read(&ts.expirations),
    );
    e.single(
        "timer_events_fired_total",
        Kind::Counter,
        "Timer events fired.",
        read(&ts.events_fired),
    );
    e.single(
        "timer_events_stale_total",
        Kind::Counter,
        "Timer events that found their device changed (no-op).",
        read(&ts.events_stale),
    );

    // --- state snapshots (--state)
    let ps = &state.persist;
    e.single(
        "state_saves_total",
        Kind::Counter,
        "Snapshots of the device table written (--state).",
        read(&ps.saves),
    );
    e.single(
        "state_save_failures_total",
        Kind::Counter,
        "Snapshots that failed; the previous one stays in place.",
        read(&ps.save_failures),
    );
    e.single(
        "state_last_save_devices",
        Kind::Gauge,
        "Devices in the latest snapshot.",
        read(&ps.last_save_devices),
    );
    e.single(
        "state_last_save_bytes",
        Kind::Gauge,
        "Size of the latest snapshot.",
        read(&ps.last_save_bytes),
    );
    e.single(
        "state_last_save_microseconds",
        Kind::Gauge,
        "How long the latest snapshot took to write, fsync included.",
        read(&ps.last_save_micros),
    );
    e.single(
        "state_restored_devices",
        Kind::Gauge,
        "Devices restored from the snapshot at start.",
        read(&ps.restored_devices),
    );

    // --- GB28181
    let gb_counters: [(&str, &str, &AtomicU64); 12] = [
        (
            "keepalives_total",
            "GB28181 keep-alives accepted.",
            &gb.keepalives,
        ),
        (
            "keepalives_rejected_total",
            "GB28181 keep-alives refused (unregistered, or from another address).",
            &gb.keepalives_rejected,
        ),
        (
            "gb_notifications_total",
            "Other MANSCDP notifications accepted (Alarm, MediaStatus...).",
            &gb.notifications,
        ),
        (
            "devices_went_offline_total",
            "Times a GB28181 device went offline.",
            &gb.went_offline,
        ),
        (
            "xml_errors_total",
            "MANSCDP bodies refused as malformed XML.",
            &gb.xml_errors,
        ),
        (
            "catalog_queries_total",
            "Catalog queries sent.",
            &gb.catalog_queries,
        ),
        (
            "catalog_timeouts_total",
            "Catalog queries that timed out.",
            &gb.catalog_timeouts,
        ),
        (
            "info_queries_total",
            "DeviceInfo queries sent.",
            &gb.info_queries,
        ),
        (
            "info_timeouts_total",
            "DeviceInfo queries that timed out.",
            &gb.info_timeouts,
        ),
        (
            "query_retransmissions_total",
            "Query retransmissions (RFC 3261 timer E).",
            &gb.query_retransmissions,
        ),
        (
            "gb_answers_refused_total",
            "Catalog/DeviceInfo answers refused: not from the device's registered flow.",
            &gb.answers_refused,
        ),
        (
            "catalog_items_dropped_total",
            "Catalog items dropped beyond the per-message or per-device caps.",
            &gb.catalog_items_dropped,
        ),
    ];
    for (name, help, c) in gb_counters {
        e.single(name, Kind::Counter, help, read(c));
    }

    // --- per worker
    let mut ids = Vec::with_capacity(w.len());
    for i in 0..w.len() {
        ids.push(i.to_string());
    }
    e.family(
        "worker_requests_total",
        Kind::Counter,
        "SIP requests received by each worker.",
    );
    for (id, s) in ids.iter().zip(w) {
        let n = s.requests.iter().map(read).sum();
        e.sample("worker_requests_total", &[("worker", id)], n);
    }
    e.family(
        "worker_responses_total",
        Kind::Counter,
        "SIP responses sent by each worker.",
    );
    for (id, s) in ids.iter().zip(w) {
        let n = s.responses.iter().map(read).sum();
        e.sample("worker_responses_total", &[("worker", id)], n);
    }
    e.family(
        "worker_tcp_connections",
        Kind::Gauge,
        "SIP TCP connections each worker holds open (capped by --tcp-max-connections).",
    );
    for (id, s) in ids.iter().zip(w) {
        e.sample(
            "worker_tcp_connections",
            &[("worker", id)],
            read(&s.tcp_open),
        );
    }
    e.family(
        "worker_drops_total",
        Kind::Counter,
        "Messages each worker dropped without an answer.",
    );
    for (id, s) in ids.iter().zip(w) {
        let n = s.drops.iter().map(read).sum();
        e.sample("worker_drops_total", &[("worker", id)], n);
    }
}
