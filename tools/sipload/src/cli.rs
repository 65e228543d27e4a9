//! Command line → [`Config`]. Hand-written (no argument crate): every flag is
//! `--name value` or `--name=value`, and `usage()` lists them all.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::flow::Kind;

/// Which scenario drives the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    Register,
    Refresh,
    RegisterNoAuth,
    Options,
    Keepalive,
    /// Weighted mix of the single scenarios, e.g. `register=1,refresh=8`.
    Mixed(Vec<(Kind, u32)>),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Refresh => "refresh",
            Scenario::RegisterNoAuth => "register-noauth",
            Scenario::Options => "options",
            Scenario::Keepalive => "keepalive",
            Scenario::Mixed(_) => "mixed",
        }
    }

    /// The flow kinds and weights this scenario draws from.
    pub fn weights(&self) -> Vec<(Kind, u32)> {
        match self {
            Scenario::Register => vec![(Kind::Register, 1)],
            Scenario::Refresh => vec![(Kind::Refresh, 1)],
            Scenario::RegisterNoAuth => vec![(Kind::RegisterNoAuth, 1)],
            Scenario::Options => vec![(Kind::Options, 1)],
            Scenario::Keepalive => vec![(Kind::Keepalive, 1)],
            Scenario::Mixed(w) => w.clone(),
        }
    }

    /// Whether devices must hold a registration (and a nonce) before the
    /// measured phase starts.
    pub fn needs_warmup(&self) -> bool {
        self.weights()
            .iter()
            .any(|&(k, w)| k == Kind::Refresh && w > 0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Open loop (fixed start rate) or closed loop (bounded outstanding flows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Rate(f64),
    Window(usize),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub target: SocketAddr,
    pub scenario: Scenario,
    pub devices: usize,
    pub user_prefix: String,
    pub password: String,
    pub credentials: Option<PathBuf>,
    pub realm: String,
    /// Request-URI / AOR host; defaults to the target's IP.
    pub domain: String,
    pub load: Load,
    pub duration: Duration,
    /// `--duration` was given (the responder runs until a signal otherwise).
    pub duration_explicit: bool,
    pub count: Option<u64>,
    /// After the start phase, how long outstanding flows may still finish.
    pub drain: Duration,
    pub threads: usize,
    pub sockets: usize,
    pub transport: Transport,
    pub json: bool,
    pub quiet: bool,
    pub allow_non_loopback: bool,
    pub mmsg: bool,
    pub expires: u32,
    /// `--expires-until`: Unix time at which every binding should end; each
    /// REGISTER's Expires is the time left until then (overrides `expires`).
    pub expires_until: Option<Duration>,
    /// Pacing granularity of the open loop: starts due within one tick go out
    /// in one batch.
    pub tick: Duration,
    /// Batch mode: wake only every this long (not per datagram), reading
    /// kernel receive timestamps for exact latency.
    pub batch: Option<Duration>,
    /// `--series-ms`: flow latency per interval of this length in the JSON.
    pub series: Option<Duration>,
    /// Warm-up (refresh scenarios) gives up after this long.
    pub warmup_timeout: Duration,
    /// Responder mode: bind here and answer 200 to everything.
    pub responder: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target: SocketAddr::from(([127, 0, 0, 1], 5060)),
            scenario: Scenario::Register,
            devices: 1000,
            user_prefix: "dev".into(),
            password: "secret".into(),
            credentials: None,
            realm: "sipreg".into(),
            domain: String::new(),
            load: Load::Window(64),
            duration: Duration::from_secs(10),
            duration_explicit: false,
            count: None,
            drain: Duration::from_secs(2),
            threads: 1,
            sockets: 0,
            transport: Transport::Udp,
            json: false,
            quiet: false,
            allow_non_loopback: false,
            mmsg: true,
            expires: 3600,
            expires_until: None,
            tick: Duration::from_micros(100),
            batch: None,
            series: None,
            warmup_timeout: Duration::from_secs(60),
            responder: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

fn err<T>(msg: impl Into<String>) -> Result<T, CliError> {
    Err(CliError(msg.into()))
}

pub fn usage() -> &'static str {
    "\
sipload — SIP load generator for sipreg (plain threads, sendmmsg/recvmmsg)

USAGE:
  sipload --target 127.0.0.1:PORT --scenario SCENARIO [options]
  sipload --responder --listen 127.0.0.1:PORT [--duration S] [--no-mmsg]

SCENARIOS:
  register          per device REGISTER → 401 → REGISTER+digest → 200
  refresh           devices register once (warm-up), then re-REGISTER reusing the
                    nonce with increasing nc; a 401/stale is answered with a new digest
  register-noauth   REGISTER → 200 (server started with --no-auth)
  options           OPTIONS → 200
  keepalive         GB28181 MESSAGE Keepalive (any final response completes it)
  mixed             weighted mix, see --mix

OPTIONS:
  --target ADDR:PORT        server (loopback only unless --allow-non-loopback)
  --scenario NAME           see above (register)
  --mix K=W,...             weights for mixed, e.g. register=1,refresh=8,options=1
  --devices N               distinct devices/AORs (1000)
  --user-prefix P           user name = P + 8-digit index (dev)
  --password PW             shared password (secret)
  --credentials FILE        lines `user:password` or htdigest `user:realm:HA1`;
                            the devices are the listed users
  --realm R                 digest realm for HA1 (sipreg)
  --domain D                AOR / Request-URI host (the target's IP)
  --expires S               Expires of REGISTER (3600)
  --expires-until T         Expires = seconds left until Unix time T (rounded up),
                            so every binding ends in the same second (mass expiry)
  --rate R                  open loop: flows started per second (all threads)
  --window W                closed loop: most outstanding flows (64, the default)
  --duration S              seconds of starting new flows (10)
  --count N                 stop after N flows were started
  --drain S                 after that, wait up to S for outstanding flows (2);
                            whatever is still open then counts as a timeout
  --threads T               worker threads (1)
  --sockets K               source sockets/connections, spread over threads (= threads)
  --transport udp|tcp       (udp)
  --no-mmsg                 plain send/recv instead of sendmmsg/recvmmsg
  --tick-us U               open-loop pacing granularity in µs (100)
  --batch-us U              batch mode: wake every U µs instead of on every
                            datagram; latency from kernel receive timestamps
                            (UDP with mmsg). Cuts generator and server CPU per
                            operation at the price of bursts of rate·U requests
  --warmup-timeout S        refresh warm-up bound (60)
  --series-ms MS            with --json: latency p50/p99/max per MS-long interval
                            of flow start times (JSON field series)
  --json                    one JSON object on stdout instead of the table
  --quiet                   no per-second progress line on stderr
  --allow-non-loopback      permit a target outside 127.0.0.0/8 and ::1
  --responder               run the bare responder instead
  --listen ADDR:PORT        responder address (127.0.0.1:0)
  -h, --help                this text
"
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, CliError> {
    v.parse()
        .or_else(|_| err(format!("{flag}: cannot parse {v:?} as a number")))
}

fn parse_secs(flag: &str, v: &str) -> Result<Duration, CliError> {
    let s: f64 = parse_num(flag, v)?;
    if !s.is_finite() || s < 0.0 {
        return err(format!("{flag}: must be a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

fn parse_kind(name: &str) -> Result<Kind, CliError> {
    Ok(match name {
        "register" => Kind::Register,
        "refresh" => Kind::Refresh,
        "register-noauth" | "noauth" => Kind::RegisterNoAuth,
        "options" => Kind::Options,
        "keepalive" => Kind::Keepalive,
        _ => return err(format!("unknown flow kind {name:?}")),
    })
}

/// Parses `register=1,refresh=8,options=1`.
pub fn parse_mix(v: &str) -> Result<Vec<(Kind, u32)>, CliError> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, w) = part.split_once('=').unwrap_or((part, "1"));
        let kind = parse_kind(k.trim())?;
        let w: u32 = parse_num("--mix", w.trim())?;
        out.push((kind, w));
    }
    if out.iter().all(|&(_, w)| w == 0) {
        return err("--mix: needs at least one positive weight");
    }
    Ok(out)
}

/// Whether `ip` is loopback (127.0.0.0/8, ::1 or ::ffff:127.x).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Config, CliError> {
    let mut c = Config::default();
    let mut target = None;
    let mut scenario = None;
    let mut mix = None;
    let mut rate = None;
    let mut window = None;
    let mut sockets = None;
    let mut responder = false;
    let mut listen = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, CliError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .ok_or_else(|| CliError(format!("{flag}: missing value"))),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return err(usage()),
            "--target" => target = Some(value()?),
            "--scenario" => scenario = Some(value()?),
            "--mix" => mix = Some(parse_mix(&value()?)?),
            "--devices" => c.devices = parse_num(&flag, &value()?)?,
            "--user-prefix" => c.user_prefix = value()?,
            "--password" => c.password = value()?,
            "--credentials" => c.credentials = Some(PathBuf::from(value()?)),
            "--realm" => c.realm = value()?,
            "--domain" => c.domain = value()?,
            "--expires" => c.expires = parse_num(&flag, &value()?)?,
            "--expires-until" => c.expires_until = Some(parse_secs(&flag, &value()?)?),
            "--rate" => rate = Some(parse_num::<f64>(&flag, &value()?)?),
            "--window" => window = Some(parse_num::<usize>(&flag, &value()?)?),
            "--duration" => {
                c.duration = parse_secs(&flag, &value()?)?;
                c.duration_explicit = true;
            }
            "--count" => c.count = Some(parse_num(&flag, &value()?)?),
            "--drain" => c.drain = parse_secs(&flag, &value()?)?,
            "--threads" => c.threads = parse_num(&flag, &value()?)?,
            "--sockets" => sockets = Some(parse_num::<usize>(&flag, &value()?)?),
            "--transport" => {
                c.transport = match value()?.as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    other => return err(format!("--transport: udp or tcp, not {other:?}")),
                }
            }
            "--no-mmsg" => c.mmsg = false,
            "--batch-us" => {
                let us: u64 = parse_num(&flag, &value()?)?;
                c.batch = (us > 0).then(|| Duration::from_micros(us));
            }
            "--tick-us" => c.tick = Duration::from_micros(parse_num(&flag, &value()?)?),
            "--warmup-timeout" => c.warmup_timeout = parse_secs(&flag, &value()?)?,
            "--series-ms" => {
                let ms: u64 = parse_num(&flag, &value()?)?;
                c.series = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--json" => c.json = true,
            "--quiet" => c.quiet = true,
            "--allow-non-loopback" => c.allow_non_loopback = true,
            "--responder" => responder = true,
            "--listen" => listen = Some(value()?),
            other => return err(format!("unknown argument {other:?} (see --help)")),
        }
    }

    if responder {
        let listen = listen.unwrap_or_else(|| "127.0.0.1:0".into());
        let addr: SocketAddr = listen
            .parse()
            .or_else(|_| err(format!("--listen: not an ADDR:PORT: {listen:?}")))?;
        if !is_loopback(addr.ip()) && !c.allow_non_loopback {
            return err(format!(
                "--listen {addr} is not loopback; add --allow-non-loopback to mean it"
            ));
        }
        c.responder = Some(addr);
        return Ok(c);
    }

    let Some(target) = target else {
        return err("--target ADDR:PORT is required (see --help)");
    };
    c.target = target
        .parse()
        .or_else(|_| err(format!("--target: not an ADDR:PORT: {target:?}")))?;
    if !is_loopback(c.target.ip()) && !c.allow_non_loopback {
        return err(format!(
            "refusing to send load to {} (not loopback); add --allow-non-loopback to mean it",
            c.target
        ));
    }
    c.scenario = match scenario.as_deref().unwrap_or("register") {
        "register" => Scenario::Register,
        "refresh" => Scenario::Refresh,
        "register-noauth" => Scenario::RegisterNoAuth,
        "options" => Scenario::Options,
        "keepalive" => Scenario::Keepalive,
        "mixed" => {
            Scenario::Mixed(mix.ok_or_else(|| CliError("--scenario mixed needs --mix".into()))?)
        }
        other => return err(format!("unknown scenario {other:?} (see --help)")),
    };
    c.load = match (rate, window) {
        (Some(_), Some(_)) => return err("give --rate or --window, not both"),
        (Some(r), None) if r > 0.0 && r.is_finite() => Load::Rate(r),
        (Some(_), None) => return err("--rate must be positive"),
        (None, Some(w)) if w > 0 => Load::Window(w),
        (None, Some(_)) => return err("--window must be positive"),
        (None, None) => Load::Window(64),
    };
    if c.threads == 0 {
        return err("--threads must be at least 1");
    }
    if c.devices == 0 && c.credentials.is_none() {
        return err("--devices must be at least 1");
    }
    c.sockets = sockets.unwrap_or(c.threads).max(c.threads);
    if c.domain.is_empty() {
        c.domain = c.target.ip().to_string();
    }
    if c.tick.is_zero() {
        c.tick = Duration::from_micros(1);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn refuses_non_loopback_targets() {
        let e = parse(args("--target 10.0.0.1:5060")).unwrap_err();
        assert!(e.0.contains("not loopback"), "{e}");
        let c = parse(args("--target 10.0.0.1:5060 --allow-non-loopback")).unwrap();
        assert_eq!(c.target.port(), 5060);
        assert!(parse(args("--target 127.1.2.3:5060")).is_ok());
        assert!(parse(args("--target [::1]:5060")).is_ok());
        assert!(parse(args("--responder --listen 0.0.0.0:5060")).is_err());
    }

    #[test]
    fn parses_a_full_command_line() {
        let c = parse(args(
            "--target=127.0.0.1:5070 --scenario mixed --mix register=1,refresh=8,options=1 \
             --devices 500 --rate 2000 --duration 5 --count 100 --threads 2 --sockets 8 \
             --transport tcp --json --no-mmsg",
        ))
        .unwrap();
        assert_eq!(c.scenario.name(), "mixed");
        assert!(c.scenario.needs_warmup());
        assert_eq!(c.load, Load::Rate(2000.0));
        assert_eq!(c.duration, Duration::from_secs(5));
        assert_eq!(c.count, Some(100));
        assert_eq!((c.threads, c.sockets), (2, 8));
        assert_eq!(c.transport, Transport::Tcp);
        assert!(c.json && !c.mmsg);
        assert_eq!(c.domain, "127.0.0.1");
        assert_eq!(c.expires_until, None);
        let c = parse(args("--target 127.0.0.1:1 --expires-until 1800000000.5")).unwrap();
        assert_eq!(
            c.expires_until,
            Some(Duration::from_secs_f64(1_800_000_000.5))
        );
    }

    #[test]
    fn rejects_conflicting_or_bad_values() {
        assert!(parse(args("--target 127.0.0.1:1 --rate 5 --window 5")).is_err());
        assert!(parse(args("--target 127.0.0.1:1 --scenario mixed")).is_err());
        assert!(parse(args("--target 127.0.0.1:1 --mix bogus=1 --scenario mixed")).is_err());
        assert!(parse(args("--target 127.0.0.1:1 --threads 0")).is_err());
        assert!(parse(args("--target 127.0.0.1:1 --frobnicate")).is_err());
        assert!(parse(args("--scenario options")).is_err());
    }
}
