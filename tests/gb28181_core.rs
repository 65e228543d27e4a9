//! The GB28181 platform driven sans-IO with the real registrar and registry:
//! keep-alives, online state, catalog aggregation, queries and their timers.
//! Only the socket edge is replaced: an outbox that records what would be sent.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::sans_io::SansIo;
use crossbeam_channel::Receiver;
use parking_lot::Mutex;
use sipreg::gb28181::{Dest, Outbox, Platform, PlatformConfig, QueryKind, QuerySender};
use sipreg::registrar::{Handled, Policy, TimerEvent};
use sipreg::registry::CatalogStatus;
use sipreg::sip::{scan, HeaderId, ResponseWriter};
use sipreg::stats::GbStats;
use sipreg::timer::TimerCmd;

const DEVICE: &str = "34020000001320000001";

#[derive(Default)]
struct Recorder(Mutex<Vec<(Dest, Vec<u8>)>>);

impl Outbox for Recorder {
    fn send(&self, dest: Dest, bytes: Vec<u8>) {
        self.0.lock().push((dest, bytes));
    }
}

struct Fixture {
    io: SansIo,
    platform: Arc<Platform>,
    sent: Arc<Recorder>,
    timers: Receiver<TimerCmd<TimerEvent>>,
    device: SocketAddr,
}

impl Fixture {
    fn new() -> Self {
        let (timer_tx, timers) = crossbeam_channel::unbounded();
        let sent = Arc::new(Recorder::default());
        let mut platform = None;
        let policy = Policy {
            no_auth: true,
            ..Policy::default()
        };
        let io = SansIo::with(policy, |registrar| {
            let p = Arc::new(Platform::new(
                PlatformConfig {
                    platform_id: "34020000002000000001".into(),
                    keepalive_timeout_ms: 180_000,
                    query_timeout_ms: 32_000,
                    listen: "127.0.0.1:5060".parse().unwrap(),
                },
                registrar.registry.clone(),
                Arc::new(GbStats::default()),
                timer_tx,
            ));
            p.set_outbox(sent.clone());
            platform = Some(p.clone());
            registrar.with_platform(p)
        });
        Fixture {
            io,
            platform: platform.expect("built with the registrar"),
            sent,
            timers,
            device: "127.0.0.1:5070".parse().unwrap(),
        }
    }

    fn send_from(&mut self, source: SocketAddr, bytes: &[u8], mono_ms: u64) -> Handled {
        self.io.udp(bytes, source, mono_ms)
    }

    fn send(&mut self, bytes: &[u8], mono_ms: u64) -> Handled {
        self.send_from(self.device, bytes, mono_ms)
    }

    fn reply_text(&self) -> String {
        String::from_utf8_lossy(&self.io.out.reply).into_owned()
    }

    fn register(&mut self, expires: u32, cseq: u32) -> Handled {
        let req = format!(
            "REGISTER sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bKreg{cseq}\r\n\
             From: <sip:{DEVICE}@127.0.0.1:5070>;tag=r1\r\n\
             To: <sip:{DEVICE}@127.0.0.1:5070>\r\n\
             Call-ID: gbreg\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{DEVICE}@127.0.0.1:5070>\r\n\
             Expires: {expires}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        self.send(req.as_bytes(), 1000)
    }

    fn catalog(&self) -> CatalogStatus {
        self.io
            .registry
            .read(DEVICE.as_bytes(), |d| d.map(|d| d.gb().catalog.clone()))
            .unwrap()
    }

    fn channel_names(&self) -> Vec<String> {
        self.io
            .registry
            .read(DEVICE.as_bytes(), |d| {
                d.map(|d| d.gb().channels.iter().map(|c| c.name.clone()).collect())
            })
            .unwrap()
    }

    fn online(&self) -> bool {
        self.io
            .registry
            .read(DEVICE.as_bytes(), |d| d.is_some_and(|d| d.gb().online))
    }
}

fn message(branch: &str, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:34020000002000000001@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=z9hG4bK{branch}\r\n\
         From: <sip:{DEVICE}@127.0.0.1:5070>;tag=m1\r\n\
         To: <sip:34020000002000000001@127.0.0.1:5060>\r\n\
         Call-ID: {branch}\r\n\
         CSeq: 20 MESSAGE\r\n\
         Content-Type: Application/MANSCDP+xml\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn keepalive(branch: &str) -> Vec<u8> {
    message(
        branch,
        &format!("<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>1</SN>\r\n<DeviceID>{DEVICE}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"),
    )
}

fn catalog_part(branch: &str, sn: u32, sum: usize, ids: &[u32]) -> Vec<u8> {
    let items: String = ids
        .iter()
        .map(|i| format!("<Item><DeviceID>3402000000131000{i:04}</DeviceID><Name>cam{i}</Name><Status>ON</Status></Item>"))
        .collect();
    message(
        branch,
        &format!("<?xml version=\"1.0\"?>\r\n<Response><CmdType>Catalog</CmdType><SN>{sn}</SN><DeviceID>{DEVICE}</DeviceID><SumNum>{sum}</SumNum><DeviceList Num=\"{}\">{items}</DeviceList></Response>", ids.len()),
    )
}

#[test]
fn keepalive_needs_a_registration_from_the_same_address() {
    let mut f = Fixture::new();
    assert_eq!(f.send(&keepalive("k0"), 500), Handled::Reply(403));
    assert!(f
        .reply_text()
        .starts_with("SIP/2.0 403 Device Not Registered\r\n"));

    assert_eq!(f.register(3600, 1), Handled::Reply(200));
    // GB28181 devices get the GB Date form (yyyy-MM-ddTHH:mm:ss.SSS).
    let reply = f.reply_text();
    let date = reply.lines().find(|l| l.starts_with("Date: ")).unwrap();
    assert_eq!(date.len(), "Date: 2026-11-22T05:40:00.000".len(), "{date}");
    assert_eq!(&date[16..17], "T");

    assert!(!f.online());
    assert_eq!(f.send(&keepalive("k1"), 2000), Handled::Reply(200));
    assert!(f.online());
    assert!(f
        .io
        .out
        .timers
        .iter()
        .any(|t| matches!(t.event, TimerEvent::KeepaliveTimeout { .. })
            && t.deadline_ms == 2000 + 180_000));

    // The same device id from another address moves nothing.
    let elsewhere: SocketAddr = "127.0.0.1:6000".parse().unwrap();
    assert_eq!(
        f.send_from(elsewhere, &keepalive("k2"), 3000),
        Handled::Reply(403)
    );
    assert!(f
        .reply_text()
        .contains("Keep-Alive Not From The Registered Address"));
    assert_eq!(
        f.io.registry
            .read(DEVICE.as_bytes(), |d| d.unwrap().bindings[0].source),
        f.device
    );
}

#[test]
fn keepalive_timeout_takes_the_device_offline_unless_refreshed() {
    let mut f = Fixture::new();
    f.register(3600, 1);
    f.send(&keepalive("k1"), 2000);
    let first = f.io.out.timers[0].event.clone();
    f.send(&keepalive("k2"), 60_000);
    // One pending timeout per device: a later keep-alive schedules nothing…
    assert!(f.io.out.timers.is_empty());
    // …and the pending one, firing at the first deadline, re-arms itself at
    // the newest instead of taking the device offline.
    assert_eq!(
        f.platform.on_timer(&first, 182_000),
        Some((240_000, first.clone()))
    );
    assert!(f.online());
    assert_eq!(f.platform.on_timer(&first, 240_000), None);
    assert!(!f.online());
    // Online again on its next keep-alive.
    f.send(&keepalive("k3"), 250_000);
    assert!(f.online());
    // Unregistering takes it offline, and it stays listed as a known device.
    assert_eq!(f.register(0, 2), Handled::Reply(200));
    assert!(!f.online());
    assert!(f.io.registry.read(DEVICE.as_bytes(), |d| d.is_some()));
}

#[test]
fn malformed_xml_is_400_and_other_notifications_are_200() {
    let mut f = Fixture::new();
    f.register(3600, 1);
    let bad = message("x1", "<Notify><CmdType>Keepalive</Notify>");
    assert_eq!(f.send(&bad, 2000), Handled::Reply(400));
    assert!(f
        .reply_text()
        .starts_with("SIP/2.0 400 Malformed XML Body\r\n"));
    let alarm = message("x2", "<Notify><CmdType>Alarm</CmdType><SN>5</SN></Notify>");
    assert_eq!(f.send(&alarm, 2000), Handled::Reply(200));
    let plain = String::from_utf8(keepalive("x3"))
        .unwrap()
        .replace("Application/MANSCDP+xml", "text/plain");
    // Without a MANSCDP body it is an ordinary request to an AOR, answered by
    // the redirect server (the platform id is no registered AOR).
    assert_eq!(f.send(plain.as_bytes(), 2000), Handled::Reply(404));
}

#[test]
fn catalog_query_aggregates_parts_by_sn() {
    let mut f = Fixture::new();
    f.register(3600, 1);
    // A GB28181 device's first registration triggers a catalog query (§9.5).
    let (dest, bytes) = f
        .sent
        .0
        .lock()
        .pop()
        .expect("catalog query on registration");
    assert_eq!(dest, Dest::Udp(f.device));
    assert!(String::from_utf8_lossy(&bytes).contains("<CmdType>Catalog</CmdType>"));
    while f.timers.try_recv().is_ok() {}
    // A refresh does not query again.
    assert_eq!(f.register(3600, 2), Handled::Reply(200));
    assert!(f.sent.0.lock().is_empty());

    let sn = f
        .platform
        .query(DEVICE.as_bytes(), QueryKind::Catalog)
        .unwrap();
    // The query went to the device's registered address as a MANSCDP MESSAGE.
    let (dest, bytes) = f.sent.0.lock().pop().unwrap();
    assert_eq!(dest, Dest::Udp(f.device));
    let q = scan(&bytes).unwrap();
    assert_eq!(
        q.value(HeaderId::ContentType),
        Some(&b"Application/MANSCDP+xml"[..])
    );
    assert!(String::from_utf8_lossy(q.body).contains(&format!("<SN>{sn}</SN>")));
    assert!(matches!(f.catalog(), CatalogStatus::Pending { sn: s, received: 0, .. } if s == sn));

    // Timer E retransmits while no final response has arrived.
    let mut retransmit = None;
    while let Ok(TimerCmd::At { item, .. }) = f.timers.try_recv() {
        if matches!(item, TimerEvent::Retransmit { .. }) {
            retransmit = Some(item);
        }
    }
    let retransmit = retransmit.expect("timer E scheduled over UDP");
    let next = f.platform.on_timer(&retransmit, 1500);
    assert!(
        matches!(next, Some((2500, TimerEvent::Retransmit { .. }))),
        "{next:?}"
    );
    assert_eq!(f.sent.0.lock().len(), 1, "retransmitted once");

    // The device's 200 ends the transaction: no more retransmissions.
    let mut ok = Vec::new();
    ResponseWriter::start(&mut ok, &q, 200, b"OK", f.device, b"dev").finish(b"");
    assert_eq!(f.send(&ok, 1600), Handled::Absorbed);
    assert_eq!(f.platform.on_timer(&retransmit, 2500), None);

    // Parts: three, one retransmitted, with a duplicate item.
    assert_eq!(
        f.send(&catalog_part("c1", sn, 4, &[1, 2]), 2000),
        Handled::Reply(200)
    );
    assert_eq!(
        f.send(&catalog_part("c2", sn, 4, &[2, 3]), 2100),
        Handled::Reply(200)
    );
    assert_eq!(
        f.send(&catalog_part("c2", sn, 4, &[2, 3]), 2100),
        Handled::Reply(200)
    );
    assert!(matches!(
        f.catalog(),
        CatalogStatus::Pending {
            received: 3,
            expected: Some(4),
            ..
        }
    ));
    assert!(
        f.channel_names().is_empty(),
        "channels replaced only when complete"
    );
    assert_eq!(
        f.send(&catalog_part("c3", sn, 4, &[4]), 2200),
        Handled::Reply(200)
    );
    assert!(matches!(f.catalog(), CatalogStatus::Complete { sn: s, .. } if s == sn));
    assert_eq!(f.channel_names(), ["cam1", "cam2", "cam3", "cam4"]);

    // A later, incomplete answer does not wipe channels it does not mention;
    // after the timeout it is reported partial with what arrived.
    let sn2 = f
        .platform
        .query(DEVICE.as_bytes(), QueryKind::Catalog)
        .unwrap();
    assert_eq!(
        f.send(&catalog_part("d1", sn2, 5, &[9]), 3000),
        Handled::Reply(200)
    );
    assert_eq!(f.channel_names().len(), 4);
    let timeout = TimerEvent::CatalogTimeout {
        aor: Arc::from(DEVICE.as_bytes()),
        sn: sn2,
    };
    assert_eq!(f.platform.on_timer(&timeout, 40_000), None);
    assert!(matches!(
        f.catalog(),
        CatalogStatus::Partial {
            received: 1,
            expected: Some(5),
            ..
        }
    ));
    assert_eq!(f.channel_names(), ["cam1", "cam2", "cam3", "cam4", "cam9"]);
}

#[test]
fn unanswered_query_times_out_and_leaves_nothing_behind() {
    let mut f = Fixture::new();
    f.register(3600, 1);
    let sn = f
        .platform
        .query(DEVICE.as_bytes(), QueryKind::DeviceInfo)
        .unwrap();
    let (mut timeout, mut retransmit) = (None, None);
    while let Ok(TimerCmd::At { item, .. }) = f.timers.try_recv() {
        match item {
            TimerEvent::TransactionTimeout { .. } => timeout = Some(item),
            TimerEvent::Retransmit { .. } => retransmit = Some(item),
            _ => {}
        }
    }
    let timeout = timeout.expect("timer F scheduled");
    let retransmit = retransmit.expect("timer E scheduled");
    assert_eq!(f.platform.on_timer(&timeout, 33_000), None);
    assert_eq!(sipreg::stats::read(&f.platform.stats.info_timeouts), 1);
    // The transaction is gone: a late retransmission timer finds nothing.
    assert_eq!(f.platform.on_timer(&retransmit, 34_000), None);
    assert!(sn > 0);
    assert_eq!(
        f.platform
            .query(b"00000000000000000000", QueryKind::Catalog),
        Err(sipreg::gb28181::QueryError::UnknownDevice)
    );
}

#[test]
fn device_info_is_stored() {
    let mut f = Fixture::new();
    f.register(3600, 1);
    let body = format!("<Response><CmdType>DeviceInfo</CmdType><SN>3</SN><DeviceID>{DEVICE}</DeviceID><Manufacturer>Hikvision</Manufacturer><Model>DS-2CD</Model><Firmware>V5.5.0</Firmware><Channel>4</Channel></Response>");
    assert_eq!(f.send(&message("i1", &body), 2000), Handled::Reply(200));
    let info =
        f.io.registry
            .read(DEVICE.as_bytes(), |d| d.unwrap().gb().info.clone())
            .unwrap();
    assert_eq!(
        (info.model.as_str(), info.firmware.as_str(), info.channels),
        ("DS-2CD", "V5.5.0", Some(4))
    );
}
