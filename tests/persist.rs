//! `--state FILE` over the real binary: the device table survives SIGTERM and
//! restart (bindings, remaining expiry, GB28181 channels), a SIGKILL in the
//! middle of a save leaves a snapshot that loads, and a damaged file is kept
//! aside while the server starts empty and keeps serving.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::{manscdp_message, poll_until, Conn, Ua, Udp};
use common::peers::Scratch;
use common::server::{Server, GB_ARGS, GB_PASSWORD, GB_REALM};
use serde_json::Value;
use sipreg::sip::{scan, ResponseWriter};

const CAMERA: &str = "34020000001320000042";

fn start(state: &Path, extra: &[&str]) -> Server {
    let state = state.to_str().expect("UTF-8 temp path");
    let mut args = GB_ARGS.to_vec();
    args.extend_from_slice(&["--state", state]);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Registers `user` with one contact and `expires`; returns the flow.
fn register(conn: Udp, user: &str, expires: u32) -> Udp {
    let mut ua = Ua::new(conn, user, GB_REALM, GB_PASSWORD);
    let contact = format!("<sip:{user}@{}>", ua.conn.local_addr());
    let resp = ua.register(&[&contact], Some(expires));
    assert_eq!(resp.code(), 200, "{user}: {resp:?}");
    ua.conn
}

/// The first stderr line containing `needle`, once it has arrived (stderr is
/// collected by another thread, behind the stdout lines `start` waited for).
fn log_line(srv: &Server, needle: &str) -> Option<String> {
    poll_until(Duration::from_secs(5), || {
        srv.stderr()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
}

fn device(srv: &Server, id: &str) -> Value {
    let (status, body) = srv.http_get(&format!("/api/devices/{id}"));
    assert_eq!(status, 200, "{id}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn device_count(srv: &Server) -> u64 {
    let (_, body) = srv.http_get("/api/devices?limit=0");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["total"].as_u64().expect("total")
}

/// A GB28181 camera registers, answers the platform's catalog query with two
/// channels, and sends a keep-alive.
fn camera_with_channels(srv: &Server) -> Udp {
    let conn = register(Udp::connect(srv.addr()), CAMERA, 3600);
    let mut conn = conn;
    let query = loop {
        let raw = conn
            .recv_timeout(Duration::from_secs(5))
            .expect("catalog query");
        if scan(&raw).is_ok_and(|m| m.is_request()) {
            break raw;
        }
    };
    let q = scan(&query).expect("query scans");
    let body = String::from_utf8_lossy(q.body).into_owned();
    let sn = body
        .split("<SN>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("SN")
        .to_string();
    let mut ok = Vec::new();
    ResponseWriter::start(&mut ok, &q, 200, b"OK", conn.local_addr(), b"cam").finish(b"");
    conn.send(&ok);
    let items: String = (1..=2)
        .map(|c| format!("<Item><DeviceID>3402000000131000000{c}</DeviceID><Name>通道{c}</Name><Status>ON</Status></Item>"))
        .collect();
    for body in [
        format!("<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{CAMERA}</DeviceID>\r\n<SumNum>2</SumNum>\r\n<DeviceList Num=\"2\">{items}</DeviceList>\r\n</Response>\r\n"),
        format!("<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{CAMERA}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"),
    ] {
        let msg = manscdp_message(&conn, CAMERA, &body);
        let resp = conn.request(&msg);
        assert_eq!(resp.code(), 200, "{resp:?}");
    }
    conn
}

fn channel_ids(dev: &Value) -> Vec<String> {
    let mut ids: Vec<String> = dev["gb"]["channels"]
        .as_array()
        .expect("channels")
        .iter()
        .map(|c| c["device_id"].as_str().expect("id").to_string())
        .collect();
    ids.sort();
    ids
}

/// Starts a server on `state`, registers `n` devices `{prefix}NNNNN` for an
/// hour and stops it cleanly, leaving their snapshot.
fn populate(state: &Path, n: usize, prefix: &str) {
    let mut srv = start(state, &[]);
    let mut conn = Udp::connect(srv.addr());
    for i in 0..n {
        conn = register(conn, &format!("{prefix}{i:05}"), 3600);
    }
    srv.stop_cleanly(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.stderr_report()));
}

#[test]
fn ten_thousand_devices_survive_a_restart() {
    const N: usize = 10_000;
    let scratch = Scratch::new("state-restart");
    let state = scratch.file("sipreg.state");
    let srv = start(&state, &[]);

    let mut conn = Udp::connect(srv.addr());
    let mut registered = Vec::with_capacity(N);
    for i in 0..N {
        let user = format!("phone{i:05}");
        let expires = 600 + (i as u32 % 1000) * 5;
        conn = register(conn, &user, expires);
        registered.push((format!("{user}@3402000000"), expires, Instant::now()));
    }
    let _camera = camera_with_channels(&srv);
    let camera_before = device(&srv, CAMERA);
    assert_eq!(channel_ids(&camera_before).len(), 2, "{camera_before}");
    assert_eq!(device_count(&srv), N as u64 + 1);

    let mut srv = srv;
    srv.stop_cleanly(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.stderr_report()));
    assert!(state.exists(), "no snapshot written on SIGTERM");

    let srv = start(&state, &[]);
    let restored = format!("{} devices with {} live bindings", N + 1, N + 1);
    assert!(
        log_line(&srv, &restored).is_some(),
        "{}",
        srv.stderr_report()
    );
    assert_eq!(device_count(&srv), N as u64 + 1);
    for (aor, expires, at) in &registered {
        let dev = device(&srv, aor);
        let bindings = dev["bindings"].as_array().expect("bindings");
        assert_eq!(bindings.len(), 1, "{aor}: {dev}");
        let left = bindings[0]["expires_in"].as_i64().expect("expires_in");
        let want = i64::from(*expires) - at.elapsed().as_secs() as i64;
        assert!(
            (left - want).abs() <= 2,
            "{aor}: {left} s left, want {want}"
        );
        assert_eq!(bindings[0]["transport"], "udp");
    }
    let camera = device(&srv, CAMERA);
    assert_eq!(channel_ids(&camera), channel_ids(&camera_before));
    assert_eq!(camera["gb"]["online"], true, "{camera}");
    assert_eq!(
        camera["gb"]["last_keepalive"],
        camera_before["gb"]["last_keepalive"]
    );
    assert_eq!(camera["gb"]["catalog"]["state"], "complete", "{camera}");
    assert_eq!(
        srv.metric("sipreg_state_restored_devices"),
        Some((N + 1) as f64)
    );

    // The restored table is live: a restored device refreshes, and its
    // expiry timer was re-armed (checked in `restored_bindings_still_expire`).
    let resp = {
        let mut ua = Ua::new(
            Udp::connect(srv.addr()),
            "phone00000",
            GB_REALM,
            GB_PASSWORD,
        );
        let contact = "<sip:phone00000@127.0.0.1:9>".to_string();
        ua.register(&[&contact], Some(600))
    };
    assert_eq!(resp.code(), 200);
    assert_eq!(resp.contacts().len(), 2, "{resp:?}");
}

#[test]
fn restored_bindings_still_expire() {
    let scratch = Scratch::new("state-expire");
    let state = scratch.file("sipreg.state");
    let mut srv = start(&state, &["--min-expires", "2"]);
    let _flow = register(Udp::connect(srv.addr()), "shortlived", 3);
    let _flow2 = register(Udp::connect(srv.addr()), "longlived", 3600);
    srv.stop_cleanly(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.stderr_report()));

    let srv = start(&state, &["--min-expires", "2"]);
    assert_eq!(device_count(&srv), 2, "{}", srv.stderr_report());
    // The timer thread removes it on time after the restart.
    let gone = poll_until(Duration::from_secs(6), || {
        (device_count(&srv) == 1).then_some(())
    });
    assert!(gone.is_some(), "restored binding never expired");
    assert_eq!(
        device(&srv, "longlived@3402000000")["bindings"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

#[test]
fn saves_periodically_and_on_sigint() {
    let scratch = Scratch::new("state-periodic");
    let state = scratch.file("sipreg.state");
    let srv = start(&state, &["--state-interval", "1"]);
    let _flow = register(Udp::connect(srv.addr()), "alice", 600);
    let saved = poll_until(Duration::from_secs(10), || {
        (srv.metric("sipreg_state_last_save_devices") == Some(1.0)).then_some(())
    });
    assert!(saved.is_some(), "no periodic save: {}", srv.stderr_report());
    assert!(srv.metric("sipreg_state_saves_total").unwrap_or(0.0) >= 1.0);
    assert!(fs::metadata(&state).expect("snapshot").len() > 0);

    let _flow = register(Udp::connect(srv.addr()), "bob", 600);
    let status = srv.stop_with(libc::SIGINT);
    assert!(status.success(), "{status}");
    let srv = start(&state, &[]);
    assert_eq!(device_count(&srv), 2, "{}", srv.stderr_report());
}

#[test]
fn sigkill_during_saves_leaves_a_snapshot_that_loads() {
    const N: usize = 3_000;
    let scratch = Scratch::new("state-sigkill");
    let state = scratch.file("sipreg.state");
    let tmp = scratch.file("sipreg.state.tmp");
    populate(&state, N, "kill");
    let whole = fs::read(&state).expect("first snapshot");

    // Kill the server over and over while it saves as often as it can: each
    // time, the snapshot on disk is either the old or a new one, whole.
    let mut killed_mid_save = 0;
    for round in 0..5 {
        let srv = start(&state, &["--state-interval", "1"]);
        let restored = format!("{N} devices with {N} live bindings");
        assert!(
            log_line(&srv, &restored).is_some(),
            "round {round}: {}",
            srv.stderr_report()
        );
        // Catch it with the temporary file open (a save takes milliseconds,
        // so this spins rather than polls), or after a save if it is missed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tmp.exists() && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        if tmp.exists() {
            killed_mid_save += 1;
        }
        let status = srv.stop_with(libc::SIGKILL);
        assert!(!status.success());
        assert!(fs::metadata(&state).expect("snapshot still there").len() > 0);
    }
    assert!(killed_mid_save > 0, "never caught a save in progress");
    let srv = start(&state, &[]);
    assert_eq!(device_count(&srv), N as u64, "{}", srv.stderr_report());
    assert_eq!(fs::read(&state).expect("snapshot").len(), whole.len());
}

/// Damaged snapshots: each is reported in one line, renamed aside with its
/// bytes intact, and the server starts empty and registers devices.
#[test]
fn damaged_snapshots_are_kept_aside() {
    let scratch = Scratch::new("state-damaged");
    let state = scratch.file("sipreg.state");
    populate(&state, 3, "damaged");
    let good = fs::read(&state).expect("snapshot");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() - 7].to_vec(), "truncated"),
        ("bit-flipped", flipped, "checksum mismatch"),
        (
            "foreign",
            b"{\"not\": \"a snapshot\"}\n".to_vec(),
            "not a sipreg state file",
        ),
        ("empty", Vec::new(), "truncated"),
    ];
    for (what, bytes, reason) in cases {
        fs::write(&state, &bytes).expect("write the damaged file");
        let srv = start(&state, &[]);
        let line = log_line(&srv, "unusable")
            .unwrap_or_else(|| panic!("{what}: no report line; {}", srv.stderr_report()));
        assert!(line.contains(reason), "{what}: {line}");
        let aside = line
            .split("kept aside as ")
            .nth(1)
            .and_then(|s| s.split(';').next())
            .unwrap_or_else(|| panic!("{what}: where did it go? {line}"));
        assert_eq!(fs::read(aside).expect("kept aside"), bytes, "{what}");
        fs::remove_file(aside).expect("clean up");
        assert_eq!(device_count(&srv), 0, "{what}");
        let _ = register(Udp::connect(srv.addr()), "after", 600);
        assert_eq!(device_count(&srv), 1, "{what}");
        let mut srv = srv;
        srv.stop_cleanly(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}\n{}", srv.stderr_report()));
        // The next start finds the good snapshot written at that stop.
        let srv = start(&state, &[]);
        assert_eq!(device_count(&srv), 1, "{what}: {}", srv.stderr_report());
        drop(srv);
    }
}
