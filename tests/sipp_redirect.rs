//! Interop (issue 7, point 4): a real SIP client follows sipreg's redirect.
//!
//! Three sipp processes and the real binary, all on 127.0.0.1:
//!
//! 1. a sipp UAS (`-sn uas`, sipp's built-in callee: 180, 200, then 200 to the
//!    BYE) listens on a free UDP port;
//! 2. `tests/sipp/redirect_register.xml` registers that address for the AOR
//!    `sip:bob@example.com` with digest auth (`Contact: <sip:bob@127.0.0.1:UASPORT>`),
//!    and the test reads the binding back through `GET /api/lookup/bob@example.com`;
//! 3. `tests/sipp/redirect_uac.xml` sends `INVITE sip:bob@example.com` to sipreg,
//!    gets the `302 Moved Temporarily`, ACKs it in the same transaction (the
//!    INVITE's branch), takes the first Contact's URI, host and port with `<ereg>`,
//!    switches destination with `<setdest>`, and places the call there:
//!    INVITE → 180 → 200 → ACK → BYE → 200.
//!
//! The test asserts every sipp's exit code (0 = all calls succeeded) and the
//! cumulative counters of its statistics file (1 successful call, 0 failed) for the
//! registering client, the caller and the callee, and that the callee's INVITE
//! carried the redirected Request-URI.
//!
//! sipp comes from the Debian package `sip-tester` (`.ci/run` installs it). Without
//! sipp the test is skipped, unless the environment variable `CI` is set: in CI a
//! missing sipp is a failure (the rule of `common::peers`).
//!
//! Every process is bounded in time (sipp's own `-timeout`, then a hard deadline
//! after which the test kills it by its PID).

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::peers::{baresip_available, read_lossy, sipp_available, tail, Peer, Scratch};
use common::server::{parse_admin_line, parse_listening_line, Server, BASIC_ARGS, PASSWORD};
use common::sipp::{client_args, Sipp};

/// The AOR the callee registers and the caller dials.
const USER: &str = "bob";
const DOMAIN: &str = "example.com";
/// How long sipreg may take to exit after SIGTERM.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// sipp's own global timeout for the short-lived clients (`-timeout`, then
/// `-timeout_error`).
const CLIENT_TIMEOUT_S: u64 = 20;
/// The callee's global timeout: it must outlive the registration and the call.
const UAS_TIMEOUT_S: u64 = 45;
/// Slack after sipp's own timeout before the test kills it.
const KILL_SLACK: Duration = Duration::from_secs(15);
/// How long the callee may take to bind its port.
const UAS_BIND_TIMEOUT: Duration = Duration::from_secs(5);

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// `GET /api/lookup/{aor}` on sipreg's admin API → (status line, body).
/// HTTP/1.1 with `Connection: close`, read to EOF with a deadline.
fn lookup(server: &Server, aor: &str) -> Result<(String, String), String> {
    let http = server.http_addr();
    let mut conn = TcpStream::connect_timeout(&http, Duration::from_secs(5))
        .map_err(|e| format!("connect to the admin API {http}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET /api/lookup/{aor} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send the lookup: {e}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .map_err(|e| format!("read the lookup answer: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Fails the test with `what`, a peer's report and sipreg's stderr, keeping
/// the scratch files.
fn give_up(scratch: &mut Scratch, server: &Server, what: String, peer: String) -> ! {
    scratch.fail(&format!("{what}\n{peer}{}", server.stderr_report()))
}

// ---------------------------------------------------------------------- sipp

/// A UDP port on 127.0.0.1 that was free a moment ago (the kernel's pick).
fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("bind a UDP socket on 127.0.0.1")
        .port()
}

/// Whether some socket is bound to UDP 127.0.0.1:`port` (or the wildcard),
/// read from /proc/net/udp so that probing never takes the port itself.
/// `None` when /proc cannot be read.
fn udp_port_bound(port: u16) -> Option<bool> {
    let table = fs::read_to_string("/proc/net/udp").ok()?;
    let want = [
        format!("0100007F:{port:04X}"),
        format!("00000000:{port:04X}"),
    ];
    Some(table.lines().skip(1).any(|line| {
        line.split_whitespace()
            .nth(1)
            .is_some_and(|local| want.iter().any(|w| w == local))
    }))
}

/// Starts sipp's built-in UAS (`-sn uas`) on a free loopback port and waits
/// until it holds the port. Retries with another port if sipp could not bind
/// (another process took the port in between).
fn start_uas(scratch: &Scratch) -> (Sipp, u16) {
    let os = |s: &str| OsString::from(s);
    let mut last = String::new();
    for _attempt in 0..3 {
        let port = free_udp_port();
        let args = vec![
            os("-sn"),
            os("uas"),
            os("-i"),
            os("127.0.0.1"),
            os("-p"),
            os(&port.to_string()),
            os("-t"),
            os("u1"),
            // One call, then exit; its answer is the built-in 180 + 200.
            os("-m"),
            os("1"),
        ];
        let mut uas = Sipp::spawn(scratch, "uas", args, UAS_TIMEOUT_S, KILL_SLACK);
        let deadline = Instant::now() + UAS_BIND_TIMEOUT;
        loop {
            if !uas.running() {
                uas.wait();
                last = uas.report();
                break;
            }
            match udp_port_bound(port) {
                Some(true) => return (uas, port),
                // No /proc: give sipp a moment instead.
                None => {
                    thread::sleep(Duration::from_millis(500));
                    if uas.running() {
                        return (uas, port);
                    }
                }
                Some(false) if Instant::now() >= deadline => {
                    panic!(
                        "the sipp UAS did not bind 127.0.0.1:{port} within \
                         {UAS_BIND_TIMEOUT:?}\n{}",
                        uas.report()
                    );
                }
                Some(false) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    panic!("the sipp UAS could not start (3 attempts)\n{last}");
}

// ---------------------------------------------------------------------- test

/// sipp 3.6 answers only the first WWW-Authenticate of a 401 and fails the
/// call ("createAuthHeader: authentication must use MD5 or AKAv1-MD5") when it
/// says `algorithm=SHA-256`, sipreg's default first choice; baresip 1.0
/// (libre) walks every challenge and gives up the registration ("Function
/// not implemented") at the first that is not MD5, whatever the order. Both
/// ignore RFC 8760 §2.4 (use the first challenge you support), so these
/// servers offer MD5 alone — what README tells operators to do for devices
/// that only know MD5.
const MD5_ONLY: &[&str] = &["--digest-algorithms", "md5"];

/// Issue 7, point 4: INVITE → 302 → ACK, then the INVITE follows the first
/// Contact to a sipp UAS registered there, and the call completes.
#[test]
fn sipp_invite_follows_302_to_registered_uas() {
    if !sipp_available() {
        return;
    }
    let mut scratch = Scratch::new("redirect");
    let mut server = Server::start(&[BASIC_ARGS, MD5_ONLY].concat());

    // 1. The callee.
    let (mut uas, uas_port) = start_uas(&scratch);
    let contact = format!("sip:{USER}@127.0.0.1:{uas_port}");

    // Everything gathered for a failure report, then the panic.
    macro_rules! fail {
        ($($arg:tt)*) => {{
            uas.wait();
            let peer = uas.report();
            give_up(&mut scratch, &server, format!($($arg)*), peer)
        }};
    }

    // 2. Register the callee's address for the AOR, with digest auth.
    let register_args = client_args(
        server.addr(),
        &scenario("redirect_register.xml"),
        "u1",
        1,
        &[
            "-s",
            USER,
            "-au",
            USER,
            "-ap",
            PASSWORD,
            "-key",
            "domain",
            DOMAIN,
            "-key",
            "contact",
            &contact,
            "-default_behaviors",
            "all,-bye",
        ],
    );
    let mut register = Sipp::spawn(
        &scratch,
        "register",
        register_args,
        CLIENT_TIMEOUT_S,
        KILL_SLACK,
    );
    if let Err(e) = register.check_calls(1) {
        let r = register.report();
        fail!("registering {contact} for sip:{USER}@{DOMAIN}: {e}\n{r}");
    }

    // The binding as a proxy would see it.
    let aor = format!("{USER}@{DOMAIN}");
    match lookup(&server, &aor) {
        Ok((status, body))
            if status.starts_with("HTTP/1.1 200")
                && body.contains(&format!("\"contact\":\"{contact}\"")) => {}
        Ok((status, body)) => {
            fail!("GET /api/lookup/{aor}: want 200 listing {contact}; got {status}\n{body}")
        }
        Err(e) => fail!("GET /api/lookup/{aor}: {e}"),
    }

    // 3. The caller: INVITE to sipreg, 302, ACK, follow the Contact.
    let uac_args = client_args(
        server.addr(),
        &scenario("redirect_uac.xml"),
        "u1",
        1,
        &["-s", USER, "-key", "domain", DOMAIN],
    );
    let mut uac = Sipp::spawn(&scratch, "uac", uac_args, CLIENT_TIMEOUT_S, KILL_SLACK);
    let uac_result = uac.check_calls(1);
    // The UAS ends its call some seconds after the BYE (its built-in final
    // wait for retransmissions), then exits because of -m 1.
    let uas_result = uas.check_calls(1);
    if let Err(e) = &uac_result {
        let r = uac.report();
        fail!("the caller (redirect_uac.xml): {e}\n{r}");
    }
    if let Err(e) = &uas_result {
        let r = uac.report();
        fail!("the callee (sipp -sn uas): {e}\n{r}");
    }

    // The call reached the UAS through the redirect: its INVITE's
    // Request-URI is the registered Contact, and the caller saw the 302.
    let uas_messages = read_lossy(&uas.messages);
    let uac_messages = read_lossy(&uac.messages);
    let redirected_invite = format!("INVITE {contact} SIP/2.0");
    if !uas_messages.contains(&redirected_invite) {
        let r = uac.report();
        fail!("the UAS never received {redirected_invite:?}\n{r}");
    }
    if !uac_messages.contains("SIP/2.0 302 Moved Temporarily")
        || !uac_messages.contains(&format!("Contact: <{contact}>;q="))
    {
        let r = uac.report();
        fail!("the caller's trace shows no 302 with Contact <{contact}>\n{r}");
    }
    // The ACK matched sipreg's INVITE server transaction (RFC 3261 §17.1.1.3:
    // the INVITE's branch): sipreg stopped timer G, so the 302 arrived once,
    // although the caller stayed on its port long past the first retransmission
    // interval (T1 = 500 ms; the scenario pauses 1.5 s in the call).
    let redirects = uac_messages
        .matches("SIP/2.0 302 Moved Temporarily")
        .count();
    if redirects != 1 {
        let r = uac.report();
        fail!("the caller received the 302 {redirects} times: the ACK did not stop its retransmission\n{r}");
    }

    if let Err(e) = server.stop_cleanly(SHUTDOWN_TIMEOUT) {
        fail!("{e}");
    }
    eprintln!(
        "redirect interop: registered {contact} in {:.1?}; INVITE sip:{USER}@{DOMAIN} \
         → 302 → ACK → INVITE {contact} → 200 → ACK → BYE → 200 in {:.1?}; \
         caller counters: {}; callee counters: {}",
        register.elapsed,
        uac.elapsed,
        uac_result.map(|s| s.nonzero()).unwrap_or_default(),
        uas_result.map(|s| s.nonzero()).unwrap_or_default()
    );
}

#[test]
fn listening_lines_are_parsed() {
    assert_eq!(
        parse_listening_line("sipreg listening on 127.0.0.1:5060 (udp+tcp)"),
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 5060)))
    );
    assert_eq!(
        parse_admin_line("sipreg admin on 127.0.0.1:8080 (http)"),
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)))
    );
    assert_eq!(parse_admin_line("sipreg admin on 127.0.0.1:0 (http)"), None);
}

#[test]
fn proc_net_udp_sees_a_bound_port() {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = sock.local_addr().unwrap().port();
    if let Some(bound) = udp_port_bound(port) {
        assert!(
            bound,
            "port {port} is bound but /proc/net/udp does not show it"
        );
    }
}

// ------------------------------------------------------------------- baresip

/// baresip's own timer (`-t`) for the caller: it dials at start-up, stays in
/// the call, then hangs up (BYE) and exits.
const BARESIP_CALLER_SECS: u64 = 5;
/// The callee's `-t`: only a safety net, the test stops it with SIGTERM.
const BARESIP_CALLEE_SECS: u64 = 30;
/// How long a baresip may take to register.
const BARESIP_REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A port P on 127.0.0.1 with UDP P, TCP P and TCP P+1 free a moment ago:
/// baresip listens on UDP and TCP at `sip_listen`, and for TLS on the next port.
fn free_baresip_port(avoid: &[u16]) -> u16 {
    for _ in 0..50 {
        let Ok(tcp) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(port) = tcp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if port == u16::MAX || avoid.iter().any(|&a| a.abs_diff(port) <= 1) {
            continue;
        }
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
        let tls = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1));
        if udp.is_ok() && tls.is_ok() {
            return port;
        }
    }
    panic!("found no free port triple for baresip on 127.0.0.1");
}

/// One baresip with its own configuration directory `DIR/NAME`, its account
/// `<sip:NAME@127.0.0.1:SIPREGPORT>` (so REGISTER and the INVITE go straight to
/// sipreg: no outbound proxy), SIP trace on, output in `NAME.log`.
struct Baresip {
    name: &'static str,
    port: u16,
    log: PathBuf,
    peer: Peer,
}

impl Baresip {
    fn spawn(
        scratch: &Scratch,
        name: &'static str,
        port: u16,
        sipreg: SocketAddr,
        extra: &[&str],
    ) -> Baresip {
        let dir = scratch.file(name);
        fs::create_dir_all(&dir).expect("create baresip's config directory");
        // No sound card: the audio device is aubridge (player → source in the
        // same process); the codec is PCMU. net_interface keeps it on loopback.
        let config = format!(
            "poll_method\tepoll\n\
             sip_listen\t127.0.0.1:{port}\n\
             net_interface\t127.0.0.1\n\
             call_local_timeout\t20\n\
             audio_player\taubridge,{name}\n\
             audio_source\taubridge,{name}\n\
             audio_alert\taubridge,{name}\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\tg711.so\n\
             module\taubridge.so\n\
             module_app\taccount.so\n\
             module_app\tmenu.so\n"
        );
        fs::write(dir.join("config"), config).expect("write baresip's config");
        let account = format!(
            "<sip:{name}@{sipreg}>;auth_pass={PASSWORD};regint=300;\
             answermode=auto;audio_codecs=PCMU\n"
        );
        fs::write(dir.join("accounts"), account).expect("write baresip's accounts");
        let log = scratch.file(&format!("{name}.log"));
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(&dir)
            .arg("-s")
            .args(extra)
            .current_dir(&scratch.path)
            .env("HOME", &scratch.path);
        Baresip {
            name,
            port,
            peer: Peer::spawn(name, cmd, &log),
            log,
        }
    }

    fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// Waits for the exit up to `timeout`, then kills by PID.
    fn wait(&mut self, timeout: Duration) {
        self.peer.wait(timeout);
    }

    /// SIGTERM (baresip hangs up and unregisters), then wait.
    fn stop(&mut self) {
        self.peer.terminate(Duration::from_secs(10));
    }

    fn report(&self) -> String {
        format!(
            "=== baresip {} (port {}) === exit {}\n{}\n",
            self.name,
            self.port,
            self.peer.status_text(),
            tail(&self.log_text(), 8000)
        )
    }
}

/// Issue 7, point 4, second half: two baresip softphones register to sipreg
/// and one reaches the other through the 302.
///
/// The AOR domain is sipreg's own address (`sip:bob@127.0.0.1:PORT`, stored as
/// `bob@127.0.0.1`): the caller then sends the INVITE straight to sipreg and,
/// after the 302, straight to the Contact. (With an outbound proxy set to
/// sipreg, baresip routes the redirected INVITE through sipreg again, which as
/// a redirect server, not a proxy, answers it 404.)
#[test]
fn baresip_calls_baresip_through_the_redirect() {
    if !baresip_available() {
        return;
    }
    let mut scratch = Scratch::new("baresip");
    let mut server = Server::start(&[BASIC_ARGS, MD5_ONLY].concat());
    let sipreg = server.addr();

    let bob_port = free_baresip_port(&[sipreg.port()]);
    let alice_port = free_baresip_port(&[sipreg.port(), bob_port]);
    let callee_secs = BARESIP_CALLEE_SECS.to_string();
    let mut bob = Baresip::spawn(&scratch, "bob", bob_port, sipreg, &["-t", &callee_secs]);

    macro_rules! fail {
        ($($arg:tt)*) => {{
            bob.stop();
            let peer = bob.report();
            give_up(&mut scratch, &server, format!($($arg)*), peer)
        }};
    }

    // The callee's binding, as the lookup API shows it.
    let bob_contact_at = format!("@127.0.0.1:{bob_port}\"");
    let deadline = Instant::now() + BARESIP_REGISTER_TIMEOUT;
    let bob_contact = loop {
        let found = lookup(&server, "bob@127.0.0.1")
            .ok()
            .and_then(|(status, body)| {
                if !status.starts_with("HTTP/1.1 200") {
                    return None;
                }
                let start = body.find("\"contact\":\"")? + "\"contact\":\"".len();
                let uri = &body[start..start + body[start..].find('"')?];
                body.contains(&bob_contact_at).then(|| uri.to_owned())
            });
        if let Some(uri) = found {
            break uri;
        }
        if Instant::now() >= deadline {
            fail!("baresip bob did not register within {BARESIP_REGISTER_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };

    // The caller dials the AOR at start-up, stays BARESIP_CALLER_SECS, hangs up.
    let dial = format!("/dial sip:bob@{sipreg}");
    let caller_secs = BARESIP_CALLER_SECS.to_string();
    let mut alice = Baresip::spawn(
        &scratch,
        "alice",
        alice_port,
        sipreg,
        &["-t", &caller_secs, "-e", &dial],
    );
    alice.wait(Duration::from_secs(BARESIP_CALLER_SECS + 15));
    // Let the callee see the BYE, then stop it.
    thread::sleep(Duration::from_millis(300));
    bob.stop();

    let alice_log = alice.log_text();
    let bob_log = bob.log_text();
    let checks = [
        (
            alice_log.contains(&format!("alice@{}: {{0/UDP/v4}} 200 OK", sipreg.ip())),
            "alice registered (200 OK)".to_owned(),
        ),
        (
            alice_log.contains("SIP/2.0 302 Moved Temporarily")
                && alice_log.contains(&format!("Contact: <{bob_contact}>;q=")),
            format!("alice received the 302 listing <{bob_contact}>"),
        ),
        (
            bob_log.contains(&format!("INVITE {bob_contact} SIP/2.0")),
            format!("bob received INVITE {bob_contact}"),
        ),
        (
            alice_log.contains("Call established: sip:bob@"),
            "alice: call established".to_owned(),
        ),
        (
            bob_log.contains("Call established: sip:alice@"),
            "bob: call established".to_owned(),
        ),
        (
            bob_log.contains("BYE ") && bob_log.contains("terminated (duration"),
            "bob: the call ended with alice's BYE".to_owned(),
        ),
        (
            alice.peer.succeeded(),
            "alice exited 0 on her own".to_owned(),
        ),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what.as_str())
        .collect();
    if !missing.is_empty() {
        let a = alice.report();
        fail!("baresip through the redirect: not shown: {missing:?}\n{a}");
    }
    if let Err(e) = server.stop_cleanly(SHUTDOWN_TIMEOUT) {
        fail!("{e}");
    }
    eprintln!(
        "baresip interop: bob registered {bob_contact}; alice dialled sip:bob@{sipreg}, \
         got the 302, reached bob, call established and hung up"
    );
}
