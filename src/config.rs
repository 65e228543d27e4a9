//! Command-line configuration: the flags of DESIGN.md's contract, their
//! defaults, and one clear error per mistake.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything the server needs to start, after validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http: SocketAddr,
    pub realm: String,
    pub users: Option<PathBuf>,
    pub password: Option<String>,
    pub no_auth: bool,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub nonce_ttl: u32,
    pub keepalive_timeout: u32,
    pub platform_id: Option<String>,
    pub max_contacts: usize,
    pub threads: usize,
    pub state: Option<PathBuf>,
    pub state_interval: u32,
    pub domain: Option<String>,
    pub tcp_idle_timeout: u32,
    pub query_timeout: u32,
    pub redirect_auth: bool,
    pub rate_limit: u32,
    pub rate_burst: u32,
    /// Failed digest answers from one source IP, or for one user, within
    /// `auth_fail_window` before further attempts get 403 (0: off).
    pub auth_fail_limit: u32,
    pub auth_fail_window: u32,
    /// How long a source or user stays refused once over the limit.
    pub auth_lockout: u32,
    /// Digest algorithms offered, strongest first.
    pub digest_algorithms: Vec<DigestAlgorithm>,
    /// A nonce answers one request only (replay protection without qop).
    pub one_time_nonces: bool,
    /// TCP connections per worker.
    pub tcp_max_connections: u32,
    /// TCP connections per source IP and worker.
    pub tcp_max_per_source: u32,
    /// A message begun on a TCP connection must be complete within this (slowloris).
    pub tcp_message_timeout: u32,
    /// Requested UDP receive buffer per worker socket, bytes (0: kernel default).
    pub udp_rcvbuf: u32,
    /// Granted expiries are lowered by a random 0..=N % (0: off).
    pub expires_jitter: u32,
    /// Devices the operator expects (0: size the tables on demand). Pre-sizes
    /// the device table and raises the nonce-count cap to fit.
    pub expected_devices: usize,
}

/// A digest algorithm sipreg can challenge with (RFC 7616 §6.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Md5,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            realm: "sipreg".into(),
            users: None,
            password: None,
            no_auth: false,
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            nonce_ttl: 300,
            keepalive_timeout: 180,
            platform_id: None,
            max_contacts: 10,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            state: None,
            state_interval: 30,
            domain: None,
            tcp_idle_timeout: 600,
            query_timeout: 32,
            redirect_auth: false,
            rate_limit: 0,
            rate_burst: 0,
            auth_fail_limit: 10,
            auth_fail_window: 60,
            auth_lockout: 300,
            digest_algorithms: vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5],
            one_time_nonces: false,
            tcp_max_connections: 8192,
            tcp_max_per_source: 256,
            tcp_message_timeout: 30,
            udp_rcvbuf: 4 << 20,
            expires_jitter: 0,
            expected_devices: 0,
        }
    }
}

pub const USAGE: &str = "\
sipreg — SIP registrar for IP phones, softphones and GB28181 cameras

USAGE: sipreg [OPTIONS]

OPTIONS:
  --listen ADDR:PORT        SIP over UDP and TCP (default 0.0.0.0:5060)
  --http ADDR:PORT          admin API and metrics (default 127.0.0.1:8080)
  --realm REALM             digest realm (default sipreg)
  --users FILE              credentials, one user:realm:MD5-HA1[:SHA-256-HA1] per
                            line (htdigest files work as they are)
  --password PASSWORD       one shared password for every device id (GB28181 style);
                            combines with --users: listed ids use their own HA1
  --no-auth                 serve without authentication (explicit opt-in)
  --redirect-auth           callers of INVITE/SUBSCRIBE/REFER/MESSAGE must
                            authenticate before they are redirected
  --min-expires S           shortest registration accepted, else 423 (default 60)
  --max-expires S           longer registrations are shortened to this (default 7200)
  --default-expires S       when the request names no expiry (default 3600)
  --nonce-ttl S             nonce lifetime before stale=true (default 300)
  --keepalive-timeout S     GB28181: offline after this long without keep-alive (default 180)
  --platform-id ID          GB28181 id used in server-originated requests
  --max-contacts N          bindings per address-of-record (default 10)
  --threads N               worker threads (default: number of cores)
  --state FILE              snapshot of the device table: loaded at start, saved
                            every --state-interval and on SIGTERM/SIGINT
  --state-interval S        seconds between snapshots (default 30)
  --expires-jitter PCT      lower each granted expiry by a random 0..PCT % so
                            devices registered together spread their refreshes
                            (default 0: off; at most 50)
  --expected-devices N      size for a fleet of N devices (default 0: tables
                            grow on demand; at most 100000000). The device
                            table starts with room for N, so it never rehashes
                            while filling (no latency spikes during a mass
                            registration), and up to 2 x N nonces are tracked
                            per --nonce-ttl instead of 1048576, so a restart
                            storm is not re-challenged. Costs about 52 MB of
                            address space per million devices at start (4 MB
                            resident; the rest as devices arrive)
  --domain DOMAIN           accept only this Request-URI domain (default: any)
  --tcp-idle-timeout S      close TCP connections idle this long (default 600)
  --rate-limit N            requests per second per source IP and worker; over
                            it 503 + Retry-After, far over it silent drops
                            (default 0: off, since NATs put many phones behind
                            one address; size it to your largest site)
  --rate-burst B            requests a source may send at once (default 2 x N)
  --auth-fail-limit N       failed digest answers from one IP or for one user
                            within --auth-fail-window before 403 (default 10;
                            0: off)
  --auth-fail-window S      (default 60)
  --auth-lockout S          how long such a source or user is refused (default 300)
  --digest-algorithms LIST  challenges offered, in order: sha-256,md5 (default),
                            sha-256, or md5
  --one-time-nonces         a nonce answers one request only (replay protection
                            for devices that do not use qop; costs a challenge
                            round trip per refresh)
  --tcp-max-connections N   TCP connections per worker (default 8192)
  --tcp-max-per-source N    TCP connections per source IP and worker (default 256)
  --tcp-message-timeout S   a SIP message begun on TCP must be complete within
                            this, else the connection is closed (default 30)
  --udp-rcvbuf BYTES        UDP receive buffer per worker socket; the kernel caps
                            it at net.core.rmem_max (default 4194304; 0: kernel
                            default)
  --query-timeout S         GB28181: a catalog not complete after this long is
                            reported partial (default 32, RFC 3261 timer F)
  -h, --help                print this help
  -V, --version             print the version

Logging: RUST_LOG=info (or debug, trace) on stderr.
";

/// Largest `--expected-devices`: the pre-sized device table then reserves
/// 3.3 GB of address space (measured), beyond what one node should hold.
pub const MAX_EXPECTED_DEVICES: usize = 100_000_000;

/// What went wrong on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    UnknownFlag(String),
    MissingValue(&'static str),
    BadValue {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    /// Neither credentials nor `--no-auth`: an open registrar is a security hole.
    NoCredentials,
    ExpiresOrder {
        min: u32,
        default: u32,
        max: u32,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::UnknownFlag(s) => write!(f, "unknown option '{s}' (see --help)"),
            ConfigError::MissingValue(flag) => write!(f, "option {flag} needs a value"),
            ConfigError::BadValue { flag, value, expected } => {
                write!(f, "option {flag}: '{value}' is not {expected}")
            }
            ConfigError::NoCredentials => f.write_str(
                "no credentials: give --users FILE and/or --password PASSWORD, or --no-auth to serve without authentication",
            ),
            ConfigError::ExpiresOrder { min, default, max } => write!(
                f,
                "expiry limits must satisfy --min-expires ({min}) <= --default-expires ({default}) <= --max-expires ({max})"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

impl Config {
    /// Parses arguments (without the program name).
    pub fn from_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
        let mut c = Config::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            // Accept both `--flag value` and `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &'static str| -> Result<String, ConfigError> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => args.next().ok_or(ConfigError::MissingValue(name)),
                }
            };
            match flag.as_str() {
                "-h" | "--help" => return Ok(Command::Help),
                "-V" | "--version" => return Ok(Command::Version),
                "--listen" => c.listen = parse("--listen", value("--listen")?, "an ADDR:PORT")?,
                "--http" => c.http = parse("--http", value("--http")?, "an ADDR:PORT")?,
                "--realm" => c.realm = non_empty("--realm", value("--realm")?)?,
                "--users" => c.users = Some(PathBuf::from(value("--users")?)),
                "--password" => c.password = Some(non_empty("--password", value("--password")?)?),
                "--no-auth" => c.no_auth = true,
                "--redirect-auth" => c.redirect_auth = true,
                "--rate-limit" => {
                    c.rate_limit = parse(
                        "--rate-limit",
                        value("--rate-limit")?,
                        "a number of requests per second",
                    )?
                }
                "--rate-burst" => c.rate_burst = positive("--rate-burst", value("--rate-burst")?)?,
                "--min-expires" => {
                    c.min_expires = seconds("--min-expires", value("--min-expires")?)?
                }
                "--max-expires" => {
                    c.max_expires = seconds("--max-expires", value("--max-expires")?)?
                }
                "--default-expires" => {
                    c.default_expires = seconds("--default-expires", value("--default-expires")?)?
                }
                "--nonce-ttl" => c.nonce_ttl = positive("--nonce-ttl", value("--nonce-ttl")?)?,
                "--keepalive-timeout" => {
                    c.keepalive_timeout =
                        positive("--keepalive-timeout", value("--keepalive-timeout")?)?
                }
                "--platform-id" => {
                    c.platform_id = Some(non_empty("--platform-id", value("--platform-id")?)?)
                }
                "--max-contacts" => {
                    c.max_contacts = positive("--max-contacts", value("--max-contacts")?)? as usize
                }
                "--threads" => c.threads = positive("--threads", value("--threads")?)? as usize,
                "--state" => c.state = Some(PathBuf::from(value("--state")?)),
                "--state-interval" => {
                    c.state_interval = positive("--state-interval", value("--state-interval")?)?
                }
                "--domain" => {
                    c.domain = Some(non_empty("--domain", value("--domain")?)?.to_ascii_lowercase())
                }
                "--tcp-idle-timeout" => {
                    c.tcp_idle_timeout =
                        positive("--tcp-idle-timeout", value("--tcp-idle-timeout")?)?
                }
                "--auth-fail-limit" => {
                    c.auth_fail_limit = parse(
                        "--auth-fail-limit",
                        value("--auth-fail-limit")?,
                        "a number of failures",
                    )?
                }
                "--auth-fail-window" => {
                    c.auth_fail_window =
                        positive("--auth-fail-window", value("--auth-fail-window")?)?
                }
                "--auth-lockout" => {
                    c.auth_lockout = positive("--auth-lockout", value("--auth-lockout")?)?
                }
                "--digest-algorithms" => {
                    c.digest_algorithms = algorithms(value("--digest-algorithms")?)?
                }
                "--one-time-nonces" => c.one_time_nonces = true,
                "--tcp-max-connections" => {
                    c.tcp_max_connections =
                        positive("--tcp-max-connections", value("--tcp-max-connections")?)?
                }
                "--tcp-max-per-source" => {
                    c.tcp_max_per_source =
                        positive("--tcp-max-per-source", value("--tcp-max-per-source")?)?
                }
                "--tcp-message-timeout" => {
                    c.tcp_message_timeout =
                        positive("--tcp-message-timeout", value("--tcp-message-timeout")?)?
                }
                "--udp-rcvbuf" => {
                    c.udp_rcvbuf = parse("--udp-rcvbuf", value("--udp-rcvbuf")?, "a size in bytes")?
                }
                "--expires-jitter" => {
                    let v = value("--expires-jitter")?;
                    c.expires_jitter = match v.parse::<u32>() {
                        Ok(n) if n <= 50 => n,
                        _ => {
                            return Err(ConfigError::BadValue {
                                flag: "--expires-jitter",
                                value: v,
                                expected: "a percentage from 0 to 50",
                            })
                        }
                    }
                }
                "--expected-devices" => {
                    let v = value("--expected-devices")?;
                    c.expected_devices = match v.parse::<usize>() {
                        Ok(n) if n <= MAX_EXPECTED_DEVICES => n,
                        _ => {
                            return Err(ConfigError::BadValue {
                                flag: "--expected-devices",
                                value: v,
                                expected: "a number of devices from 0 to 100000000",
                            })
                        }
                    }
                }
                "--query-timeout" => {
                    c.query_timeout = positive("--query-timeout", value("--query-timeout")?)?
                }
                _ => return Err(ConfigError::UnknownFlag(arg)),
            }
        }
        if c.rate_burst == 0 {
            c.rate_burst = c.rate_limit.saturating_mul(2).max(1);
        }
        if c.users.is_none() && c.password.is_none() && !c.no_auth {
            return Err(ConfigError::NoCredentials);
        }
        if !(c.min_expires <= c.default_expires && c.default_expires <= c.max_expires) {
            return Err(ConfigError::ExpiresOrder {
                min: c.min_expires,
                default: c.default_expires,
                max: c.max_expires,
            });
        }
        Ok(Command::Run(Box::new(c)))
    }
}

fn parse<T: std::str::FromStr>(
    flag: &'static str,
    v: String,
    expected: &'static str,
) -> Result<T, ConfigError> {
    v.parse().map_err(|_| ConfigError::BadValue {
        flag,
        value: v,
        expected,
    })
}

/// `sha-256,md5`: known names, each once, at least one.
fn algorithms(v: String) -> Result<Vec<DigestAlgorithm>, ConfigError> {
    let mut list = Vec::new();
    for name in v.split(',') {
        let alg = match name.trim().to_ascii_lowercase().as_str() {
            "sha-256" => DigestAlgorithm::Sha256,
            "md5" => DigestAlgorithm::Md5,
            _ => {
                return Err(ConfigError::BadValue {
                    flag: "--digest-algorithms",
                    value: v,
                    expected: "a list of sha-256 and md5",
                })
            }
        };
        if list.contains(&alg) {
            return Err(ConfigError::BadValue {
                flag: "--digest-algorithms",
                value: v,
                expected: "a list naming each algorithm once",
            });
        }
        list.push(alg);
    }
    Ok(list)
}

fn seconds(flag: &'static str, v: String) -> Result<u32, ConfigError> {
    parse(flag, v, "a number of seconds")
}

fn positive(flag: &'static str, v: String) -> Result<u32, ConfigError> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::BadValue {
            flag,
            value: v,
            expected: "a positive whole number",
        }),
    }
}

fn non_empty(flag: &'static str, v: String) -> Result<String, ConfigError> {
    if v.is_empty() {
        Err(ConfigError::BadValue {
            flag,
            value: v,
            expected: "a non-empty value",
        })
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match Config::from_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_and_flags() {
        let c = run(&["--password", "x"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:5060".parse().unwrap());
        assert_eq!(
            (c.min_expires, c.default_expires, c.max_expires),
            (60, 3600, 7200)
        );
        assert_eq!(c.max_contacts, 10);
        assert_eq!(
            c.digest_algorithms,
            [DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        );
        let c = run(&[
            "--no-auth",
            "--digest-algorithms",
            "MD5",
            "--expires-jitter=20",
        ])
        .unwrap();
        assert_eq!(c.digest_algorithms, [DigestAlgorithm::Md5]);
        assert_eq!(c.expires_jitter, 20);
        let c = run(&[
            "--no-auth",
            "--listen=127.0.0.1:5070",
            "--threads",
            "3",
            "--domain",
            "Example.COM",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 5070);
        assert_eq!(c.threads, 3);
        assert_eq!(c.domain.as_deref(), Some("example.com"));
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(run(&[]).unwrap_err(), ConfigError::NoCredentials);
        assert_eq!(
            run(&["--bogus"]).unwrap_err(),
            ConfigError::UnknownFlag("--bogus".into())
        );
        assert_eq!(
            run(&["--no-auth", "--listen"]).unwrap_err(),
            ConfigError::MissingValue("--listen")
        );
        let e = run(&["--no-auth", "--threads", "0"]).unwrap_err();
        assert!(e.to_string().contains("--threads"), "{e}");
        let e = run(&["--no-auth", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option --listen: 'nowhere' is not an ADDR:PORT"
        );
        let e = run(&[
            "--no-auth",
            "--min-expires",
            "100",
            "--default-expires",
            "50",
        ])
        .unwrap_err();
        assert!(matches!(e, ConfigError::ExpiresOrder { .. }));
        let e = run(&["--no-auth", "--expires-jitter", "51"]).unwrap_err();
        assert!(e.to_string().contains("0 to 50"), "{e}");
        let e = run(&["--no-auth", "--digest-algorithms", "md5,sha-1"]).unwrap_err();
        assert!(e.to_string().contains("--digest-algorithms"), "{e}");
        let e = run(&["--no-auth", "--digest-algorithms", "md5,MD5"]).unwrap_err();
        assert!(e.to_string().contains("once"), "{e}");
        assert!(matches!(
            Config::from_args(["--help".to_string()]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn expected_devices_is_bounded() {
        assert_eq!(run(&["--no-auth"]).unwrap().expected_devices, 0);
        let c = run(&["--no-auth", "--expected-devices", "1000000"]).unwrap();
        assert_eq!(c.expected_devices, 1_000_000);
        let c = run(&["--no-auth", "--expected-devices=0"]).unwrap();
        assert_eq!(c.expected_devices, 0);
        let c = run(&["--no-auth", "--expected-devices", "100000000"]).unwrap();
        assert_eq!(c.expected_devices, MAX_EXPECTED_DEVICES);
        for bad in ["100000001", "1e6", "-1", "many", ""] {
            let e = run(&["--no-auth", "--expected-devices", bad]).unwrap_err();
            assert_eq!(
                e,
                ConfigError::BadValue {
                    flag: "--expected-devices",
                    value: bad.into(),
                    expected: "a number of devices from 0 to 100000000",
                }
            );
        }
        assert_eq!(
            run(&["--no-auth", "--expected-devices"]).unwrap_err(),
            ConfigError::MissingValue("--expected-devices")
        );
    }
}
