//! Counters and latency histograms: one [`Stats`] per worker thread, merged at
//! the end; [`Live`] carries running totals to the progress line; [`Report`]
//! is the final figures as a table or JSON.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::flow::{Failure, Kind, Leg};

/// Highest status code counted individually (6xx is the last class).
const MAX_STATUS: usize = 699;
/// Histograms track 1 µs to 120 s with 3 significant digits.
const MAX_LATENCY_US: u64 = 120_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, MAX_LATENCY_US);
    // Cannot fail: the value is clamped into the histogram's range.
    let _ = h.record(us);
}

#[derive(Debug, Clone)]
pub struct Stats {
    /// Whole flows (a digest registration is one sample).
    pub flows: Histogram<u64>,
    pub kinds: Vec<Histogram<u64>>,
    pub legs: Vec<Histogram<u64>>,
    /// Every response received, by status code.
    pub status: Vec<u64>,
    /// Flows started.
    pub started: u64,
    /// Flows that ended with the expected answer.
    pub completed: u64,
    /// Flows that ended with an unexpected answer, by reason.
    pub failed: [u64; 4],
    /// Legs that got no final answer within 64·T1 or before the run ended.
    pub timeouts: u64,
    pub retransmissions: u64,
    /// Requests sent, retransmissions excluded.
    pub messages_sent: u64,
    pub responses: u64,
    /// Socket errors (send/recv failures, dropped connections).
    pub io_errors: u64,
    /// Responses that did not scan or did not name one of our transactions.
    pub bad_responses: u64,
    /// Responses to a leg already finished (answers to retransmissions).
    pub duplicates: u64,
    /// Open-loop starts skipped because every device was busy.
    pub skipped_starts: u64,
    /// Refreshes that fell back to a new challenge.
    pub rechallenges: u64,
    /// Latency over time (`--series-ms`), when asked for.
    pub series: Option<Series>,
}

/// One process-wide origin for [`Series`], so every worker's intervals line up:
/// the `Instant` and the Unix time it stands for.
fn series_origin() -> (Instant, f64) {
    static ORIGIN: OnceLock<(Instant, f64)> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        (Instant::now(), unix)
    })
}

/// Flow latency per interval of the flows' start times (`--series-ms`): shows
/// how latency moved during a run, e.g. while the server expired a million
/// bindings (perf/expiry.sh). Two significant digits per interval.
#[derive(Debug, Clone)]
pub struct Series {
    step: Duration,
    bins: Vec<Histogram<u64>>,
}

impl Series {
    pub fn new(step: Duration) -> Self {
        series_origin();
        Series {
            step: step.max(Duration::from_millis(1)),
            bins: Vec::new(),
        }
    }

    /// Records a flow that started at `start` and waited `latency`.
    pub fn record(&mut self, start: Instant, latency: Duration) {
        let since = start.saturating_duration_since(series_origin().0);
        let i = (since.as_nanos() / self.step.as_nanos()) as usize;
        if self.bins.len() <= i {
            self.bins.resize_with(i + 1, || {
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                    .expect("static histogram bounds are valid")
            });
        }
        record(&mut self.bins[i], latency);
    }

    fn merge(&mut self, o: &Series) {
        if self.bins.len() < o.bins.len() {
            self.bins.resize_with(o.bins.len(), || {
                Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                    .expect("static histogram bounds are valid")
            });
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            let _ = a.add(b);
        }
    }

    /// `{"step_ms", "origin_unix", "bins": [{"t": Unix start of the interval,
    /// "count", "p50", "p99", "max"}]}`, empty intervals left out.
    pub fn to_json(&self) -> Value {
        let origin = series_origin().1;
        let bins: Vec<Value> = self
            .bins
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(i, h)| {
                json!({
                    "t": round3(origin + i as f64 * self.step.as_secs_f64()),
                    "count": h.len(),
                    "p50": h.value_at_quantile(0.5),
                    "p99": h.value_at_quantile(0.99),
                    "max": h.max(),
                })
            })
            .collect();
        json!({"step_ms": self.step.as_millis() as u64, "origin_unix": round3(origin), "bins": bins})
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            flows: histogram(),
            kinds: (0..Kind::ALL.len()).map(|_| histogram()).collect(),
            legs: (0..Leg::COUNT).map(|_| histogram()).collect(),
            status: vec![0; MAX_STATUS + 1],
            started: 0,
            completed: 0,
            failed: [0; 4],
            timeouts: 0,
            retransmissions: 0,
            messages_sent: 0,
            responses: 0,
            io_errors: 0,
            bad_responses: 0,
            duplicates: 0,
            skipped_starts: 0,
            rechallenges: 0,
            series: None,
        }
    }
}

fn failure_index(f: Failure) -> usize {
    match f {
        Failure::Status => 0,
        Failure::BadChallenge => 1,
        Failure::Rejected => 2,
        Failure::NoCredentials => 3,
    }
}

const FAILURES: [Failure; 4] = [
    Failure::Status,
    Failure::BadChallenge,
    Failure::Rejected,
    Failure::NoCredentials,
];

fn kind_index(k: Kind) -> usize {
    Kind::ALL.iter().position(|&x| x == k).unwrap_or(0)
}

impl Stats {
    pub fn status(&mut self, code: u16) {
        self.responses += 1;
        if let Some(c) = self.status.get_mut(usize::from(code)) {
            *c += 1;
        }
    }

    pub fn leg_done(&mut self, leg: Leg, latency: Duration) {
        record(&mut self.legs[leg.index()], latency);
    }

    pub fn flow_ok(&mut self, kind: Kind, latency: Duration) {
        self.completed += 1;
        record(&mut self.flows, latency);
        record(&mut self.kinds[kind_index(kind)], latency);
    }

    pub fn flow_failed(&mut self, f: Failure) {
        self.failed[failure_index(f)] += 1;
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.iter().sum()
    }

    /// Everything that counts as an error in the report.
    pub fn errors(&self) -> u64 {
        self.failed_total() + self.io_errors + self.bad_responses
    }

    pub fn merge(&mut self, o: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.flows.add(&o.flows);
        for (a, b) in self.kinds.iter_mut().zip(&o.kinds) {
            let _ = a.add(b);
        }
        for (a, b) in self.legs.iter_mut().zip(&o.legs) {
            let _ = a.add(b);
        }
        for (a, b) in self.status.iter_mut().zip(&o.status) {
            *a += b;
        }
        for (a, b) in self.failed.iter_mut().zip(&o.failed) {
            *a += b;
        }
        self.started += o.started;
        self.completed += o.completed;
        self.timeouts += o.timeouts;
        self.retransmissions += o.retransmissions;
        self.messages_sent += o.messages_sent;
        self.responses += o.responses;
        self.io_errors += o.io_errors;
        self.bad_responses += o.bad_responses;
        self.duplicates += o.duplicates;
        self.skipped_starts += o.skipped_starts;
        self.rechallenges += o.rechallenges;
        match (&mut self.series, &o.series) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.series = Some(b.clone()),
            _ => {}
        }
    }
}

/// p50/p90/p99/p99.9/max in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    fn json(&self) -> Value {
        json!({"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99,
               "p999": self.p999, "max": self.max})
    }
}

/// Running totals one worker publishes for the progress line (relaxed
/// stores of its own counters; one cache line per worker).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LiveSlot {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
    pub retransmissions: AtomicU64,
}

impl LiveSlot {
    pub fn publish(&self, s: &Stats) {
        self.started.store(s.started, Ordering::Relaxed);
        self.completed.store(s.completed, Ordering::Relaxed);
        self.timeouts.store(s.timeouts, Ordering::Relaxed);
        self.errors.store(s.errors(), Ordering::Relaxed);
        self.retransmissions
            .store(s.retransmissions, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveTotals {
    pub started: u64,
    pub completed: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub retransmissions: u64,
}

pub fn sum_live(slots: &[LiveSlot]) -> LiveTotals {
    let mut t = LiveTotals::default();
    for s in slots {
        t.started += s.started.load(Ordering::Relaxed);
        t.completed += s.completed.load(Ordering::Relaxed);
        t.timeouts += s.timeouts.load(Ordering::Relaxed);
        t.errors += s.errors.load(Ordering::Relaxed);
        t.retransmissions += s.retransmissions.load(Ordering::Relaxed);
    }
    t
}

/// One progress line: totals and the last interval's rates.
pub fn progress_line(
    elapsed: Duration,
    now: LiveTotals,
    before: LiveTotals,
    dt: Duration,
) -> String {
    let per_s = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / dt.as_secs_f64().max(1e-9);
    format!(
        "[{:>5.1}s] started {:>9.0}/s  completed {:>9.0}/s  total {}  outstanding {}  timeouts {}  errors {}  retrans {}",
        elapsed.as_secs_f64(),
        per_s(now.started, before.started),
        per_s(now.completed, before.completed),
        now.completed,
        now.started.saturating_sub(now.completed + now.timeouts + now.errors),
        now.timeouts,
        now.errors,
        now.retransmissions,
    )
}

/// Warm-up (refresh scenarios) summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Warmup {
    pub devices: u64,
    pub registered: u64,
    pub seconds: f64,
}

/// Final figures of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub transport: &'static str,
    pub load: String,
    pub threads: usize,
    pub sockets: usize,
    pub mmsg: bool,
    pub devices: usize,
    /// Length of the measured phase (start of first flow → last answer).
    pub duration_s: f64,
    pub client_cpu_s: f64,
    pub warmup: Option<Warmup>,
    pub stats: Stats,
}

impl Report {
    pub fn rate_per_s(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.stats.completed as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// Generator CPU per completed flow, in microseconds.
    pub fn cpu_us_per_flow(&self) -> f64 {
        if self.stats.completed == 0 {
            0.0
        } else {
            self.client_cpu_s * 1e6 / self.stats.completed as f64
        }
    }

    fn status_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (code, &n) in self.stats.status.iter().enumerate() {
            if n > 0 {
                m.insert(code.to_string(), json!(n));
            }
        }
        m
    }

    pub fn to_json(&self) -> Value {
        let s = &self.stats;
        let lat = Percentiles::of(&s.flows);
        let mut legs = Map::new();
        for leg in Leg::ALL {
            let p = Percentiles::of(&s.legs[leg.index()]);
            if p.count > 0 {
                legs.insert(leg.name().into(), p.json());
            }
        }
        let mut kinds = Map::new();
        for (i, k) in Kind::ALL.iter().enumerate() {
            let p = Percentiles::of(&s.kinds[i]);
            if p.count > 0 {
                kinds.insert(k.name().into(), p.json());
            }
        }
        let mut failed = Map::new();
        for f in FAILURES {
            let n = s.failed[failure_index(f)];
            if n > 0 {
                failed.insert(f.name().into(), json!(n));
            }
        }
        let mut v = json!({
            "scenario": self.scenario,
            "transport": self.transport,
            "load": self.load,
            "threads": self.threads,
            "sockets": self.sockets,
            "mmsg": self.mmsg,
            "devices": self.devices,
            "duration_s": round3(self.duration_s),
            "sent": s.started,
            "completed": s.completed,
            "rate_per_s": round3(self.rate_per_s()),
            "status_counts": self.status_json(),
            "timeouts": s.timeouts,
            "retransmissions": s.retransmissions,
            "errors": s.errors(),
            "errors_detail": {
                "failed_flows": failed,
                "io": s.io_errors,
                "bad_responses": s.bad_responses,
            },
            "latency_us": {"p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "p999": lat.p999, "max": lat.max},
            "legs_latency_us": legs,
            "kinds_latency_us": kinds,
            "messages_sent": s.messages_sent,
            "responses": s.responses,
            "duplicates": s.duplicates,
            "skipped_starts": s.skipped_starts,
            "rechallenges": s.rechallenges,
            "client_cpu_s": round3(self.client_cpu_s),
            "client_cpu_us_per_flow": round3(self.cpu_us_per_flow()),
        });
        if let (Some(series), Some(obj)) = (&s.series, v.as_object_mut()) {
            obj.insert("series".into(), series.to_json());
        }
        if let (Some(w), Some(obj)) = (self.warmup, v.as_object_mut()) {
            obj.insert(
                "warmup".into(),
                json!({"devices": w.devices, "registered": w.registered, "seconds": round3(w.seconds)}),
            );
        }
        v
    }

    pub fn to_table(&self) -> String {
        let s = &self.stats;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "sipload {} over {} ({}, {} threads, {} sockets, {}, {} devices)",
            self.scenario,
            self.transport,
            self.load,
            self.threads,
            self.sockets,
            if self.mmsg {
                "sendmmsg/recvmmsg"
            } else {
                "send/recv"
            },
            self.devices
        );
        if let Some(w) = self.warmup {
            let _ = writeln!(
                t,
                "  warm-up           {} of {} devices registered in {:.2} s",
                w.registered, w.devices, w.seconds
            );
        }
        let _ = writeln!(t, "  duration          {:.3} s", self.duration_s);
        let _ = writeln!(t, "  flows started     {}", s.started);
        let _ = writeln!(t, "  completed         {}", s.completed);
        let _ = writeln!(t, "  rate              {:.1} /s", self.rate_per_s());
        let _ = writeln!(t, "  timeouts          {}", s.timeouts);
        let _ = writeln!(
            t,
            "  errors            {} (failed flows {}, io {}, bad responses {})",
            s.errors(),
            s.failed_total(),
            s.io_errors,
            s.bad_responses
        );
        let _ = writeln!(t, "  retransmissions   {}", s.retransmissions);
        let _ = writeln!(
            t,
            "  messages          {} sent, {} responses, {} duplicates",
            s.messages_sent, s.responses, s.duplicates
        );
        if s.skipped_starts > 0 {
            let _ = writeln!(
                t,
                "  skipped starts    {} (all devices busy)",
                s.skipped_starts
            );
        }
        if s.rechallenges > 0 {
            let _ = writeln!(t, "  re-challenges     {}", s.rechallenges);
        }
        let codes: Vec<String> = self
            .status_json()
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(t, "  status codes      {}", codes.join(", "));
        let _ = writeln!(
            t,
            "  client CPU        {:.3} s ({:.2} µs per flow)",
            self.client_cpu_s,
            self.cpu_us_per_flow()
        );
        let _ = writeln!(
            t,
            "  latency µs        {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, p: Percentiles| {
            let _ = writeln!(
                t,
                "    {:<22}{:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                name, p.count, p.p50, p.p90, p.p99, p.p999, p.max
            );
        };
        row("flow", Percentiles::of(&s.flows));
        for leg in Leg::ALL {
            let p = Percentiles::of(&s.legs[leg.index()]);
            if p.count > 0 {
                row(&format!("leg {}", leg.name()), p);
            }
        }
        t
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut s = Stats::default();
        for us in 1..=1000u64 {
            s.flow_ok(Kind::Options, Duration::from_micros(us));
        }
        let p = Percentiles::of(&s.flows);
        assert_eq!(p.count, 1000);
        // 3 significant digits: within 0.1 % of the exact order statistics.
        let near = |got: u64, want: u64| got.abs_diff(want) <= want / 1000 + 1;
        assert!(near(p.p50, 500), "{p:?}");
        assert!(near(p.p90, 900), "{p:?}");
        assert!(near(p.p99, 990), "{p:?}");
        assert!(near(p.p999, 999), "{p:?}");
        assert!(near(p.max, 1000), "{p:?}");
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
    }

    #[test]
    fn series_bins_by_start_time_and_merges() {
        let step = Duration::from_millis(100);
        let (origin, unix) = series_origin();
        let mut a = Series::new(step);
        let mut b = Series::new(step);
        a.record(
            origin + Duration::from_millis(50),
            Duration::from_micros(100),
        );
        a.record(
            origin + Duration::from_millis(250),
            Duration::from_micros(300),
        );
        b.record(
            origin + Duration::from_millis(260),
            Duration::from_micros(5000),
        );
        a.merge(&b);
        let v = a.to_json();
        assert_eq!(v["step_ms"], 100);
        let bins = v["bins"].as_array().unwrap();
        // interval 1 (100–200 ms) is empty and left out
        assert_eq!(bins.len(), 2, "{v:#}");
        assert_eq!(bins[0]["count"], 1);
        assert_eq!(bins[1]["count"], 2);
        assert!((bins[1]["t"].as_f64().unwrap() - (unix + 0.2)).abs() < 0.01);
        let max = bins[1]["max"].as_u64().unwrap();
        assert!((4950..=5050).contains(&max), "{max}");
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.started = 3;
        a.flow_ok(Kind::Register, Duration::from_micros(10));
        a.status(200);
        b.started = 2;
        b.flow_ok(Kind::Register, Duration::from_millis(5));
        b.status(200);
        b.status(401);
        b.flow_failed(Failure::Rejected);
        b.io_errors = 1;
        b.timeouts = 4;
        a.merge(&b);
        assert_eq!(a.started, 5);
        assert_eq!(a.completed, 2);
        assert_eq!(a.status[200], 2);
        assert_eq!(a.status[401], 1);
        assert_eq!(a.responses, 3);
        assert_eq!(a.errors(), 2);
        assert_eq!(a.timeouts, 4);
        assert_eq!(a.flows.len(), 2);
        assert!(a.flows.max() >= 4995);
        // A huge latency is clamped, not lost; a zero one counts as 1 µs.
        a.flow_ok(Kind::Options, Duration::from_secs(1000));
        a.flow_ok(Kind::Options, Duration::ZERO);
        assert_eq!(a.flows.len(), 4);
    }

    #[test]
    fn report_json_has_the_contract_fields() {
        let mut s = Stats {
            started: 10,
            ..Default::default()
        };
        for _ in 0..10 {
            s.flow_ok(Kind::Options, Duration::from_micros(100));
            s.status(200);
        }
        let r = Report {
            scenario: "options".into(),
            transport: "udp",
            load: "rate 10/s".into(),
            threads: 1,
            sockets: 1,
            mmsg: true,
            devices: 1,
            duration_s: 2.0,
            client_cpu_s: 0.001,
            warmup: None,
            stats: s,
        };
        assert_eq!(r.rate_per_s(), 5.0);
        assert!((r.cpu_us_per_flow() - 100.0).abs() < 1e-9);
        let v = r.to_json();
        for f in [
            "scenario",
            "transport",
            "duration_s",
            "sent",
            "completed",
            "rate_per_s",
            "status_counts",
            "timeouts",
            "retransmissions",
            "errors",
            "latency_us",
            "client_cpu_s",
        ] {
            assert!(v.get(f).is_some(), "missing {f}");
        }
        assert_eq!(v["status_counts"]["200"], 10);
        assert_eq!(v["latency_us"]["p50"], 100);
        assert!(r.to_table().contains("rate              5.0 /s"));
    }

    #[test]
    fn progress_rates_are_per_second() {
        let a = LiveTotals {
            started: 100,
            completed: 50,
            ..Default::default()
        };
        let b = LiveTotals {
            started: 300,
            completed: 250,
            ..Default::default()
        };
        let line = progress_line(Duration::from_secs(2), b, a, Duration::from_millis(500));
        assert!(line.contains("started       400/s"), "{line}");
        assert!(line.contains("outstanding 50"), "{line}");
    }
}
