//! gbsim in-process against a tiny fake GB28181 platform: a UDP socket on
//! 127.0.0.1 that challenges and accepts REGISTERs, answers keep-alives,
//! sends Catalog / DeviceInfo queries and collects the Response MESSAGEs.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gbsim::msg::{decode_body, query_body};
use gbsim::{SimConfig, Transport};
use sipreg::sip::{scan, AuthHeader, HeaderId, Method, ResponseWriter, StartLine, Via};

const PLATFORM: &str = "34020000002000000001";

/// A message a device sent to the platform (or a response to a query).
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    from: SocketAddr,
    branch: String,
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// device id → address it registered from.
    registered: HashMap<String, SocketAddr>,
    keepalives: Vec<(String, Seen)>,
    /// Response MESSAGEs (Catalog, DeviceInfo), retransmissions included.
    responses: Vec<Seen>,
    /// Responses (status codes) to the platform's queries, by query branch.
    query_answers: Vec<(String, u16)>,
    auth_failures: usize,
}

struct FakePlatform {
    sock: UdpSocket,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    /// Leave this many Response MESSAGEs unanswered (to see timer E).
    drop_responses: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn user_of(uri_field: &[u8]) -> String {
    let s = text(uri_field);
    let s = s.split("sip:").nth(1).unwrap_or("");
    s.split('@').next().unwrap_or("").to_owned()
}

impl FakePlatform {
    fn start() -> FakePlatform {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let drop_responses = Arc::new(AtomicUsize::new(0));
        let thread = {
            let sock = sock.try_clone().unwrap();
            let (state, stop, drop_responses) =
                (state.clone(), stop.clone(), drop_responses.clone());
            std::thread::spawn(move || serve(sock, state, stop, drop_responses))
        };
        FakePlatform {
            sock,
            addr,
            state,
            stop,
            drop_responses,
            thread: Some(thread),
        }
    }

    fn config(&self, devices: u32) -> SimConfig {
        let mut cfg = SimConfig::new(self.addr);
        cfg.devices = devices;
        cfg.platform_id = PLATFORM.into();
        cfg.keepalive_interval = Duration::from_millis(300);
        cfg.duration = Some(Duration::from_secs(20));
        cfg
    }

    fn wait_for(&self, what: &str, f: impl Fn(&State) -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if f(&self.state.lock().unwrap()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}");
    }

    fn device_addr(&self, id: &str) -> SocketAddr {
        self.wait_for("registration", |s| s.registered.contains_key(id));
        self.state.lock().unwrap().registered[id]
    }

    /// A query MESSAGE as the Hikvision capture's platform sends it.
    fn query(&self, id: &str, dev: SocketAddr, cmd: &str, sn: u32, branch: &str) -> Vec<u8> {
        let body = query_body(cmd, sn, id);
        let mut m = format!(
            "MESSAGE sip:{id}@{dev} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};rport;branch={branch}\r\n\
             From: <sip:{PLATFORM}@{me}>;tag=p{sn}\r\n\
             To: <sip:{id}@{dev}>\r\n\
             Call-ID: q-{branch}\r\n\
             CSeq: 20 MESSAGE\r\n\
             Content-Type: Application/MANSCDP+xml\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: {}\r\n\r\n",
            body.len(),
            me = self.addr,
        )
        .into_bytes();
        m.extend_from_slice(&body);
        self.sock.send_to(&m, dev).unwrap();
        m
    }

    fn responses(&self) -> Vec<Seen> {
        self.state.lock().unwrap().responses.clone()
    }

    /// Distinct (by branch) Response MESSAGEs from `dev`.
    fn distinct_responses(&self, dev: SocketAddr) -> Vec<Seen> {
        let mut out: Vec<Seen> = Vec::new();
        for r in self.responses() {
            if r.from == dev && !out.iter().any(|o| o.branch == r.branch) {
                out.push(r);
            }
        }
        out
    }

    fn answers_to(&self, branch: &str) -> Vec<u16> {
        self.state
            .lock()
            .unwrap()
            .query_answers
            .iter()
            .filter(|(b, _)| b == branch)
            .map(|(_, c)| *c)
            .collect()
    }
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    sock: UdpSocket,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    drop_responses: Arc<AtomicUsize>,
) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::new();
    let nonce = b"fakenonce0123456789";
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(msg) = scan(&buf[..n]) else {
            panic!("device sent an unparsable message: {:?}", text(&buf[..n]));
        };
        let branch = msg
            .top_via()
            .and_then(|v| Via::parse(v).ok())
            .and_then(|v| v.branch())
            .map(text)
            .unwrap_or_default();
        match msg.start {
            StartLine::Response(s) => {
                state.lock().unwrap().query_answers.push((branch, s.code));
                continue;
            }
            StartLine::Request(_) => {}
        }
        let id = user_of(msg.value(HeaderId::From).unwrap_or(b""));
        match msg.method() {
            Some(Method::Register) => {
                let mut w;
                match msg.value(HeaderId::Authorization) {
                    None => {
                        w = ResponseWriter::start(
                            &mut out,
                            &msg,
                            401,
                            b"Unauthorized",
                            from,
                            b"r1",
                        );
                        w.raw().extend_from_slice(
                            format!(
                                "WWW-Authenticate: Digest realm=\"sipreg\", nonce=\"{}\", opaque=\"opq\", algorithm=MD5, qop=\"auth\"\r\n",
                                text(nonce)
                            )
                            .as_bytes(),
                        );
                    }
                    Some(v) => {
                        let h = AuthHeader::parse(v).unwrap();
                        assert_eq!(h.param(b"opaque"), Some(&b"opq"[..]), "opaque echoed");
                        assert_eq!(h.param(b"qop"), Some(&b"auth"[..]), "qop=auth used");
                        let resp = sipreg::auth::DigestResponse::from_params(h.params()).unwrap();
                        let ha1 = sipreg::auth::ha1(id.as_bytes(), b"sipreg", b"secret");
                        if sipreg::auth::verify(&resp, b"REGISTER", &ha1) {
                            let exp = msg
                                .value(HeaderId::Expires)
                                .map(text)
                                .unwrap_or_else(|| "3600".into());
                            {
                                let mut st = state.lock().unwrap();
                                if exp == "0" {
                                    st.registered.remove(&id);
                                } else {
                                    st.registered.insert(id.clone(), from);
                                }
                            }
                            w = ResponseWriter::start(&mut out, &msg, 200, b"OK", from, b"r2");
                            w.header("Expires", exp.as_bytes());
                        } else {
                            state.lock().unwrap().auth_failures += 1;
                            w = ResponseWriter::start(
                                &mut out,
                                &msg,
                                403,
                                b"Forbidden",
                                from,
                                b"r3",
                            );
                        }
                    }
                }
                w.finish(b"");
            }
            Some(Method::Message) => {
                let seen = Seen {
                    at: Instant::now(),
                    from,
                    branch,
                    body: msg.body.to_vec(),
                };
                let body = decode_body(msg.body);
                if body.contains("<CmdType>Keepalive</CmdType>") {
                    state.lock().unwrap().keepalives.push((id, seen));
                } else {
                    state.lock().unwrap().responses.push(seen);
                    if drop_responses
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                    {
                        continue;
                    }
                }
                ResponseWriter::start(&mut out, &msg, 200, b"OK", from, b"m1").finish(b"");
            }
            _ => ResponseWriter::start(&mut out, &msg, 405, b"Method Not Allowed", from, b"x")
                .finish(b""),
        }
        sock.send_to(&out, from).unwrap();
    }
}

/// (SumNum, Num, items as (DeviceID, Name, ParentID)) of a Catalog Response.
fn catalog_items(body: &[u8]) -> (u32, u32, Vec<(String, String, String)>) {
    let text = decode_body(body);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let root = doc.root_element();
    let get = |n: roxmltree::Node, name: &str| {
        n.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(get(root, "CmdType"), "Catalog");
    let list = root
        .children()
        .find(|c| c.has_tag_name("DeviceList"))
        .unwrap();
    let items = list
        .children()
        .filter(|c| c.has_tag_name("Item"))
        .map(|i| (get(i, "DeviceID"), get(i, "Name"), get(i, "ParentID")))
        .collect();
    (
        get(root, "SumNum").parse().unwrap(),
        list.attribute("Num").unwrap().parse().unwrap(),
        items,
    )
}

#[test]
fn registers_keeps_alive_and_answers_catalog_split() {
    let p = FakePlatform::start();
    let mut cfg = p.config(3);
    cfg.channels = 16;
    cfg.catalog_split = 8;
    let sim = gbsim::spawn(cfg).unwrap();
    let ids = sim.device_ids().to_vec();
    assert_eq!(ids[0], "34020000001320000001");
    for (i, id) in ids.iter().enumerate() {
        let dev = p.device_addr(id);
        let branch = format!("z9hG4bKcat{i}");
        p.query(id, dev, "Catalog", 100 + i as u32, &branch);
        p.wait_for("catalog parts", |s| {
            s.responses.iter().filter(|r| r.from == dev).count() >= 2
        });
        assert_eq!(p.answers_to(&branch), [200]);
        let parts = p.distinct_responses(dev);
        assert_eq!(parts.len(), 2, "16 channels split by 8");
        let mut names = Vec::new();
        let mut chan_ids = Vec::new();
        for part in &parts {
            let (sum, num, items) = catalog_items(&part.body);
            assert_eq!((sum, num), (16, 8));
            for (cid, name, parent) in items {
                assert_eq!(&parent, id);
                assert_eq!(cid.len(), 20);
                chan_ids.push(cid);
                names.push(name);
            }
            assert!(text(&part.body).contains(&format!("<SN>{}</SN>", 100 + i)));
        }
        names.sort_by_key(|n| n[8..].parse::<u32>().unwrap());
        assert_eq!(names.first().unwrap(), "Channel 1");
        assert_eq!(names.last().unwrap(), "Channel 16");
        chan_ids.sort();
        chan_ids.dedup();
        assert_eq!(chan_ids.len(), 16);
    }
    p.wait_for("keep-alives from every device", |s| {
        ids.iter()
            .all(|id| s.keepalives.iter().filter(|(k, _)| k == id).count() >= 2)
    });
    let ka = p.state.lock().unwrap().keepalives[0].1.body.clone();
    assert!(text(&ka).starts_with(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>"
    ));
    let s = sim.stop();
    assert_eq!(s.registered_ok, 3);
    assert_eq!(s.queries_of("Catalog"), 3);
    assert_eq!(s.responses.sent, 6);
    assert_eq!(s.responses_answered(200), 6);
    assert!(s.keepalives.sent >= 6);
    assert_eq!(s.keepalives_answered(200), s.keepalives.sent, "{s:?}");
    assert_eq!((s.errors, s.abandoned), (0, 0), "{s:?}");
    assert_eq!(p.state.lock().unwrap().auth_failures, 0);
}

#[test]
fn gb2312_catalog_and_device_info() {
    let p = FakePlatform::start();
    let mut cfg = p.config(1);
    cfg.channels = 10;
    cfg.catalog_split = 4;
    cfg.gb2312 = true;
    let sim = gbsim::spawn(cfg).unwrap();
    let id = sim.device_ids()[0].clone();
    let dev = p.device_addr(&id);
    p.query(&id, dev, "Catalog", 7, "z9hG4bKgb1");
    p.wait_for("3 catalog parts", |s| s.responses.len() >= 3);
    let parts = p.distinct_responses(dev);
    assert_eq!(parts.len(), 3);
    let mut names = Vec::new();
    for part in &parts {
        assert!(part
            .body
            .starts_with(b"<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
        assert!(
            std::str::from_utf8(&part.body).is_err(),
            "really GB2312 bytes"
        );
        let (sum, _, items) = catalog_items(&part.body);
        assert_eq!(sum, 10);
        names.extend(items.into_iter().map(|i| i.1));
    }
    names.sort_by_key(|n| n.trim_start_matches("通道").parse::<u32>().unwrap());
    let want: Vec<String> = (1..=10).map(|i| format!("通道{i}")).collect();
    assert_eq!(names, want);

    p.query(&id, dev, "DeviceInfo", 8, "z9hG4bKinfo1");
    p.wait_for("device info", |s| s.responses.len() >= 4);
    let info = text(&p.responses()[3].body);
    assert!(info.contains("<CmdType>DeviceInfo</CmdType>"), "{info}");
    assert!(info.contains("<SN>8</SN>") && info.contains("<Channel>10</Channel>"));
    assert!(info.contains("<Firmware>1.0.0</Firmware>"));
    let s = sim.stop();
    assert_eq!(s.queries_of("Catalog"), 1);
    assert_eq!(s.queries_of("DeviceInfo"), 1);
    assert_eq!(s.responses.sent, 4);
    assert_eq!(s.responses_answered(200), 4);
}

#[test]
fn retransmitted_query_is_answered_once() {
    let p = FakePlatform::start();
    let mut cfg = p.config(1);
    cfg.channels = 4;
    cfg.catalog_split = 8;
    let sim = gbsim::spawn(cfg).unwrap();
    let id = sim.device_ids()[0].clone();
    let dev = p.device_addr(&id);
    let q = p.query(&id, dev, "Catalog", 55, "z9hG4bKre1");
    p.wait_for("first 200", |s| s.query_answers.len() == 1);
    // The same request again (same branch): a retransmission.
    p.sock.send_to(&q, dev).unwrap();
    p.wait_for("second 200", |s| s.query_answers.len() == 2);
    // A new transaction repeating the SN: 200, but no second catalog.
    p.query(&id, dev, "Catalog", 55, "z9hG4bKre2");
    p.wait_for("third 200", |s| s.query_answers.len() == 3);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(p.answers_to("z9hG4bKre1"), [200, 200]);
    assert_eq!(p.answers_to("z9hG4bKre2"), [200]);
    assert_eq!(
        p.distinct_responses(dev).len(),
        1,
        "Response sent once per SN"
    );
    let s = sim.stop();
    assert_eq!(s.query_retransmits, 1);
    assert_eq!(s.queries_of("Catalog"), 2);
    assert_eq!(s.responses.sent, 1);
}

#[test]
fn no_answer_leaves_queries_unanswered() {
    let p = FakePlatform::start();
    let mut cfg = p.config(1);
    cfg.no_answer = true;
    let sim = gbsim::spawn(cfg).unwrap();
    let id = sim.device_ids()[0].clone();
    let dev = p.device_addr(&id);
    let q = p.query(&id, dev, "Catalog", 1, "z9hG4bKna1");
    std::thread::sleep(Duration::from_millis(300));
    p.sock.send_to(&q, dev).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(p.answers_to("z9hG4bKna1").is_empty());
    assert!(p.responses().is_empty());
    let s = sim.stop();
    assert_eq!(s.queries_of("Catalog"), 1);
    assert_eq!(s.queries_unanswered, 1);
    assert_eq!(s.query_retransmits, 1);
    assert_eq!(s.responses.sent, 0);
}

#[test]
fn unanswered_response_is_retransmitted_per_timer_e() {
    let p = FakePlatform::start();
    p.drop_responses.store(2, Ordering::Relaxed);
    let mut cfg = p.config(1);
    cfg.channels = 2;
    let sim = gbsim::spawn(cfg).unwrap();
    let id = sim.device_ids()[0].clone();
    let dev = p.device_addr(&id);
    p.query(&id, dev, "Catalog", 3, "z9hG4bKte1");
    p.wait_for("two retransmissions", |s| s.responses.len() >= 3);
    let r = p.responses();
    assert!(
        r.iter().all(|x| x.branch == r[0].branch),
        "same transaction"
    );
    let gap1 = r[1].at - r[0].at;
    let gap2 = r[2].at - r[1].at;
    assert!(
        gap1 >= Duration::from_millis(400) && gap1 < Duration::from_millis(900),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(850) && gap2 < Duration::from_millis(1500),
        "{gap2:?}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let s = sim.stop();
    assert_eq!(s.responses.sent, 1);
    assert_eq!(s.responses.retransmitted, 2);
    assert_eq!(s.responses_answered(200), 1);
}

#[test]
fn silent_after_stops_keepalives_and_unregister_at_end() {
    let p = FakePlatform::start();
    let mut cfg = p.config(2);
    cfg.keepalive_interval = Duration::from_millis(200);
    cfg.silent_after = Some(Duration::from_millis(700));
    cfg.silent_devices = Some(1);
    cfg.unregister = true;
    let sim = gbsim::spawn(cfg).unwrap();
    let ids = sim.device_ids().to_vec();
    p.device_addr(&ids[0]);
    std::thread::sleep(Duration::from_millis(2000));
    let started = p.state.lock().unwrap().keepalives[0].1.at;
    let s = sim.stop();
    let st = p.state.lock().unwrap();
    let silent: Vec<_> = st.keepalives.iter().filter(|(k, _)| *k == ids[0]).collect();
    let talking = st.keepalives.iter().filter(|(k, _)| *k == ids[1]).count();
    assert!(silent.len() >= 2 && silent.len() <= 5, "{}", silent.len());
    assert!(silent
        .iter()
        .all(|(_, k)| k.at - started < Duration::from_millis(900)));
    assert!(talking >= 8, "{talking}");
    assert!(st.registered.is_empty(), "both un-registered at the end");
    assert_eq!(s.register.unregistered, 2);
    assert_eq!(s.registered_now, 0);
}

#[test]
fn refuses_non_loopback() {
    let mut cfg = SimConfig::new("192.0.2.1:5060".parse().unwrap());
    cfg.transport = Transport::Udp;
    assert!(gbsim::spawn(cfg).is_err());
}
