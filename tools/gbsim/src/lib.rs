//! gbsim: a GB28181 device simulator for sipreg.
//!
//! N devices, each with its own UDP socket (or TCP connection) on 127.0.0.1,
//! register with digest auth, refresh before expiry, send MANSCDP keep-alives
//! every K seconds and answer the platform's Catalog (split over several
//! MESSAGEs, optionally GB2312) and DeviceInfo queries.
//!
//! In-process use (integration tests):
//!
//! ```no_run
//! let mut cfg = gbsim::SimConfig::new("127.0.0.1:5060".parse().unwrap());
//! cfg.devices = 10;
//! let sim = gbsim::spawn(cfg).unwrap();
//! // … drive the server, look at sim.summary() …
//! let summary = sim.stop();
//! assert_eq!(summary.registered_ok, 10);
//! ```
//!
//! [`msg`] (message building/parsing) and [`device`] (per-device state machine)
//! are sans-IO; [`io`] holds the socket loops.

pub mod cli;
pub mod device;
pub mod io;
pub mod msg;
pub mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use msg::Transport;
pub use stats::Summary;

use device::DeviceParams;
use stats::Stats;

/// Everything a run needs; [`SimConfig::new`] gives the CLI defaults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The registrar; must be a loopback address.
    pub server: SocketAddr,
    pub devices: u32,
    /// Ids are `id_prefix` + the index zero-padded to 20 digits.
    pub id_prefix: String,
    /// Index of the first device (the rest follow consecutively).
    pub first_index: u64,
    pub password: String,
    /// Expected digest realm (the challenge's realm is what is used; a
    /// different one is reported as an error once per device).
    pub realm: String,
    /// The platform id in the Request-URI `sip:{platform}@server`.
    pub platform_id: String,
    pub expires: u32,
    pub keepalive_interval: Duration,
    pub channels: u32,
    pub catalog_split: u32,
    pub gb2312: bool,
    pub transport: Transport,
    /// End of the run; `None` runs until [`SimHandle::stop`].
    pub duration: Option<Duration>,
    /// Stop sending keep-alives this long after each device started.
    pub silent_after: Option<Duration>,
    /// With `silent_after`: only the first this-many devices fall silent (all by default).
    pub silent_devices: Option<u32>,
    /// Never answer queries (no 200, no Response MESSAGE).
    pub no_answer: bool,
    /// Devices start spread evenly over this time.
    pub ramp: Duration,
    /// Un-REGISTER (Expires: 0) when the run ends.
    pub unregister: bool,
    /// Print the summary as JSON (CLI only).
    pub json: bool,
    /// Stack size of each device thread.
    pub stack_size: usize,
}

impl SimConfig {
    pub fn new(server: SocketAddr) -> SimConfig {
        SimConfig {
            server,
            devices: 1,
            id_prefix: "3402000000132".into(),
            first_index: 1,
            password: "secret".into(),
            realm: "sipreg".into(),
            platform_id: "34020000002000000001".into(),
            expires: 3600,
            keepalive_interval: Duration::from_secs(60),
            channels: 16,
            catalog_split: 8,
            gb2312: false,
            transport: Transport::Udp,
            duration: None,
            silent_after: None,
            silent_devices: None,
            no_answer: false,
            ramp: Duration::ZERO,
            unregister: false,
            json: false,
            stack_size: 256 * 1024,
        }
    }

    /// The id of device `i` (0-based position in this run).
    pub fn device_id(&self, i: u32) -> Option<String> {
        msg::device_id(&self.id_prefix, self.first_index + u64::from(i))
    }

    /// Every device id of the run, in order.
    pub fn device_ids(&self) -> Vec<String> {
        (0..self.devices)
            .filter_map(|i| self.device_id(i))
            .collect()
    }

    /// Checks what the run relies on: a loopback server, valid 20-digit ids.
    pub fn validate(&self) -> Result<(), String> {
        if !self.server.ip().is_loopback() {
            return Err(format!(
                "refusing non-loopback server {} (gbsim only talks to 127.0.0.1/::1)",
                self.server
            ));
        }
        if self.server.port() == 0 {
            return Err("server port must not be 0".into());
        }
        if self.devices == 0 {
            return Err("--devices must be at least 1".into());
        }
        if self.device_id(0).is_none() || self.device_id(self.devices - 1).is_none() {
            return Err(format!(
                "--id-prefix {:?} with {} devices from index {} does not give 20-digit ids",
                self.id_prefix, self.devices, self.first_index
            ));
        }
        if self.catalog_split == 0 {
            return Err("--catalog-split must be at least 1".into());
        }
        if self.keepalive_interval.is_zero() {
            return Err("--keepalive-interval must be positive".into());
        }
        if self.platform_id.is_empty() {
            return Err("--platform-id must not be empty".into());
        }
        Ok(())
    }
}

/// A running simulation.
pub struct SimHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<Stats>,
    started: Instant,
    devices: u64,
    ids: Vec<String>,
}

impl SimHandle {
    /// A snapshot of the counters so far.
    pub fn summary(&self) -> Summary {
        self.stats
            .summary(self.devices, self.started.elapsed().as_secs_f64())
    }

    /// The simulated device ids, in order.
    pub fn device_ids(&self) -> &[String] {
        &self.ids
    }

    /// Whether every device thread has ended (the duration passed).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Ends every device now (un-registering first when configured) and
    /// returns the totals.
    pub fn stop(self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Waits for the configured duration to end (forever without one).
    pub fn wait(mut self) -> Summary {
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.stats
            .summary(self.devices, self.started.elapsed().as_secs_f64())
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts every device on its own thread and returns at once.
pub fn spawn(cfg: SimConfig) -> Result<SimHandle, String> {
    cfg.validate()?;
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = cfg.duration.map(|d| started + d);
    let ids = cfg.device_ids();
    let mut threads = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let i = i as u32;
        let silent = cfg.silent_devices.is_none_or(|n| i < n);
        let p = DeviceParams {
            id: id.clone(),
            index: cfg.first_index + u64::from(i),
            platform_id: cfg.platform_id.clone(),
            password: cfg.password.clone(),
            realm: cfg.realm.clone(),
            expires: cfg.expires,
            keepalive_interval: cfg.keepalive_interval,
            channels: cfg.channels,
            catalog_split: cfg.catalog_split,
            gb2312: cfg.gb2312,
            transport: cfg.transport,
            silent_after: cfg.silent_after.filter(|_| silent),
            no_answer: cfg.no_answer,
            server: cfg.server,
        };
        let ctl = io::Control {
            stop: stop.clone(),
            start_at: started + cfg.ramp.mul_f64(f64::from(i) / f64::from(cfg.devices)),
            deadline,
            unregister: cfg.unregister,
        };
        let st = stats.clone();
        let t = std::thread::Builder::new()
            .name(format!("gbsim-{i}"))
            .stack_size(cfg.stack_size)
            .spawn(move || io::run_device(p, st, ctl));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    let _ = t.join();
                }
                return Err(format!("cannot start device thread {i}: {e}"));
            }
        }
    }
    Ok(SimHandle {
        stop,
        threads,
        stats,
        started,
        devices: u64::from(cfg.devices),
        ids,
    })
}

/// Runs a whole simulation to the end of its duration and returns the totals.
/// Without a duration it runs until the process ends, so callers that need to
/// stop it use [`spawn`] and [`SimHandle::stop`].
pub fn run(cfg: SimConfig) -> Result<Summary, String> {
    Ok(spawn(cfg)?.wait())
}
