//! MANSCDP bodies (GB/T 28181 Annex A): decoding GB2312/GBK to UTF-8 and
//! reading the few documents a platform handles with roxmltree. Never panics on
//! input; every failure is a typed [`XmlError`].

use std::borrow::Cow;

use crate::registry::{Channel, DeviceInfo};

/// Largest body parsed; a catalog part is a few KiB, the UDP limit caps the rest.
pub const MAX_BODY: usize = 64 * 1024;
/// Most items accepted from one catalog part (memory per device stays bounded).
pub const MAX_ITEMS_PER_PART: usize = 1024;
/// Deepest element nesting parsed. roxmltree's tokenizer recurses once per
/// level, so a 64 KiB body of `<a><a><a>…` (some 20 000 levels) would exhaust
/// a worker thread's stack and abort the process; MANSCDP documents are four
/// levels deep (Response, DeviceList, Item, Info).
pub const MAX_DEPTH: usize = 32;
/// Longest text kept from one field (channel name, address, firmware…), in
/// bytes; longer values are cut at a character boundary. GB/T 28181 ids are 20
/// digits and names a few dozen characters, so only abuse is cut, and a device
/// keeps at most `MAX_CHANNELS` × 7 fields of this size however many catalog
/// parts it sends.
pub const MAX_FIELD: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlError {
    TooLarge,
    /// Elements nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Not well-formed XML.
    Malformed,
    /// Well-formed, but without the `CmdType` every MANSCDP document has.
    MissingCmdType,
}

impl XmlError {
    pub fn reason(self) -> &'static str {
        match self {
            XmlError::TooLarge => "XML Body Too Large",
            XmlError::TooDeep => "XML Body Nested Too Deeply",
            XmlError::Malformed => "Malformed XML Body",
            XmlError::MissingCmdType => "MANSCDP Body Without CmdType",
        }
    }
}

/// The documents the platform acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum Manscdp {
    Keepalive {
        device_id: String,
    },
    /// Any other `<Notify>` (Alarm, MediaStatus…): acknowledged and counted.
    Notify {
        cmd_type: String,
    },
    Catalog {
        device_id: String,
        sn: u32,
        sum_num: Option<usize>,
        items: Vec<Channel>,
        /// Items of this part beyond [`MAX_ITEMS_PER_PART`], not parsed.
        dropped: usize,
    },
    DeviceInfo {
        device_id: String,
        sn: u32,
        info: DeviceInfo,
    },
    /// Another `<Response>` or a `<Query>`/`<Control>` sent to the platform.
    Other {
        root: String,
        cmd_type: String,
    },
}

/// Decodes `body` to text: GB2312 and GBK (declared in the XML declaration, as
/// Hikvision and Dahua do) through encoding_rs's GBK decoder, a superset of
/// GB2312; anything else as UTF-8, with invalid bytes replaced.
pub fn decode(body: &[u8]) -> Cow<'_, str> {
    if declares_gbk(body) {
        let (text, _, _) = encoding_rs::GBK.decode(body);
        text
    } else {
        String::from_utf8_lossy(body)
    }
}

/// True when the XML declaration names GB2312, GBK or GB18030.
fn declares_gbk(body: &[u8]) -> bool {
    let Some(decl) = body.strip_prefix(b"<?xml") else {
        return false;
    };
    let decl = &decl[..decl.windows(2).position(|w| w == b"?>").unwrap_or(0)];
    let Some(at) = decl
        .windows(8)
        .position(|w| w.eq_ignore_ascii_case(b"encoding"))
    else {
        return false;
    };
    let mut value = decl[at + 8..]
        .iter()
        .skip_while(|&&c| matches!(c, b' ' | b'=' | b'"' | b'\''));
    matches!(
        (value.next(), value.next()),
        (Some(g), Some(b)) if g.eq_ignore_ascii_case(&b'g') && b.eq_ignore_ascii_case(&b'b')
    )
}

pub fn parse(body: &[u8]) -> Result<Manscdp, XmlError> {
    if body.len() > MAX_BODY {
        return Err(XmlError::TooLarge);
    }
    let text = decode(body);
    // roxmltree reads UTF-8 text; the declaration's encoding label is only
    // informative once decoded, so it is blanked out for it.
    let text = strip_declaration(&text);
    if nesting_exceeds(text.as_bytes(), MAX_DEPTH) {
        return Err(XmlError::TooDeep);
    }
    let doc = roxmltree::Document::parse(text).map_err(|_| XmlError::Malformed)?;
    let root = doc.root_element();
    let child = |name: &str| {
        root.children()
            .find(|n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
    };
    let text_of = |name: &str| {
        child(name)
            .and_then(|n| n.text())
            .map(str::trim)
            .unwrap_or("")
    };
    let cmd_type = text_of("CmdType");
    if cmd_type.is_empty() {
        return Err(XmlError::MissingCmdType);
    }
    let device_id = capped(text_of("DeviceID"));
    // Not a u32 (absent, signed, overlong): 0, which matches no query of ours.
    let sn = text_of("SN").parse().unwrap_or(0);
    let root_name = root.tag_name().name();
    let doc = if root_name.eq_ignore_ascii_case("Notify") {
        if cmd_type.eq_ignore_ascii_case("Keepalive") {
            Manscdp::Keepalive { device_id }
        } else {
            Manscdp::Notify {
                cmd_type: capped(cmd_type),
            }
        }
    } else if root_name.eq_ignore_ascii_case("Response") && cmd_type.eq_ignore_ascii_case("Catalog")
    {
        let mut items = Vec::new();
        let mut dropped = 0;
        if let Some(list) = child("DeviceList") {
            let mut all = list
                .children()
                .filter(|n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case("Item"));
            items.extend(all.by_ref().take(MAX_ITEMS_PER_PART).map(channel));
            dropped = all.count();
        }
        Manscdp::Catalog {
            device_id,
            sn,
            // Any size parses (`usize`); the platform caps what it waits for.
            sum_num: text_of("SumNum").parse().ok(),
            items,
            dropped,
        }
    } else if root_name.eq_ignore_ascii_case("Response")
        && cmd_type.eq_ignore_ascii_case("DeviceInfo")
    {
        Manscdp::DeviceInfo {
            device_id,
            sn,
            info: DeviceInfo {
                manufacturer: capped(text_of("Manufacturer")),
                model: capped(text_of("Model")),
                firmware: capped(text_of("Firmware")),
                channels: text_of("Channel").parse().ok(),
            },
        }
    } else {
        Manscdp::Other {
            root: capped(root_name),
            cmd_type: capped(cmd_type),
        }
    };
    Ok(doc)
}

fn channel(item: roxmltree::Node<'_, '_>) -> Channel {
    let field = |name: &str| {
        item.children()
            .find(|n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name))
            .and_then(|n| n.text())
            .map(str::trim)
            .unwrap_or("")
    };
    let coord = |name: &str| field(name).parse::<f64>().ok().filter(|v| v.is_finite());
    Channel {
        device_id: capped(field("DeviceID")),
        name: capped(field("Name")),
        manufacturer: capped(field("Manufacturer")),
        model: capped(field("Model")),
        status: capped(field("Status")),
        parent_id: capped(field("ParentID")),
        address: capped(field("Address")),
        longitude: coord("Longitude"),
        latitude: coord("Latitude"),
    }
}

/// At most [`MAX_FIELD`] bytes of `s`, cut at a character boundary.
fn capped(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_string();
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// True when elements open more than `max` deep before the text ends or stops
/// being XML. It reads markup the way an XML parser does (comments, CDATA,
/// processing instructions and declarations skipped, quoted attribute values
/// may hold `>` and `/>`), so it never counts less than the parser would
/// recurse; a malformed text may be overcounted, which only rejects it sooner.
fn nesting_exceeds(text: &[u8], max: usize) -> bool {
    use memchr::memmem;
    // Offset just past `end` in `hay`, or its length when `end` is missing.
    let past = |hay: &[u8], end: &[u8]| memmem::find(hay, end).map_or(hay.len(), |p| p + end.len());
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &text[i..]) {
        i += off + 1;
        let rest = &text[i..];
        i += match rest {
            [b'!', b'-', b'-', ..] => past(rest, b"-->"),
            [b'!', b'[', b'C', b'D', b'A', b'T', b'A', b'[', ..] => past(rest, b"]]>"),
            [b'?', ..] => past(rest, b"?>"),
            [b'!', ..] => past(rest, b">"),
            [b'/', ..] => {
                depth = depth.saturating_sub(1);
                past(rest, b">")
            }
            _ => {
                depth += 1;
                if depth > max {
                    return true;
                }
                let mut quote = None;
                let mut end = rest.len();
                for (j, &c) in rest.iter().enumerate() {
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == b'"' || c == b'\'' => quote = Some(c),
                        None if c == b'>' => {
                            if j > 0 && rest[j - 1] == b'/' {
                                depth -= 1;
                            }
                            end = j + 1;
                            break;
                        }
                        None => {}
                    }
                }
                end
            }
        };
    }
    false
}

/// Drops a leading `<?xml …?>` declaration: after decoding, its encoding label
/// no longer describes the text.
fn strip_declaration(text: &str) -> &str {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with("<?xml") {
        if let Some(end) = t.find("?>") {
            return &t[end + 2..];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hikvision_keepalive_and_catalog_query() {
        let ka = b"<?xml version=\"1.0\"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>2749</SN>\r\n<DeviceID>130909113319427420</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n";
        assert_eq!(
            parse(ka),
            Ok(Manscdp::Keepalive {
                device_id: "130909113319427420".into()
            })
        );
        let q = b"<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>248</SN>\r\n<DeviceID>130909113319427420</DeviceID>\r\n</Query>\r\n";
        assert!(matches!(parse(q), Ok(Manscdp::Other { ref root, .. }) if root == "Query"));
    }

    #[test]
    fn gb2312_catalog_with_chinese_names() {
        let xml = "<?xml version=\"1.0\" encoding=\"GB2312\"?>\r\n<Response><CmdType>Catalog</CmdType><SN>7</SN><DeviceID>34020000001320000001</DeviceID><SumNum>2</SumNum><DeviceList Num=\"2\"><Item><DeviceID>34020000001310000001</DeviceID><Name>大门通道</Name><Manufacturer>Hikvision</Manufacturer><Status>ON</Status><Longitude>117.25</Longitude><Latitude>31.83</Latitude></Item><Item><DeviceID>34020000001310000002</DeviceID><Name>停车场</Name></Item></DeviceList></Response>";
        let (bytes, _, _) = encoding_rs::GBK.encode(xml);
        let Ok(Manscdp::Catalog {
            sn, sum_num, items, ..
        }) = parse(&bytes)
        else {
            panic!("catalog expected");
        };
        assert_eq!((sn, sum_num), (7, Some(2)));
        assert_eq!(items[0].name, "大门通道");
        assert_eq!(items[0].longitude, Some(117.25));
        assert_eq!(items[1].name, "停车场");
        assert_eq!(items[1].latitude, None);
    }

    fn catalog(sum_num: &str, items: &str) -> Result<Manscdp, XmlError> {
        parse(format!("<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>34020000001320000001</DeviceID><SumNum>{sum_num}</SumNum><DeviceList>{items}</DeviceList></Response>").as_bytes())
    }

    #[test]
    fn catalog_sizes_are_capped() {
        // More items than one part may carry: the rest are counted, not kept.
        let items = "<Item><DeviceID>1</DeviceID></Item>".repeat(MAX_ITEMS_PER_PART + 77);
        let Ok(Manscdp::Catalog { items, dropped, .. }) = catalog("1", &items) else {
            panic!("catalog expected");
        };
        assert_eq!((items.len(), dropped), (MAX_ITEMS_PER_PART, 77));

        // Overlong fields are cut at a character boundary (3-byte characters).
        let name = "通".repeat(200);
        let addr = "a".repeat(10_000);
        let item = format!(
            "<Item><DeviceID>{addr}</DeviceID><Name>{name}</Name><Address>{addr}</Address></Item>"
        );
        let Ok(Manscdp::Catalog { items, dropped, .. }) = catalog("1", &item) else {
            panic!("catalog expected");
        };
        assert_eq!(dropped, 0);
        assert_eq!(items[0].device_id.len(), MAX_FIELD);
        assert_eq!(items[0].address.len(), MAX_FIELD);
        assert_eq!(items[0].name, "通".repeat(MAX_FIELD / 3));

        // SumNum and SN of any size parse without overflow; nonsense is None / 0.
        for (sum, want) in [
            ("2147483648", Some(1 << 31)),
            ("0", Some(0)),
            ("-1", None),
            ("99999999999999999999999999", None),
            ("1e9", None),
        ] {
            let Ok(Manscdp::Catalog { sum_num, .. }) = catalog(sum, "") else {
                panic!("catalog expected");
            };
            assert_eq!(sum_num, want, "{sum}");
        }
        let Ok(Manscdp::Catalog { sn, .. }) =
            parse(b"<Response><CmdType>Catalog</CmdType><SN>4294967296</SN></Response>")
        else {
            panic!("catalog expected");
        };
        assert_eq!(sn, 0);
    }

    #[test]
    fn hostile_documents_fail_cleanly() {
        // Deep nesting within the body limit: no stack exhaustion.
        let deep = format!(
            "<Notify><CmdType>Alarm</CmdType>{}{}</Notify>",
            "<a>".repeat(9_000),
            "</a>".repeat(9_000)
        );
        assert!(deep.len() < MAX_BODY);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        let unclosed = format!("<Notify>{}", "<a>".repeat(21_000));
        assert_eq!(parse(unclosed.as_bytes()), Err(XmlError::TooDeep));
        // Quoted '>' and "/>" inside attribute values hide no levels.
        let sneaky = format!(
            "<Notify><CmdType>Alarm</CmdType>{}</Notify>",
            "<a x=\"/>\" y='>'>".repeat(MAX_DEPTH)
        );
        assert_eq!(parse(sneaky.as_bytes()), Err(XmlError::TooDeep));
        // Within the limit, nesting parses; self-closing and closed siblings
        // do not add up.
        let ok = format!(
            "<Notify><CmdType>Alarm</CmdType>{}{}{}<!-- <a><a> --><![CDATA[<a><a>]]></Notify>",
            "<a>".repeat(MAX_DEPTH - 1),
            "</a>".repeat(MAX_DEPTH - 1),
            "<b/><c x='1'></c>".repeat(2_000)
        );
        assert!(matches!(parse(ok.as_bytes()), Ok(Manscdp::Notify { .. })));
        assert!(!nesting_exceeds(b"<a><b><c/></b><d/></a>", 3));
        assert!(nesting_exceeds(b"<a><b><c></c></b></a>", 2));
        assert!(!nesting_exceeds(b"<a><?pi <b><c>?><!-- <b><c> --></a>", 1));
        // Entity expansion (billion laughs) is refused: DTDs are not allowed.
        let lol = b"<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]><Notify><CmdType>&c;</CmdType></Notify>";
        assert_eq!(parse(lol), Err(XmlError::Malformed));
        // A device-info answer with overlong values keeps at most MAX_FIELD.
        let big = "x".repeat(20_000);
        let di = format!("<Response><CmdType>DeviceInfo</CmdType><Manufacturer>{big}</Manufacturer><Channel>4294967296</Channel></Response>");
        let Ok(Manscdp::DeviceInfo { info, .. }) = parse(di.as_bytes()) else {
            panic!("device info expected");
        };
        assert_eq!(info.manufacturer.len(), MAX_FIELD);
        assert_eq!(info.channels, None);
    }

    #[test]
    fn encoding_declarations() {
        assert!(declares_gbk(
            b"<?xml version=\"1.0\" encoding=\"GB2312\"?><a/>"
        ));
        assert!(declares_gbk(b"<?xml version='1.0' encoding='gbk'?><a/>"));
        assert!(!declares_gbk(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><gb/>"
        ));
        assert!(!declares_gbk(
            b"<?xml version=\"1.0\"?><DeviceID>gbk</DeviceID>"
        ));
        assert!(!declares_gbk(b"<Notify/>"));
    }

    #[test]
    fn device_info_and_errors() {
        let di = b"<Response><CmdType>DeviceInfo</CmdType><SN>3</SN><DeviceID>1</DeviceID><Manufacturer>Hikvision</Manufacturer><Model>DS-2CD</Model><Firmware>V5.5</Firmware><Channel>4</Channel></Response>";
        let Ok(Manscdp::DeviceInfo { info, .. }) = parse(di) else {
            panic!("device info expected");
        };
        assert_eq!(info.channels, Some(4));
        assert_eq!(info.firmware, "V5.5");
        assert_eq!(
            parse(b"<Notify><CmdType>Keepalive</Notify>"),
            Err(XmlError::Malformed)
        );
        assert_eq!(parse(b"<Notify></Notify>"), Err(XmlError::MissingCmdType));
        assert_eq!(parse(b""), Err(XmlError::Malformed));
        assert_eq!(parse(&vec![b' '; MAX_BODY + 1]), Err(XmlError::TooLarge));
        assert!(matches!(
            parse(b"<Notify><CmdType>Alarm</CmdType></Notify>"),
            Ok(Manscdp::Notify { .. })
        ));
    }
}
