//! Routing and rendering against a real [`Registry`]; only the query channel
//! is a test double that records what it was asked.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::*;
use crate::gb28181::QuerySender;
use crate::registry::{BindingText, Registry, Transport};
use crate::stats::{GbStats, TimerStats, WorkerStats};

/// Records every query and answers with a configurable result.
struct Recorder {
    calls: Mutex<Vec<(Vec<u8>, QueryKind)>>,
    answer: Mutex<Result<u32, QueryError>>,
}

impl QuerySender for Recorder {
    fn query(&self, device_id: &[u8], kind: QueryKind) -> Result<u32, QueryError> {
        self.calls.lock().unwrap().push((device_id.to_vec(), kind));
        *self.answer.lock().unwrap()
    }
}

struct Fixture {
    state: AdminState,
    recorder: Arc<Recorder>,
}

const NOW: u64 = 1_000_000;

fn fixture() -> Fixture {
    let recorder = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        answer: Mutex::new(Ok(7)),
    });
    let state = AdminState {
        registry: Arc::new(Registry::new()),
        worker_stats: vec![
            Arc::new(WorkerStats::default()),
            Arc::new(WorkerStats::default()),
        ],
        timer_stats: Arc::new(TimerStats::default()),
        gb_stats: Arc::new(GbStats::default()),
        queries: recorder.clone(),
        persist: Default::default(),
        nonce_counts: Arc::new(crate::auth::NonceCounts::new(300)),
    };
    Fixture { state, recorder }
}

fn binding(uri: &str, expires_in_ms: u64) -> Binding {
    let text = BindingText {
        uri: uri.as_bytes(),
        instance: None,
        call_id: b"call-1",
        user_agent: b"phone/1.0",
    };
    let mut b = Binding::new(text, "127.0.0.1:5070".parse().unwrap(), Transport::Udp);
    b.expires_at_ms = NOW + expires_in_ms;
    b.cseq = 3;
    b
}

fn add(state: &AdminState, aor: &str, bindings: Vec<Binding>) {
    state.registry.modify(aor.as_bytes(), |d| {
        d.bindings = bindings.into();
        d.generation += 1;
    });
}

const CAMERA: &str = "34020000001320000001";

/// A GB28181 camera with two channels, a complete catalog and device info.
fn add_camera(state: &AdminState) {
    state.registry.modify(CAMERA.as_bytes(), |d| {
        let mut b = binding(&format!("sip:{CAMERA}@192.0.2.9:5060"), 3_600_000);
        b.transport = Transport::Tcp;
        d.bindings.push(b);
        let gb = d.gb_mut();
        gb.known = true;
        gb.online = true;
        gb.last_keepalive_unix = Some(1_700_000_000);
        gb.keepalive_deadline_ms = Some(NOW + 179_500);
        gb.channels = vec![
            Channel {
                device_id: "34020000001320000011".into(),
                name: "大门".into(),
                manufacturer: "Hikvision".into(),
                model: "DS-2CD".into(),
                status: "ON".into(),
                parent_id: CAMERA.into(),
                address: "gate".into(),
                longitude: Some(116.5),
                latitude: Some(39.75),
            },
            Channel {
                device_id: "34020000001320000012".into(),
                name: "lobby".into(),
                ..Channel::default()
            },
        ];
        gb.catalog = CatalogStatus::Complete {
            sn: 5,
            at_unix: 1_700_000_100,
        };
        gb.info = Some(Box::new(DeviceInfo {
            manufacturer: "Hikvision".into(),
            model: "DS-2CD".into(),
            firmware: "V5.5".into(),
            channels: Some(2),
        }));
    });
}

fn call(state: &AdminState, method: &str, target: &str) -> Response {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    handle(state, method, path, query, b"", NOW)
}

fn body(r: &Response) -> Value {
    assert_eq!(r.content_type, JSON, "status {}", r.status);
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&r.body)))
}

fn assert_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = body(r);
    assert!(
        v["error"].as_str().is_some_and(|s| !s.is_empty()),
        "error body: {v}"
    );
}

#[test]
fn healthz_and_unknown_paths() {
    let f = fixture();
    let r = call(&f.state, "GET", "/healthz");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(call(&f.state, "HEAD", "/healthz").status, 200);
    for path in [
        "/",
        "/api",
        "/api/devicesx",
        "/api/devices/x/y",
        "/api/devices/x/catalog/z",
        "/healthz/",
    ] {
        assert_error(&call(&f.state, "GET", path), 404);
    }
}

#[test]
fn wrong_methods_are_405_with_allow() {
    let f = fixture();
    for (method, path, allow) in [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("PUT", "/api/devices", "GET, HEAD"),
        ("POST", "/api/devices/alice@h", "GET, HEAD, DELETE"),
        ("GET", "/api/devices/alice@h/catalog", "POST"),
        ("DELETE", "/api/devices/alice@h/info", "POST"),
    ] {
        let r = call(&f.state, method, path);
        assert_error(&r, 405);
        assert_eq!(r.allow, Some(allow), "{method} {path}");
    }
    assert!(f.recorder.calls.lock().unwrap().is_empty());
}

#[test]
fn listing_pages_through_the_table() {
    let f = fixture();
    let v = body(&call(&f.state, "GET", "/api/devices"));
    assert_eq!(
        v,
        json!({"total": 0, "offset": 0, "limit": 100, "devices": []})
    );

    for i in 0..25 {
        add(
            &f.state,
            &format!("user{i}@example.com"),
            vec![binding("sip:u@192.0.2.1", 60_000)],
        );
    }
    add_camera(&f.state);
    let mut seen = Vec::new();
    for offset in (0..26).step_by(10) {
        let v = body(&call(
            &f.state,
            "GET",
            &format!("/api/devices?offset={offset}&limit=10"),
        ));
        assert_eq!(v["total"], 26);
        assert_eq!(v["offset"], offset);
        assert_eq!(v["limit"], 10);
        let page = v["devices"].as_array().unwrap();
        assert_eq!(page.len(), (26 - offset).min(10));
        seen.extend(page.iter().map(|d| d["id"].as_str().unwrap().to_string()));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 26, "every device exactly once across pages");

    let v = body(&call(&f.state, "GET", "/api/devices?limit=1000"));
    let devices = v["devices"].as_array().unwrap();
    let cam = devices
        .iter()
        .find(|d| d["id"] == CAMERA)
        .expect("camera listed");
    assert_eq!(
        cam,
        &json!({"id": CAMERA, "online": true, "gb28181": true, "bindings": 1,
                "last_keepalive": 1_700_000_000u64})
    );
    let phone = devices
        .iter()
        .find(|d| d["id"] == "user3@example.com")
        .unwrap();
    assert_eq!(
        phone,
        &json!({"id": "user3@example.com", "online": true, "gb28181": false, "bindings": 1,
                "last_keepalive": null})
    );

    // Past the end: an empty page with the total; limit=0 counts only.
    let v = body(&call(&f.state, "GET", "/api/devices?offset=500"));
    assert_eq!(
        (v["total"].clone(), v["devices"].clone()),
        (json!(26), json!([]))
    );
    let v = body(&call(&f.state, "GET", "/api/devices?limit=0&"));
    assert_eq!(
        (v["total"].clone(), v["devices"].clone()),
        (json!(26), json!([]))
    );
}

#[test]
fn bad_listing_queries_are_400() {
    let f = fixture();
    for q in [
        "limit=1001",
        "limit=-1",
        "limit=+5",
        "limit=",
        "limit=ten",
        "offset=x",
        "offset=1.5",
        "offset=99999999999999999999999999",
        "limt=5",
        "limit=5&limit=6",
        "offset=%zz",
    ] {
        assert_error(&call(&f.state, "GET", &format!("/api/devices?{q}")), 400);
    }
    assert_eq!(
        Page::parse("offset=%31%30"),
        Ok(Page {
            offset: 10,
            limit: DEFAULT_LIMIT
        })
    );
}

#[test]
fn device_detail_of_a_phone() {
    let f = fixture();
    let mut a = binding("sip:alice@192.0.2.1:5071", 59_001);
    a.q = Some(500);
    a.set_text(BindingText {
        uri: b"sip:alice@192.0.2.1:5071",
        instance: Some(b"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"),
        call_id: b"call-1",
        user_agent: b"phone/1.0",
    });
    a.reg_id = Some(1);
    let b = binding("sip:alice@192.0.2.2:5072", 3_600_000);
    add(&f.state, "alice@example.com", vec![a, b]);

    // Percent-encoded `@`, and the host folded as the registrar keys it.
    for id in [
        "alice%40example.com",
        "alice@example.com",
        "alice@Example.COM",
    ] {
        let r = call(&f.state, "GET", &format!("/api/devices/{id}"));
        assert_eq!(r.status, 200, "{id}");
        let v = body(&r);
        assert_eq!(v["id"], "alice@example.com");
        assert_eq!(v["online"], true);
        assert_eq!(
            v["bindings"][0],
            json!({
                "contact": "sip:alice@192.0.2.1:5071",
                "source": "127.0.0.1:5070",
                "transport": "udp",
                "expires_in": 60,
                "q": 0.5,
                "user_agent": "phone/1.0",
                "instance": "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
                "reg_id": 1,
                "call_id": "call-1",
                "cseq": 3,
            })
        );
        assert_eq!(v["bindings"][1]["q"], Value::Null);
        assert_eq!(v["bindings"][1]["instance"], Value::Null);
        assert_eq!(v["bindings"][1]["expires_in"], 3600);
        assert_eq!(v["gb"]["known"], false);
        assert_eq!(v["gb"]["catalog"], json!({"state": "never_queried"}));
        assert_eq!(v["gb"]["channels"], json!([]));
        assert_eq!(v["gb"]["info"], Value::Null);
    }
    // The user part is case-sensitive (RFC 3261 §19.1.4).
    assert_error(
        &call(&f.state, "GET", "/api/devices/Alice@example.com"),
        404,
    );
    // HEAD answers like GET.
    assert_eq!(
        call(&f.state, "HEAD", "/api/devices/alice@example.com").status,
        200
    );
}

#[test]
fn device_detail_of_a_camera_has_every_channel_field() {
    let f = fixture();
    add_camera(&f.state);
    let v = body(&call(&f.state, "GET", &format!("/api/devices/{CAMERA}")));
    assert_eq!(v["bindings"][0]["transport"], "tcp");
    assert_eq!(
        v["gb"],
        json!({
            "known": true,
            "online": true,
            "last_keepalive": 1_700_000_000u64,
            "keepalive_expires_in": 180,
            "catalog": {"state": "complete", "sn": 5, "at": 1_700_000_100u64},
            "channels": [
                {"device_id": "34020000001320000011", "name": "大门", "manufacturer": "Hikvision",
                 "model": "DS-2CD", "status": "ON", "parent_id": CAMERA, "address": "gate",
                 "longitude": 116.5, "latitude": 39.75},
                {"device_id": "34020000001320000012", "name": "lobby", "manufacturer": "",
                 "model": "", "status": "", "parent_id": "", "address": "",
                 "longitude": null, "latitude": null},
            ],
            "info": {"manufacturer": "Hikvision", "model": "DS-2CD", "firmware": "V5.5",
                     "channels": 2},
        })
    );

    // Offline after a keep-alive timeout, yet still registered.
    f.state.registry.modify(CAMERA.as_bytes(), |d| {
        let gb = d.gb_mut();
        gb.online = false;
        gb.catalog = CatalogStatus::Partial {
            sn: 6,
            received: 1,
            expected: Some(2),
        };
    });
    let v = body(&call(&f.state, "GET", &format!("/api/devices/{CAMERA}")));
    assert_eq!(v["online"], false);
    assert_eq!(
        v["gb"]["catalog"],
        json!({"state": "partial", "sn": 6, "received": 1, "expected": 2})
    );
}

#[test]
fn catalog_states_render_with_a_state_tag() {
    for (status, want) in [
        (
            CatalogStatus::Pending {
                sn: 1,
                received: 0,
                expected: None,
            },
            json!({"state": "pending", "sn": 1, "received": 0, "expected": null}),
        ),
        (
            CatalogStatus::TimedOut { sn: 2 },
            json!({"state": "timed_out", "sn": 2}),
        ),
    ] {
        let v = serde_json::to_value(CatalogView::from(&status)).unwrap();
        assert_eq!(v, want);
    }
}

#[test]
fn bad_and_unknown_ids() {
    let f = fixture();
    let long = "a".repeat(MAX_ID + 1);
    for id in ["%zz", "a%4", "%0a", "a%00b", long.as_str()] {
        for (method, suffix) in [("GET", ""), ("DELETE", ""), ("POST", "/catalog")] {
            assert_error(
                &call(&f.state, method, &format!("/api/devices/{id}{suffix}")),
                400,
            );
        }
    }
    assert_error(&call(&f.state, "GET", "/api/devices/"), 400);
    assert_error(
        &call(&f.state, "GET", "/api/devices/nobody@example.com"),
        404,
    );
    assert_error(
        &call(&f.state, "DELETE", "/api/devices/nobody@example.com"),
        404,
    );
    assert!(
        f.recorder.calls.lock().unwrap().is_empty(),
        "no query for a bad id"
    );
}

#[test]
fn delete_removes_the_device() {
    let f = fixture();
    add(
        &f.state,
        "bob@example.com",
        vec![binding("sip:bob@192.0.2.1", 60_000)],
    );
    add_camera(&f.state);
    let r = call(&f.state, "DELETE", "/api/devices/bob%40example.com");
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert!(!f.state.registry.read(b"bob@example.com", |d| d.is_some()));
    assert_error(
        &call(&f.state, "DELETE", "/api/devices/bob@example.com"),
        404,
    );
    assert_eq!(f.state.registry.len(), 1, "the camera stays");
}

#[test]
fn queries_go_through_the_sender_and_errors_map_to_statuses() {
    let f = fixture();
    let r = call(&f.state, "POST", &format!("/api/devices/{CAMERA}/catalog"));
    assert_eq!(r.status, 202);
    assert_eq!(body(&r), json!({"sn": 7}));
    *f.recorder.answer.lock().unwrap() = Ok(8);
    let r = handle(
        &f.state,
        "POST",
        "/api/devices/Cam%40Example.com/info",
        None,
        b"{}",
        NOW,
    );
    assert_eq!(body(&r), json!({"sn": 8}));
    assert_eq!(
        *f.recorder.calls.lock().unwrap(),
        vec![
            (CAMERA.as_bytes().to_vec(), QueryKind::Catalog),
            (b"Cam@example.com".to_vec(), QueryKind::DeviceInfo),
        ]
    );

    for (err, status) in [
        (QueryError::UnknownDevice, 404),
        (QueryError::NotRegistered, 409),
        (QueryError::Busy, 503),
    ] {
        *f.recorder.answer.lock().unwrap() = Err(err);
        let r = call(&f.state, "POST", &format!("/api/devices/{CAMERA}/catalog"));
        assert_error(&r, status);
        assert_eq!(body(&r)["error"], err.reason());
        assert_eq!(r.retry_after.is_some(), status == 503);
    }
}

/// Every sample line belongs to the family whose HELP and TYPE came just
/// before it; returns the samples as (name{labels}, value).
fn parse_exposition(text: &str) -> Vec<(String, u64)> {
    let mut family = String::new();
    let mut typed = false;
    let mut samples = Vec::new();
    let mut families = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name.starts_with("sipreg_") && !help.is_empty(), "{line}");
            assert!(families.insert(name.to_string()), "family {name} twice");
            family = name.to_string();
            typed = false;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(name, family, "TYPE right after its HELP");
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            typed = true;
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let name = series.split('{').next().unwrap();
            assert!(
                typed && name == family,
                "sample {line} outside its family {family}"
            );
            samples.push((series.to_string(), value.parse().expect("integer value")));
        }
    }
    samples
}

fn value(samples: &[(String, u64)], series: &str) -> u64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("{series} missing"))
        .1
}

#[test]
fn metrics_sum_workers_and_walk_the_table() {
    let f = fixture();
    add(
        &f.state,
        "alice@example.com",
        vec![
            binding("sip:a@192.0.2.1", 60_000),
            binding("sip:a@192.0.2.2", 60_000),
        ],
    );
    add_camera(&f.state);
    let (w0, w1) = (&f.state.worker_stats[0], &f.state.worker_stats[1]);
    w0.requests[0].fetch_add(3, Relaxed);
    w1.requests[0].fetch_add(4, Relaxed);
    w1.requests[2].fetch_add(1, Relaxed);
    w0.response(200);
    w0.response(401);
    w1.response(200);
    WorkerStats::drop(w1, crate::stats::Drop::Ack);
    w0.auth_failures.fetch_add(2, Relaxed);
    f.state.timer_stats.expirations.fetch_add(5, Relaxed);
    f.state.gb_stats.catalog_timeouts.fetch_add(1, Relaxed);

    let r = call(&f.state, "GET", "/metrics");
    assert_eq!((r.status, r.content_type), (200, PROMETHEUS));
    let text = String::from_utf8(r.body).unwrap();
    let s = parse_exposition(&text);
    for (series, want) in [
        ("sipreg_registrations", 3),
        ("sipreg_devices", 2),
        ("sipreg_devices_online", 2),
        ("sipreg_gb_devices", 1),
        ("sipreg_gb_devices_online", 1),
        ("sipreg_gb_channels", 2),
        ("sipreg_requests_total{method=\"register\"}", 7),
        ("sipreg_requests_total{method=\"message\"}", 1),
        ("sipreg_requests_total{method=\"other\"}", 0),
        ("sipreg_responses_total{class=\"2xx\"}", 2),
        ("sipreg_responses_total{class=\"4xx\"}", 1),
        ("sipreg_drops_total{reason=\"ack\"}", 1),
        ("sipreg_auth_failures_total", 2),
        ("sipreg_expirations_total", 5),
        ("sipreg_catalog_timeouts_total", 1),
        ("sipreg_keepalives_total", 0),
        ("sipreg_worker_requests_total{worker=\"0\"}", 3),
        ("sipreg_worker_requests_total{worker=\"1\"}", 5),
        ("sipreg_worker_responses_total{worker=\"0\"}", 2),
        ("sipreg_worker_drops_total{worker=\"1\"}", 1),
    ] {
        assert_eq!(value(&s, series), want, "{series}\n{text}");
    }
    // HEAD is allowed on /metrics too.
    assert_eq!(call(&f.state, "HEAD", "/metrics").status, 200);
}
