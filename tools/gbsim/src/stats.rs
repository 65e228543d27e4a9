//! Counters shared by every device thread, and the [`Summary`] they add up to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

/// Most error descriptions kept for the summary (the count is exact).
const MAX_ERROR_SAMPLES: usize = 20;

#[derive(Debug, Default)]
pub struct Stats {
    pub registered_ok: AtomicU64,
    pub registered_now: AtomicU64,
    pub register_sent: AtomicU64,
    pub register_challenged: AtomicU64,
    pub register_failed: AtomicU64,
    pub register_timeouts: AtomicU64,
    pub unregistered: AtomicU64,
    pub keepalives_sent: AtomicU64,
    pub keepalive_timeouts: AtomicU64,
    pub query_retransmits: AtomicU64,
    pub queries_unanswered: AtomicU64,
    pub responses_sent: AtomicU64,
    pub responses_retransmitted: AtomicU64,
    pub responses_timeouts: AtomicU64,
    pub retransmits: AtomicU64,
    pub abandoned: AtomicU64,
    pub errors: AtomicU64,
    keepalive_answers: Mutex<BTreeMap<u16, u64>>,
    response_answers: Mutex<BTreeMap<u16, u64>>,
    register_answers: Mutex<BTreeMap<u16, u64>>,
    queries: Mutex<BTreeMap<String, u64>>,
    error_samples: Mutex<Vec<String>>,
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    *m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(k)
        .or_default() += 1;
}

fn snapshot<K: Ord + ToString>(m: &Mutex<BTreeMap<K, u64>>) -> BTreeMap<String, u64> {
    m.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect()
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn keepalive_answer(&self, code: u16) {
        bump(&self.keepalive_answers, code);
    }

    pub fn response_answer(&self, code: u16) {
        bump(&self.response_answers, code);
    }

    pub fn register_answer(&self, code: u16) {
        bump(&self.register_answers, code);
    }

    pub fn query(&self, kind: &str) {
        bump(&self.queries, kind.to_owned());
    }

    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        let mut s = self.error_samples.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() < MAX_ERROR_SAMPLES {
            s.push(what);
        }
    }

    pub fn summary(&self, devices: u64, elapsed_secs: f64) -> Summary {
        let g = |c: &AtomicU64| c.load(Relaxed);
        Summary {
            devices,
            elapsed_secs,
            registered_ok: g(&self.registered_ok),
            registered_now: g(&self.registered_now),
            register: RegisterSummary {
                sent: g(&self.register_sent),
                challenged: g(&self.register_challenged),
                failed: g(&self.register_failed),
                timeouts: g(&self.register_timeouts),
                unregistered: g(&self.unregistered),
                answers: snapshot(&self.register_answers),
            },
            keepalives: KeepaliveSummary {
                sent: g(&self.keepalives_sent),
                answered: snapshot(&self.keepalive_answers),
                timeouts: g(&self.keepalive_timeouts),
            },
            queries: snapshot(&self.queries),
            query_retransmits: g(&self.query_retransmits),
            queries_unanswered: g(&self.queries_unanswered),
            responses: ResponseSummary {
                sent: g(&self.responses_sent),
                answered: snapshot(&self.response_answers),
                retransmitted: g(&self.responses_retransmitted),
                timeouts: g(&self.responses_timeouts),
            },
            retransmits: g(&self.retransmits),
            abandoned: g(&self.abandoned),
            errors: g(&self.errors),
            error_samples: self
                .error_samples
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Totals of a run (or a snapshot of one in progress).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub devices: u64,
    pub elapsed_secs: f64,
    /// Devices that got a 2xx to at least one REGISTER.
    pub registered_ok: u64,
    /// Devices whose latest registration is in force.
    pub registered_now: u64,
    pub register: RegisterSummary,
    pub keepalives: KeepaliveSummary,
    /// Distinct queries received, by CmdType (retransmissions not counted).
    pub queries: BTreeMap<String, u64>,
    pub query_retransmits: u64,
    /// Queries deliberately left unanswered (`--no-answer`).
    pub queries_unanswered: u64,
    pub responses: ResponseSummary,
    /// UDP retransmissions of any request (timer E).
    pub retransmits: u64,
    /// Transactions still unanswered when the run ended (after a short grace).
    pub abandoned: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegisterSummary {
    /// REGISTER requests sent (challenged ones and refreshes included).
    pub sent: u64,
    pub challenged: u64,
    pub failed: u64,
    pub timeouts: u64,
    pub unregistered: u64,
    /// Final answers by status code.
    pub answers: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeepaliveSummary {
    pub sent: u64,
    /// Final answers by status code.
    pub answered: BTreeMap<String, u64>,
    pub timeouts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseSummary {
    /// Response MESSAGEs (Catalog parts, DeviceInfo) sent, retransmissions excluded.
    pub sent: u64,
    /// Their final answers by status code.
    pub answered: BTreeMap<String, u64>,
    pub retransmitted: u64,
    pub timeouts: u64,
}

impl Summary {
    pub fn keepalives_answered(&self, code: u16) -> u64 {
        self.keepalives
            .answered
            .get(&code.to_string())
            .copied()
            .unwrap_or(0)
    }

    pub fn responses_answered(&self, code: u16) -> u64 {
        self.responses
            .answered
            .get(&code.to_string())
            .copied()
            .unwrap_or(0)
    }

    pub fn queries_of(&self, kind: &str) -> u64 {
        self.queries.get(kind).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The human-readable form printed at the end of a run.
    pub fn to_text(&self) -> String {
        let map = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let mut s = format!(
            "gbsim: {} devices, {:.1} s\n\
             registered ok: {} (now {}), REGISTER sent {} challenged {} failed {} timeouts {} answers {}\n\
             keep-alives: sent {} answered {} timeouts {}\n\
             queries received: {} (retransmitted {}, unanswered {})\n\
             responses: sent {} answered {} retransmitted {} timeouts {}\n\
             retransmits: {}, abandoned at the end: {}, errors: {}\n",
            self.devices,
            self.elapsed_secs,
            self.registered_ok,
            self.registered_now,
            self.register.sent,
            self.register.challenged,
            self.register.failed,
            self.register.timeouts,
            map(&self.register.answers),
            self.keepalives.sent,
            map(&self.keepalives.answered),
            self.keepalives.timeouts,
            map(&self.queries),
            self.query_retransmits,
            self.queries_unanswered,
            self.responses.sent,
            map(&self.responses.answered),
            self.responses.retransmitted,
            self.responses.timeouts,
            self.retransmits,
            self.abandoned,
            self.errors,
        );
        for e in &self.error_samples {
            s.push_str("  error: ");
            s.push_str(e);
            s.push('\n');
        }
        s
    }
}
