//! Pure message building and parsing: SIP requests a device sends (REGISTER,
//! MESSAGE), MANSCDP bodies (Keepalive, Catalog and DeviceInfo responses) and
//! the parsing of the platform's queries. No sockets, no clocks.

use std::fmt::Write as _;
use std::net::SocketAddr;

use sipreg::auth::{client_response_key, format_nc, Algorithm, Ha1Key};

/// `Content-Type` of every GB28181 body (as the Hikvision capture writes it).
pub const MANSCDP: &str = "Application/MANSCDP+xml";
/// Magic cookie that starts every RFC 3261 branch.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// Which transport a device uses; written into Via and Contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// A challenge from a 401/407, remembered to authorise later requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// The server offered `qop=auth`.
    pub qop_auth: bool,
    /// Last nonce-count used with this nonce.
    pub nc: u32,
    /// `Proxy-Authenticate` (407) rather than `WWW-Authenticate` (401).
    pub proxy: bool,
    /// The challenge's digest algorithm, used for the answer.
    pub algorithm: Algorithm,
}

impl Challenge {
    /// Reads a `WWW-Authenticate` / `Proxy-Authenticate` value; `None` unless it
    /// is a Digest challenge with a nonce and an algorithm the simulator knows
    /// (MD5 — also when absent — or SHA-256). Of several challenges in one
    /// response a device answers the first it can (RFC 8760 §2.4).
    pub fn parse(value: &[u8], proxy: bool) -> Option<Challenge> {
        let h = sipreg::sip::AuthHeader::parse(value).ok()?;
        if !h.is_digest() {
            return None;
        }
        let algorithm = match h.param(b"algorithm") {
            None => Algorithm::Md5,
            Some(alg) => Algorithm::from_token(alg)?,
        };
        let s = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        let qop_auth = h.param(b"qop").is_some_and(|q| {
            q.split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"auth"))
        });
        Some(Challenge {
            realm: s(h.param(b"realm").unwrap_or(b"")),
            nonce: s(h.param(b"nonce")?),
            opaque: h.param(b"opaque").map(s),
            qop_auth,
            nc: 0,
            proxy,
            algorithm,
        })
    }

    /// The `Authorization` (or `Proxy-Authorization`) header line, CRLF included;
    /// bumps the nonce-count when `qop=auth` is used.
    pub fn authorization(
        &mut self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        let key = Ha1Key::derive(
            self.algorithm,
            user.as_bytes(),
            self.realm.as_bytes(),
            password.as_bytes(),
        );
        let mut line = String::with_capacity(320);
        line.push_str(if self.proxy {
            "Proxy-Authorization: "
        } else {
            "Authorization: "
        });
        let _ = write!(
            line,
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\"",
            self.realm, self.nonce
        );
        if self.qop_auth {
            self.nc = self.nc.wrapping_add(1);
            let r = client_response_key(
                &key,
                self.nonce.as_bytes(),
                method.as_bytes(),
                uri.as_bytes(),
                Some((self.nc, cnonce.as_bytes())),
            );
            let nc = format_nc(self.nc);
            let _ = write!(
                line,
                ", response=\"{}\", algorithm={}, qop=auth, nc={}, cnonce=\"{cnonce}\"",
                ascii(&r),
                self.algorithm,
                ascii(&nc)
            );
        } else {
            let r = client_response_key(
                &key,
                self.nonce.as_bytes(),
                method.as_bytes(),
                uri.as_bytes(),
                None,
            );
            let _ = write!(
                line,
                ", response=\"{}\", algorithm={}",
                ascii(&r),
                self.algorithm
            );
        }
        if let Some(o) = &self.opaque {
            let _ = write!(line, ", opaque=\"{o}\"");
        }
        line.push_str("\r\n");
        line
    }
}

fn ascii(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

/// Everything that identifies one device's dialog-less requests.
#[derive(Debug, Clone)]
pub struct Endpoint<'a> {
    pub device_id: &'a str,
    pub platform_id: &'a str,
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

impl Endpoint<'_> {
    /// `sip:{platform}@{server}`: the Request-URI of every request a device sends.
    pub fn request_uri(&self) -> String {
        format!("sip:{}@{}", self.platform_id, self.server)
    }

    /// `sip:{id}@{local}`: the device's own address (From/To of REGISTER).
    pub fn device_uri(&self) -> String {
        format!("sip:{}@{}", self.device_id, self.local)
    }

    pub fn contact(&self) -> String {
        match self.transport {
            Transport::Udp => format!("<sip:{}@{}>", self.device_id, self.local),
            Transport::Tcp => format!("<sip:{}@{};transport=tcp>", self.device_id, self.local),
        }
    }
}

/// Per-request values that change between requests.
#[derive(Debug, Clone)]
pub struct ReqIds<'a> {
    pub branch: &'a str,
    pub from_tag: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
}

/// A REGISTER to `sip:{platform}@server` with To/From `sip:{id}@{local}`;
/// `auth` is a complete header line (CRLF included) or empty.
pub fn register(ep: &Endpoint<'_>, ids: &ReqIds<'_>, expires: u32, auth: &str) -> Vec<u8> {
    let me = ep.device_uri();
    let mut s = String::with_capacity(600);
    let _ = write!(
        s,
        "REGISTER {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/{tp} {local};rport;branch={branch}\r\n\
         From: <{me}>;tag={tag}\r\n\
         To: <{me}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: {contact}\r\n\
         {auth}\
         Max-Forwards: 70\r\n\
         User-Agent: gbsim\r\n\
         Expires: {expires}\r\n\
         Content-Length: 0\r\n\r\n",
        ruri = ep.request_uri(),
        tp = ep.transport.via_name(),
        local = ep.local,
        branch = ids.branch,
        tag = ids.from_tag,
        call_id = ids.call_id,
        cseq = ids.cseq,
        contact = ep.contact(),
    );
    s.into_bytes()
}

/// A MESSAGE from the device to the platform carrying a MANSCDP body.
pub fn message(ep: &Endpoint<'_>, ids: &ReqIds<'_>, body: &[u8], auth: &str) -> Vec<u8> {
    let ruri = ep.request_uri();
    let mut s = String::with_capacity(500 + body.len());
    let _ = write!(
        s,
        "MESSAGE {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/{tp} {local};rport;branch={branch}\r\n\
         From: <{me}>;tag={tag}\r\n\
         To: <{ruri}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} MESSAGE\r\n\
         Content-Type: {MANSCDP}\r\n\
         {auth}\
         Max-Forwards: 70\r\n\
         User-Agent: gbsim\r\n\
         Content-Length: {len}\r\n\r\n",
        tp = ep.transport.via_name(),
        local = ep.local,
        branch = ids.branch,
        me = ep.device_uri(),
        tag = ids.from_tag,
        call_id = ids.call_id,
        cseq = ids.cseq,
        len = body.len(),
    );
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The keep-alive body, byte for byte the Hikvision layout.
pub fn keepalive_body(device_id: &str, sn: u32) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    )
    .into_bytes()
}

/// The 20-digit id of a device: prefix + zero-padded index.
pub fn device_id(prefix: &str, index: u64) -> Option<String> {
    if prefix.len() >= 20 || !prefix.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let width = 20 - prefix.len();
    let id = format!("{prefix}{index:0width$}");
    (id.len() == 20).then_some(id)
}

/// The 20-digit id of channel `ch` (1-based) of the device with `index`:
/// the device id's first 10 digits (centre code), type 131 (camera) and a
/// 7-digit serial unique across the run's devices.
pub fn channel_id(device_id: &str, index: u64, channels: u32, ch: u32) -> String {
    let centre = device_id.get(..10).unwrap_or("3402000000");
    let serial = (index * u64::from(channels) + u64::from(ch)) % 10_000_000;
    format!("{centre}131{serial:07}")
}

/// The name of channel `ch` (1-based): "通道N" in GB2312 mode, "Channel N" otherwise.
pub fn channel_name(ch: u32, gb2312: bool) -> String {
    if gb2312 {
        format!("通道{ch}")
    } else {
        format!("Channel {ch}")
    }
}

/// What a catalog answer is built from.
#[derive(Debug, Clone)]
pub struct CatalogSpec<'a> {
    pub device_id: &'a str,
    pub index: u64,
    pub sn: u32,
    pub channels: u32,
    /// Items per Response MESSAGE (at least 1).
    pub split: u32,
    pub gb2312: bool,
}

/// The Catalog Response bodies: ceil(M/S) of them (one with `Num="0"` when
/// the device has no channel), encoded in GB2312 when asked.
pub fn catalog_bodies(spec: &CatalogSpec<'_>) -> Vec<Vec<u8>> {
    let split = spec.split.max(1);
    let mut bodies = Vec::new();
    let mut first = 1u32;
    loop {
        let last = spec.channels.min(first.saturating_add(split - 1));
        let count = if spec.channels == 0 {
            0
        } else {
            last + 1 - first
        };
        let decl = if spec.gb2312 {
            "<?xml version=\"1.0\" encoding=\"GB2312\"?>"
        } else {
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        };
        let mut s = String::with_capacity(200 + 420 * count as usize);
        let _ = write!(
            s,
            "{decl}\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{id}</DeviceID>\r\n<SumNum>{m}</SumNum>\r\n<DeviceList Num=\"{count}\">\r\n",
            sn = spec.sn,
            id = spec.device_id,
            m = spec.channels,
        );
        for ch in first..first + count {
            let _ = write!(
                s,
                "<Item>\r\n<DeviceID>{cid}</DeviceID>\r\n<Name>{name}</Name>\r\n<Manufacturer>gbsim</Manufacturer>\r\n<Model>SIM-1</Model>\r\n<Owner>0</Owner>\r\n<CivilCode>3402000000</CivilCode>\r\n<Address>Lab</Address>\r\n<Parental>0</Parental>\r\n<ParentID>{id}</ParentID>\r\n<Status>ON</Status>\r\n<Longitude>117.2</Longitude>\r\n<Latitude>31.8</Latitude>\r\n</Item>\r\n",
                cid = channel_id(spec.device_id, spec.index, spec.channels, ch),
                name = channel_name(ch, spec.gb2312),
                id = spec.device_id,
            );
        }
        s.push_str("</DeviceList>\r\n</Response>\r\n");
        bodies.push(encode(&s, spec.gb2312));
        if spec.channels == 0 || last >= spec.channels {
            break;
        }
        first = last + 1;
    }
    bodies
}

/// The DeviceInfo Response body.
pub fn device_info_body(device_id: &str, sn: u32, channels: u32) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\r\n<Response>\r\n<CmdType>DeviceInfo</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n<Result>OK</Result>\r\n<DeviceName>gbsim</DeviceName>\r\n<Manufacturer>gbsim</Manufacturer>\r\n<Model>SIM-1</Model>\r\n<Firmware>1.0.0</Firmware>\r\n<Channel>{channels}</Channel>\r\n</Response>\r\n"
    )
    .into_bytes()
}

fn encode(s: &str, gb2312: bool) -> Vec<u8> {
    if gb2312 {
        // encoding_rs maps the GB2312 label to GBK, its superset.
        let (bytes, _, _) = encoding_rs::GBK.encode(s);
        bytes.into_owned()
    } else {
        s.as_bytes().to_vec()
    }
}

/// Decodes a MANSCDP body to UTF-8: GB2312/GBK/GB18030 when its XML
/// declaration says so (or when it is not valid UTF-8), UTF-8 otherwise.
pub fn decode_body(body: &[u8]) -> String {
    let head = &body[..body.len().min(100)];
    let head = String::from_utf8_lossy(head).to_ascii_lowercase();
    let declared_gb = head.starts_with("<?xml")
        && head
            .split("?>")
            .next()
            .is_some_and(|d| d.contains("gb2312") || d.contains("gbk") || d.contains("gb18030"));
    if declared_gb {
        let (s, _, _) = encoding_rs::GB18030.decode(body);
        return s.into_owned();
    }
    match std::str::from_utf8(body) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::GB18030.decode(body).0.into_owned(),
    }
}

/// The fields a device reads from a MANSCDP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manscdp {
    /// Root element: Query, Control, Notify, Response…
    pub root: String,
    pub cmd_type: String,
    pub sn: Option<u32>,
    pub device_id: Option<String>,
}

/// Parses a MANSCDP body (any encoding [`decode_body`] knows).
pub fn parse_manscdp(body: &[u8]) -> Result<Manscdp, String> {
    let text = decode_body(body);
    let doc = roxmltree::Document::parse(&text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    let child = |name: &str| {
        root.children()
            .find(|n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_owned())
    };
    let cmd_type = child("CmdType").ok_or("no CmdType")?;
    Ok(Manscdp {
        root: root.tag_name().name().to_owned(),
        cmd_type,
        sn: child("SN").and_then(|s| s.parse().ok()),
        device_id: child("DeviceID"),
    })
}

/// A Query body as a platform sends it (for fake platforms and tests).
pub fn query_body(cmd_type: &str, sn: u32, device_id: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>{cmd_type}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{device_id}</DeviceID>\r\n</Query>\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipreg::sip::{scan, HeaderId, Method};

    fn ep() -> Endpoint<'static> {
        Endpoint {
            device_id: "34020000001320000001",
            platform_id: "34020000002000000001",
            local: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    fn ids() -> ReqIds<'static> {
        ReqIds {
            branch: "z9hG4bKabc",
            from_tag: "t1",
            call_id: "c1",
            cseq: 1,
        }
    }

    #[test]
    fn ids_are_20_digits() {
        assert_eq!(
            device_id("3402000000132", 1).unwrap(),
            "34020000001320000001"
        );
        assert_eq!(device_id("3402000000132", 9_999_999).unwrap().len(), 20);
        assert!(device_id("3402000000132", 10_000_000).is_none());
        assert!(device_id("34x", 1).is_none());
        let c = channel_id("34020000001320000001", 1, 16, 3);
        assert_eq!(c, "34020000001310000019");
        assert_eq!(c.len(), 20);
    }

    #[test]
    fn register_scans_cleanly() {
        let req = register(&ep(), &ids(), 3600, "");
        let msg = scan(&req).expect("scan");
        msg.check_views().unwrap();
        assert_eq!(msg.method(), Some(Method::Register));
        assert_eq!(
            msg.request().unwrap().uri,
            b"sip:34020000002000000001@127.0.0.1:5060"
        );
        assert_eq!(
            msg.value(HeaderId::To).unwrap(),
            b"<sip:34020000001320000001@127.0.0.1:40000>"
        );
        assert_eq!(msg.value(HeaderId::Expires).unwrap(), b"3600");
        assert_eq!(msg.cseq().seq, 1);
        assert_eq!(msg.call_id(), b"c1");
        let via = sipreg::sip::Via::parse(msg.top_via().unwrap()).unwrap();
        assert_eq!(via.branch(), Some(&b"z9hG4bKabc"[..]));
        assert!(msg.body.is_empty());
    }

    #[test]
    fn register_with_digest_verifies() {
        let challenge_hdr =
            b"Digest realm=\"sipreg\", nonce=\"n0nce\", opaque=\"op\", algorithm=MD5, qop=\"auth\"";
        let mut ch = Challenge::parse(challenge_hdr, false).unwrap();
        assert!(ch.qop_auth);
        let uri = ep().request_uri();
        let auth = ch.authorization("34020000001320000001", "secret", "REGISTER", &uri, "cn1");
        let req = register(&ep(), &ids(), 3600, &auth);
        let msg = scan(&req).unwrap();
        let v = msg.value(HeaderId::Authorization).unwrap();
        let h = sipreg::sip::AuthHeader::parse(v).unwrap();
        assert_eq!(h.param(b"opaque"), Some(&b"op"[..]));
        assert_eq!(h.param(b"nc"), Some(&b"00000001"[..]));
        let resp = sipreg::auth::DigestResponse::from_params(h.params()).unwrap();
        let ha1 = sipreg::auth::ha1(b"34020000001320000001", b"sipreg", b"secret");
        assert!(sipreg::auth::verify(&resp, b"REGISTER", &ha1));
        assert!(!sipreg::auth::verify(
            &resp,
            b"REGISTER",
            &sipreg::auth::ha1(b"34020000001320000001", b"sipreg", b"wrong")
        ));

        // Without qop: RFC 2069 form, opaque still echoed, no nc.
        let mut ch = Challenge::parse(b"Digest realm=\"hik\", nonce=\"a8afe6fcbee6331d89d3eb0d3d19ce39\", opaque=\"a853e4f25298413f9bf3a9aa6767857d\", algorithm=MD5", false).unwrap();
        assert!(!ch.qop_auth);
        let auth = ch.authorization(
            "admin",
            "12345",
            "REGISTER",
            "sip:130909115229300920@10.64.49.44:7100",
            "x",
        );
        // The Hikvision capture's response for the same inputs.
        assert!(auth.contains("response=\"907ddb1bcc25174d7de4a96c947fb066\""));
        assert!(auth.contains("algorithm=MD5"));
        assert!(auth.contains("opaque=\"a853e4f25298413f9bf3a9aa6767857d\""));
        assert!(!auth.contains("nc="));
    }

    #[test]
    fn sha256_challenges_are_answered_and_unknown_ones_skipped() {
        // RFC 7616 §3.9.1's SHA-256 example, as the simulator would answer it.
        let mut ch = Challenge::parse(
            b"Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, \
              nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
              opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
            false,
        )
        .unwrap();
        assert_eq!(ch.algorithm, Algorithm::Sha256);
        let auth = ch.authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(auth.contains(
            "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
        ));
        assert!(auth.contains("algorithm=SHA-256"));
        assert!(Challenge::parse(
            b"Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256",
            false
        )
        .is_none());
        assert!(Challenge::parse(
            b"Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess",
            false
        )
        .is_none());
    }

    #[test]
    fn keepalive_message_round_trips() {
        let body = keepalive_body("34020000001320000001", 7);
        let req = message(&ep(), &ids(), &body, "");
        let msg = scan(&req).unwrap();
        assert_eq!(msg.method(), Some(Method::Message));
        assert_eq!(
            msg.value(HeaderId::ContentType).unwrap(),
            MANSCDP.as_bytes()
        );
        assert_eq!(msg.body, &body[..]);
        let doc = roxmltree::Document::parse(std::str::from_utf8(msg.body).unwrap()).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "Notify");
        let text = |n: &str| {
            root.children()
                .find(|c| c.has_tag_name(n))
                .and_then(|c| c.text())
                .unwrap()
                .to_owned()
        };
        assert_eq!(text("CmdType"), "Keepalive");
        assert_eq!(text("SN"), "7");
        assert_eq!(text("DeviceID"), "34020000001320000001");
        assert_eq!(text("Status"), "OK");
        // Byte for byte the Hikvision capture's body (151 bytes, one more than
        // the capture's Content-Length says; see the fixtures' README).
        let capture = "<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>2749</SN>\r\n<DeviceID>130909113319427420</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n";
        assert_eq!(
            keepalive_body("130909113319427420", 2749),
            capture.as_bytes()
        );
        assert_eq!(capture.len(), 151);
    }

    fn items(body: &[u8]) -> (u32, u32, Vec<(String, String, String)>) {
        let text = decode_body(body);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "Response");
        let get = |n: roxmltree::Node, name: &str| {
            n.children()
                .find(|c| c.has_tag_name(name))
                .and_then(|c| c.text())
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(get(root, "CmdType"), "Catalog");
        let sum: u32 = get(root, "SumNum").parse().unwrap();
        let list = root
            .children()
            .find(|c| c.has_tag_name("DeviceList"))
            .unwrap();
        let num: u32 = list.attribute("Num").unwrap().parse().unwrap();
        let items = list
            .children()
            .filter(|c| c.has_tag_name("Item"))
            .map(|i| (get(i, "DeviceID"), get(i, "Name"), get(i, "ParentID")))
            .collect::<Vec<_>>();
        assert_eq!(items.len() as u32, num);
        (sum, num, items)
    }

    #[test]
    fn catalog_split_parses_back() {
        let spec = CatalogSpec {
            device_id: "34020000001320000002",
            index: 2,
            sn: 9,
            channels: 20,
            split: 8,
            gb2312: false,
        };
        let bodies = catalog_bodies(&spec);
        assert_eq!(bodies.len(), 3);
        let mut all = Vec::new();
        for b in &bodies {
            let (sum, _, its) = items(b);
            assert_eq!(sum, 20);
            all.extend(its);
        }
        assert_eq!(all.len(), 20);
        assert_eq!(all[0].1, "Channel 1");
        assert_eq!(all[19].1, "Channel 20");
        assert!(all
            .iter()
            .all(|i| i.2 == "34020000001320000002" && i.0.len() == 20));
        let mut ids: Vec<_> = all.iter().map(|i| i.0.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 20);
        // Exact multiple and empty catalogs.
        assert_eq!(
            catalog_bodies(&CatalogSpec {
                channels: 16,
                ..spec.clone()
            })
            .len(),
            2
        );
        let empty = catalog_bodies(&CatalogSpec {
            channels: 0,
            ..spec
        });
        assert_eq!(empty.len(), 1);
        assert_eq!(items(&empty[0]).1, 0);
    }

    #[test]
    fn gb2312_round_trip() {
        let spec = CatalogSpec {
            device_id: "34020000001320000001",
            index: 1,
            sn: 1,
            channels: 3,
            split: 8,
            gb2312: true,
        };
        let bodies = catalog_bodies(&spec);
        assert_eq!(bodies.len(), 1);
        let raw = &bodies[0];
        assert!(raw.starts_with(b"<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
        // Not UTF-8: 通 is CD A8 in GB2312.
        assert!(std::str::from_utf8(raw).is_err());
        assert!(raw.windows(2).any(|w| w == [0xCD, 0xA8]));
        let (decoded, _, had_errors) = encoding_rs::GBK.decode(raw);
        assert!(!had_errors);
        assert!(decoded.contains("<Name>通道1</Name>"));
        let (_, _, its) = items(raw);
        assert_eq!(
            its.iter().map(|i| i.1.as_str()).collect::<Vec<_>>(),
            ["通道1", "通道2", "通道3"]
        );
    }

    #[test]
    fn device_info_and_queries_parse() {
        let b = device_info_body("34020000001320000001", 5, 16);
        let doc = roxmltree::Document::parse(std::str::from_utf8(&b).unwrap()).unwrap();
        let ch = doc
            .root_element()
            .children()
            .find(|c| c.has_tag_name("Channel"))
            .unwrap();
        assert_eq!(ch.text(), Some("16"));
        let q = parse_manscdp(&query_body("Catalog", 471, "130909113319427420")).unwrap();
        assert_eq!(
            q,
            Manscdp {
                root: "Query".into(),
                cmd_type: "Catalog".into(),
                sn: Some(471),
                device_id: Some("130909113319427420".into())
            }
        );
        // The Hikvision capture's query (body one byte longer than declared).
        let fixture = b"<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>471</SN>\r\n<DeviceID>130909113319427420</DeviceID>\r\n</Query>";
        assert_eq!(parse_manscdp(fixture).unwrap().sn, Some(471));
        // A GB2312-declared query.
        let (gb, _, _) = encoding_rs::GBK.encode(
            "<?xml version=\"1.0\" encoding=\"GB2312\"?><Query><CmdType>DeviceInfo</CmdType><SN>2</SN><DeviceID>通道</DeviceID></Query>",
        );
        let q = parse_manscdp(&gb).unwrap();
        assert_eq!(q.cmd_type, "DeviceInfo");
        assert_eq!(q.device_id.as_deref(), Some("通道"));
        assert!(parse_manscdp(b"<Query><CmdType>Cat").is_err());
        assert!(parse_manscdp(b"<Query></Query>").is_err());
    }
}
