//! The scanner against real device captures, RFC 4475, httparse as an oracle,
//! and arbitrary bytes.

mod common;

use std::net::SocketAddr;

use common::vectors::{all_fixtures, fixture, rfc4475};
use proptest::prelude::*;
use sipreg::sip::{
    self, frame, scan, scan_for_reply, AuthHeader, Frame, Header, HeaderId, Method, NameAddr,
    ResponseWriter, Rport, ScanError, Scheme, StartLine, Uri, Via,
};

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf8")
}

#[test]
fn every_capture_scans() {
    for (name, bytes) in all_fixtures() {
        let msg = scan(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        msg.check_views()
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(msg.header(HeaderId::Via).is_some(), "{name}");
        assert!(!msg.call_id().is_empty(), "{name}");
    }
}

#[test]
fn hikvision_register_with_digest() {
    let bytes = fixture("hikvision-gb28181/03-register-auth.sip");
    let msg = scan(&bytes).unwrap();
    let req = msg.request().unwrap();
    assert_eq!(req.method, Method::Register);
    assert_eq!(req.uri, b"sip:130909115229300920@10.64.49.44:7100");
    assert_eq!(msg.call_id(), b"143225205");
    assert_eq!(msg.cseq().seq, 2);
    assert_eq!(msg.cseq().method, b"REGISTER");
    assert_eq!(
        sip::parse_expires(msg.value(HeaderId::Expires).unwrap()),
        Ok(7200)
    );
    assert_eq!(
        sip::parse_max_forwards(msg.value(HeaderId::MaxForwards).unwrap()),
        Ok(70)
    );
    assert_eq!(msg.value(HeaderId::UserAgent), Some(&b"Hikvision"[..]));

    let via = Via::parse(msg.top_via().unwrap()).unwrap();
    assert_eq!(via.transport, b"UDP");
    assert_eq!((via.host, via.port), (&b"10.64.49.218"[..], Some(7100)));
    assert_eq!(via.rport(), Rport::Requested);
    assert_eq!(via.branch(), Some(&b"z9hG4bK3997518011"[..]));

    let from = NameAddr::parse(msg.value(HeaderId::From).unwrap()).unwrap();
    assert_eq!(from.tag(), Some(&b"382068091"[..]));
    let to = NameAddr::parse(msg.value(HeaderId::To).unwrap()).unwrap();
    assert_eq!(to.tag(), None);
    let to_uri = to.parse_uri().unwrap();
    assert_eq!(to_uri.scheme, Scheme::Sip);
    assert_eq!(to_uri.user, Some(&b"130909113319427420"[..]));
    assert_eq!(to_uri.host, b"10.64.49.218");
    assert_eq!(to_uri.port, Some(7100));

    let contacts: Vec<_> = msg.list(HeaderId::Contact).collect();
    assert_eq!(
        contacts,
        vec![&b"<sip:130909113319427420@10.64.49.218:7100>"[..]]
    );

    let auth = AuthHeader::parse(msg.value(HeaderId::Authorization).unwrap()).unwrap();
    assert!(auth.is_digest());
    assert_eq!(auth.param(b"username"), Some(&b"admin"[..]));
    assert_eq!(auth.param(b"realm"), Some(&b"hik"[..]));
    assert_eq!(
        auth.param(b"nonce"),
        Some(&b"a8afe6fcbee6331d89d3eb0d3d19ce39"[..])
    );
    assert_eq!(
        auth.param(b"uri"),
        Some(&b"sip:130909115229300920@10.64.49.44:7100"[..])
    );
    assert_eq!(
        auth.param(b"response"),
        Some(&b"907ddb1bcc25174d7de4a96c947fb066"[..])
    );
    assert_eq!(auth.param(b"algorithm"), Some(&b"MD5"[..]));
    assert_eq!(
        auth.param(b"opaque"),
        Some(&b"a853e4f25298413f9bf3a9aa6767857d"[..])
    );
    assert_eq!(auth.param(b"qop"), None);
}

#[test]
fn hikvision_challenge_and_keepalive_body() {
    let bytes = fixture("hikvision-gb28181/02-register-401.sip");
    let msg = scan(&bytes).unwrap();
    assert!(
        matches!(msg.start, StartLine::Response(s) if s.code == 401 && s.reason == b"Unauthorized")
    );
    let ch = AuthHeader::parse(msg.value(HeaderId::WwwAuthenticate).unwrap()).unwrap();
    assert_eq!(ch.param(b"realm"), Some(&b"hik"[..]));
    assert!(ch.param(b"nonce").is_some_and(|n| n.len() == 32));

    // The declared Content-Length (150) is one byte shorter than the body the
    // capture carries: RFC 3261 §18.3 says the extra byte is discarded.
    let bytes = fixture("hikvision-gb28181/09-keepalive-message.sip");
    let msg = scan(&bytes).unwrap();
    assert_eq!(msg.method(), Some(Method::Message));
    assert_eq!(
        msg.value(HeaderId::ContentType),
        Some(&b"Application/MANSCDP+xml"[..])
    );
    assert_eq!(msg.value(HeaderId::ContentLength), Some(&b"150"[..]));
    assert_eq!(msg.body.len(), 150);
    assert_eq!(bytes.len(), msg.head.len() + 151);
    assert!(msg.body.starts_with(b"<?xml version=\"1.0\"?>\r\n<Notify>"));
    assert!(text(msg.body).contains("<CmdType>Keepalive</CmdType>"));
    assert!(text(msg.body).contains("<DeviceID>130909113319427420</DeviceID>"));

    let bytes = fixture("hikvision-gb28181/11-catalog-query-message.sip");
    let msg = scan(&bytes).unwrap();
    assert_eq!(msg.body.len(), 124);
    assert!(text(msg.body).contains("<CmdType>Catalog</CmdType>"));

    let bytes = fixture("hikvision-gb28181/05-unregister.sip");
    let msg = scan(&bytes).unwrap();
    assert_eq!(
        sip::parse_expires(msg.value(HeaderId::Expires).unwrap()),
        Ok(0)
    );
}

#[test]
fn linphone_register_and_200() {
    let bytes = fixture("linphone-asterisk/03-register-auth.sip");
    let msg = scan(&bytes).unwrap();
    assert_eq!(msg.request().unwrap().uri, b"sip:10.49.0.2");
    let contact = NameAddr::parse(msg.list(HeaderId::Contact).next().unwrap()).unwrap();
    let uri = contact.parse_uri().unwrap();
    assert_eq!(uri.user, Some(&b"kk80ei"[..]));
    assert_eq!((uri.host, uri.port), (&b"10.49.0.1"[..], Some(5064)));
    assert_eq!(uri.param(b"line"), Some(Some(&b"00586725135b489"[..])));
    assert_eq!(
        msg.value(HeaderId::UserAgent),
        Some(&b"Linphone/3.6.1 (eXosip2/4.1.0)"[..])
    );
    let auth = AuthHeader::parse(msg.value(HeaderId::Authorization).unwrap()).unwrap();
    assert_eq!(auth.param(b"username"), Some(&b"kk80ei"[..]));
    assert_eq!(auth.param(b"realm"), Some(&b"xivo"[..]));
    assert_eq!(auth.param(b"nonce"), Some(&b"360fd7e8"[..]));
    assert_eq!(auth.param(b"opaque"), None);

    let bytes = fixture("linphone-asterisk/04-register-200.sip");
    let msg = scan(&bytes).unwrap();
    assert!(matches!(msg.start, StartLine::Response(s) if s.code == 200));
    let contact = NameAddr::parse(msg.list(HeaderId::Contact).next().unwrap()).unwrap();
    assert!(contact.expires().is_some_and(|e| e.is_ok()));
}

#[test]
fn eyebeam_register_quirks() {
    let bytes = fixture("eyebeam-asterisk/03-register-auth.sip");
    let msg = scan(&bytes).unwrap();
    let to = NameAddr::parse(msg.value(HeaderId::To).unwrap()).unwrap();
    assert_eq!(to.display, Some(&b"5000"[..]));
    assert_eq!(to.uri, b"sip:5000@172.21.0.12:6060");
    let from = NameAddr::parse(msg.value(HeaderId::From).unwrap()).unwrap();
    assert_eq!(from.display, Some(&b"5000"[..]));
    assert_eq!(from.tag(), Some(&b"1b1b480b"[..]));
    let contact = NameAddr::parse(msg.list(HeaderId::Contact).next().unwrap()).unwrap();
    assert_eq!(contact.expires(), Some(Ok(0)));
    assert_eq!(
        contact.parse_uri().unwrap().param(b"rinstance"),
        Some(Some(&b"ad2818fe362fecf7"[..]))
    );
    // rport after branch, and a branch full of dashes.
    let via = Via::parse(msg.top_via().unwrap()).unwrap();
    assert_eq!(via.rport(), Rport::Requested);
    assert_eq!(
        via.branch(),
        Some(&b"z9hG4bK-d87543-0615ba2d0975c620-1--d87543-"[..])
    );
    let allow: Vec<_> = msg.list(HeaderId::Allow).collect();
    assert_eq!(allow.len(), 10);
    assert_eq!(allow[0], b"INVITE");
    assert_eq!(allow[9], b"INFO");
    // Digest without spaces after commas.
    let auth = AuthHeader::parse(msg.value(HeaderId::Authorization).unwrap()).unwrap();
    assert_eq!(auth.param(b"realm"), Some(&b"cc-ali-0"[..]));
    assert_eq!(
        auth.param(b"response"),
        Some(&b"3927e9db6247ffc0dee3489495d4c7ab"[..])
    );

    let bytes = fixture("eyebeam-asterisk/05-invite.sip");
    let msg = scan(&bytes).unwrap();
    assert_eq!(msg.method(), Some(Method::Invite));
    assert!(msg.body.starts_with(b"v=0"));
    assert_eq!(msg.body.len(), 391);
}

/// A response written to each captured request re-scans to the same dialog
/// identifiers, with the To-tag added and the top Via stamped.
#[test]
fn written_responses_rescan_to_the_same_identifiers() {
    let source: SocketAddr = "203.0.113.9:5070".parse().unwrap();
    let mut out = Vec::new();
    let mut requests = 0;
    for (name, bytes) in all_fixtures() {
        let req = scan(&bytes).unwrap();
        if !req.is_request() {
            continue;
        }
        requests += 1;
        let mut w = ResponseWriter::start(&mut out, &req, 200, b"OK", source, b"tag42");
        w.header("Server", b"sipreg");
        w.finish(b"");
        let resp = scan(&out).unwrap_or_else(|e| panic!("{name}: {e:?}\n{}", text(&out)));
        assert!(
            matches!(resp.start, StartLine::Response(s) if s.code == 200),
            "{name}"
        );
        assert_eq!(resp.call_id(), req.call_id(), "{name}");
        assert_eq!(resp.cseq(), req.cseq(), "{name}");
        assert_eq!(
            resp.value(HeaderId::From),
            req.value(HeaderId::From),
            "{name}"
        );
        let req_vias: Vec<_> = req.list(HeaderId::Via).collect();
        let resp_vias: Vec<_> = resp.list(HeaderId::Via).collect();
        assert_eq!(req_vias.len(), resp_vias.len(), "{name}");
        for (a, b) in req_vias.iter().zip(&resp_vias).skip(1) {
            assert_eq!(a, b, "{name}");
        }
        let top_req = Via::parse(req_vias[0]).unwrap();
        let top = Via::parse(resp_vias[0]).unwrap();
        assert_eq!(top.branch(), top_req.branch(), "{name}");
        assert_eq!(top.received(), Some(&b"203.0.113.9"[..]), "{name}");
        if top_req.rport() == Rport::Requested {
            assert_eq!(top.rport(), Rport::Value(5070), "{name}");
        }
        let req_to = NameAddr::parse(req.value(HeaderId::To).unwrap()).unwrap();
        let resp_to = NameAddr::parse(resp.value(HeaderId::To).unwrap()).unwrap();
        assert_eq!(resp_to.uri, req_to.uri, "{name}");
        assert_eq!(
            resp_to.tag(),
            Some(req_to.tag().unwrap_or(b"tag42")),
            "{name}"
        );
        assert_eq!(resp.value(HeaderId::Server), Some(&b"sipreg"[..]));
    }
    assert!(requests >= 10);
}

/// RFC 4475: valid messages scan and their views parse; invalid ones are
/// rejected by the scan or by the views a handler checks first.
#[test]
fn rfc4475_torture_messages() {
    // Invalid per the RFC yet harmless to a registrar, which never reads these
    // values: a non-GMT Date (the RFC allows ignoring it, §3.1.2.12).
    let tolerated = ["baddate"];
    for (name, class, bytes) in rfc4475() {
        let verdict = scan(&bytes).map_err(|e| e.reason()).and_then(|m| {
            m.check_views().map_err(|e| e.reason())?;
            if let Some(req) = m.request() {
                Uri::parse(req.uri).map_err(|e| e.reason())?;
            }
            Ok(())
        });
        match class.as_str() {
            "valid" => assert!(verdict.is_ok(), "{name}: {verdict:?}"),
            "invalid" if !tolerated.contains(&name.as_str()) => {
                assert!(verdict.is_err(), "{name} accepted")
            }
            _ => {}
        }
    }
}

#[test]
fn rfc4475_specific_errors() {
    let find = |n: &str| rfc4475().into_iter().find(|v| v.0 == n).unwrap().2;
    assert_eq!(
        scan(&find("badvers")).unwrap_err(),
        ScanError::UnsupportedVersion
    );
    assert_eq!(ScanError::UnsupportedVersion.status(), 505);
    assert_eq!(
        scan(&find("mismatch01")).unwrap_err(),
        ScanError::CSeqMethodMismatch
    );
    assert_eq!(scan(&find("clerr")).unwrap_err(), ScanError::BodyTooShort);
    assert_eq!(scan(&find("ncl")).unwrap_err(), ScanError::BadContentLength);
    assert_eq!(scan(&find("scalar02")).unwrap_err(), ScanError::BadCSeq);
    assert_eq!(
        scan(&find("ltgtruri")).unwrap_err(),
        ScanError::BadRequestUri
    );
    assert_eq!(
        scan(&find("escruri")).unwrap_err(),
        ScanError::BadRequestUri
    );
    assert_eq!(
        scan(&find("lwsstart")).unwrap_err(),
        ScanError::BadStartLine
    );
    assert_eq!(scan(&find("trws")).unwrap_err(), ScanError::BadStartLine);
    assert_eq!(
        scan(&find("insuf")).unwrap_err(),
        ScanError::MissingHeader(HeaderId::From)
    );
    assert_eq!(
        scan(&find("mcl01")).unwrap_err(),
        ScanError::DuplicateHeader(HeaderId::ContentLength)
    );
    assert_eq!(
        scan(&find("bigcode")).unwrap_err(),
        ScanError::BadStatusCode
    );
    // Every malformed request above can still be answered (RFC 3261 §8.2)...
    for n in [
        "badvers",
        "mismatch01",
        "clerr",
        "ncl",
        "scalar02",
        "ltgtruri",
        "lwsstart",
        "trws",
        "mcl01",
        "multi01",
        "baddn",
    ] {
        assert!(scan_for_reply(&find(n)).is_some(), "{n}");
    }
    // ...but a malformed response never is.
    assert!(scan_for_reply(&find("scalarlg")).is_none());

    // dblreq: the INVITE after the REGISTER's Content-Length is discarded.
    let bytes_dblreq = find("dblreq");
    let msg = scan(&bytes_dblreq).unwrap();
    assert_eq!(msg.method(), Some(Method::Register));
    assert!(msg.body.is_empty());

    // wsinv: folding everywhere, compact forms, odd spacing.
    let bytes_wsinv = find("wsinv");
    let msg = scan(&bytes_wsinv).unwrap();
    assert_eq!(msg.cseq().seq, 9);
    assert_eq!(msg.cseq().method, b"INVITE");
    assert_eq!(
        sip::parse_max_forwards(msg.value(HeaderId::MaxForwards).unwrap()),
        Ok(68)
    );
    assert_eq!(msg.list(HeaderId::Via).count(), 3);
    assert_eq!(msg.value(HeaderId::Subject), Some(&b""[..]));
    let nf = msg
        .headers()
        .find(|h| h.name == b"NewFangledHeader")
        .unwrap();
    assert!(nf.is_folded());
    let mut joined = Vec::new();
    nf.unfold_into(&mut joined);
    assert_eq!(joined, b"newfangled value continued newfangled value");
    let contact = NameAddr::parse(msg.list(HeaderId::Contact).next().unwrap()).unwrap();
    assert_eq!(contact.q(), Some(Ok(330)));
    assert_eq!(contact.param(b"newparam"), Some(Some(&b"newvalue"[..])));

    // esc02: RE%47IST%45R is not REGISTER, C%6Fntact is not Contact.
    let bytes_esc02 = find("esc02");
    let msg = scan(&bytes_esc02).unwrap();
    assert_eq!(msg.method(), Some(Method::Other));
    assert_eq!(msg.list(HeaderId::Contact).count(), 2);

    // longreq: 34 Via header fields.
    let bytes_longreq = find("longreq");
    let msg = scan(&bytes_longreq).unwrap();
    assert_eq!(msg.list(HeaderId::Via).count(), 34);

    // mpart01: a binary body with NULs is delimited by Content-Length.
    let bytes_mpart01 = find("mpart01");
    let msg = scan(&bytes_mpart01).unwrap();
    assert!(msg.body.contains(&0));
}

#[test]
fn limits() {
    let mut big = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n".to_vec();
    big.resize(sip::MAX_UDP_MESSAGE + 1, b'a');
    assert_eq!(scan(&big).unwrap_err(), ScanError::MessageTooLarge);

    let mut many = b"OPTIONS sip:h SIP/2.0\r\n".to_vec();
    for i in 0..=sip::MAX_HEADERS {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(scan(&many).unwrap_err(), ScanError::TooManyHeaders);

    let mut long = b"OPTIONS sip:h SIP/2.0\r\nX: ".to_vec();
    long.resize(long.len() + sip::MAX_LINE + 1, b'a');
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(scan(&long).unwrap_err(), ScanError::LineTooLong);

    assert_eq!(scan(b"").unwrap_err(), ScanError::Empty);
    assert_eq!(scan(b"\r\n\r\n").unwrap_err(), ScanError::Empty);
    assert!(scan(b"jaK").is_err());
    assert!(scan_for_reply(b"jaK").is_none());
}

#[test]
fn stream_framing_of_captures() {
    let mut stream = Vec::new();
    let mut lens = Vec::new();
    for (_, bytes) in all_fixtures() {
        let msg = scan(&bytes).unwrap();
        let len = msg.head.len() + msg.body.len();
        // Stream messages are exact: drop the keep-alive's surplus byte.
        stream.extend_from_slice(&bytes[..len]);
        lens.push(len);
        stream.extend_from_slice(b"\r\n\r\n");
    }
    let mut pos = 0;
    let mut seen = Vec::new();
    let mut pings = 0;
    while pos < stream.len() {
        match frame(&stream[pos..]).unwrap() {
            Frame::Message(n) => {
                scan(&stream[pos..pos + n]).unwrap();
                seen.push(n);
                pos += n;
            }
            Frame::Ping(n) => {
                pings += 1;
                pos += n;
            }
            Frame::Skip(n) => pos += n,
            Frame::NeedMore => panic!("stalled at {pos}"),
        }
    }
    assert_eq!(seen, lens);
    assert_eq!(pings, lens.len());
}

// ---- property tests ----------------------------------------------------------

fn sip_token() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9.!%*_+`'~-]{1,12}").unwrap()
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    // Visible ASCII, spaces, tabs and UTF-8 bytes; no controls (httparse rejects
    // those, so the differential would compare nothing).
    proptest::collection::vec(
        prop_oneof![
            8 => 0x21u8..0x7f,
            1 => Just(b' '),
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
        ],
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic anywhere in the scanner or its views.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    /// Captures with random corruption (truncation, byte flips, insertions).
    #[test]
    fn corrupted_captures_never_panic(
        which in 0usize..23,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let fixtures = all_fixtures();
        let mut bytes = fixtures[which % fixtures.len()].1.clone();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        exercise(&bytes);
    }

    /// Differential against httparse: wherever it accepts a header block, the
    /// scanner yields the same (name, value) pairs.
    #[test]
    fn matches_httparse_header_pairs(
        headers in proptest::collection::vec((sip_token(), header_value()), 0..12),
        ws_after_colon in 0usize..3,
    ) {
        let mut block = Vec::new();
        for (name, value) in &headers {
            block.extend_from_slice(name.as_bytes());
            block.push(b':');
            block.extend(std::iter::repeat_n(b' ', ws_after_colon));
            block.extend_from_slice(value);
            block.extend_from_slice(b"\r\n");
        }
        block.extend_from_slice(b"\r\n");
        let mut theirs = [httparse::EMPTY_HEADER; 16];
        if let Ok(httparse::Status::Complete((used, parsed))) =
            httparse::parse_headers(&block, &mut theirs)
        {
            let mut ours = [Header::default(); 16];
            let (consumed, n) = sip::scan_headers(&block, &mut ours).expect("scanner rejected what httparse accepted");
            prop_assert_eq!(consumed, used);
            prop_assert_eq!(n, parsed.len());
            for (a, b) in ours[..n].iter().zip(parsed.iter()) {
                prop_assert_eq!(a.name, b.name.as_bytes());
                prop_assert_eq!(a.value, b.value);
            }
        }
    }
}

fn exercise(bytes: &[u8]) {
    let _ = frame(bytes);
    let _ = scan_for_reply(bytes);
    if let Ok(msg) = scan(bytes) {
        let _ = msg.check_views();
        for h in msg.headers() {
            let _ = Via::parse(h.value);
            let _ = AuthHeader::parse(h.value).map(|a| a.params().count());
            let _ = sip::parse_expires(h.value);
            if let Ok(a) = NameAddr::parse(h.value) {
                let _ = (a.tag(), a.expires(), a.q(), a.parse_uri());
            }
            let _ = sip::ListIter::new(h.value).count();
        }
        if let Some(r) = msg.request() {
            let _ = Uri::parse(r.uri).map(|u| u.params().count());
        }
        let mut out = Vec::new();
        ResponseWriter::start(
            &mut out,
            &msg,
            400,
            b"Bad",
            "127.0.0.1:1".parse().unwrap(),
            b"t",
        )
        .finish(b"");
    }
}

/// The httparse oracle on real captures: every capture's header block is
/// accepted by httparse and split into exactly the same pairs.
#[test]
fn httparse_agrees_on_every_capture() {
    for (name, bytes) in all_fixtures() {
        let start_end = bytes.iter().position(|&c| c == b'\n').unwrap() + 1;
        let block = &bytes[start_end..];
        let mut theirs = [httparse::EMPTY_HEADER; 32];
        let httparse::Status::Complete((used, parsed)) =
            httparse::parse_headers(block, &mut theirs).unwrap()
        else {
            panic!("{name}: httparse partial");
        };
        let mut ours = [Header::default(); 32];
        let (consumed, n) = sip::scan_headers(block, &mut ours).unwrap();
        assert_eq!((consumed, n), (used, parsed.len()), "{name}");
        for (a, b) in ours[..n].iter().zip(parsed.iter()) {
            assert_eq!(a.name, b.name.as_bytes(), "{name}");
            assert_eq!(a.value, b.value, "{name}");
        }
    }
}
