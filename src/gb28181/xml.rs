//! MANSCDP bodies (GB/T 28181 Annex A): decoding GB2312/GBK to UTF-8 and
//! reading the few documents a platform handles with roxmltree. Never panics on
//! input; every failure is a typed [`XmlError`].

use std::borrow::Cow;

use crate::registry::{Channel, DeviceInfo};

/// Largest body parsed; a catalog part is a few KiB, the UDP limit caps the rest.
pub const MAX_BODY: usize = 64 * 1024;
/// Most items accepted from one catalog part (memory per device stays bounded).
pub const MAX_ITEMS_PER_PART: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlError {
    TooLarge,
    /// Not well-formed XML.
    Malformed,
    /// Well-formed, but without the `CmdType` every MANSCDP document has.
    MissingCmdType,
}

impl XmlError {
    pub fn reason(self) -> &'static str {
        match self {
            XmlError::TooLarge => "XML Body Too Large",
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
    let device_id = text_of("DeviceID").to_string();
    let sn = text_of("SN").parse().unwrap_or(0);
    let root_name = root.tag_name().name();
    let doc = if root_name.eq_ignore_ascii_case("Notify") {
        if cmd_type.eq_ignore_ascii_case("Keepalive") {
            Manscdp::Keepalive { device_id }
        } else {
            Manscdp::Notify {
                cmd_type: cmd_type.to_string(),
            }
        }
    } else if root_name.eq_ignore_ascii_case("Response") && cmd_type.eq_ignore_ascii_case("Catalog")
    {
        let items = child("DeviceList")
            .map(|list| {
                list.children()
                    .filter(|n| n.is_element() && n.tag_name().name().eq_ignore_ascii_case("Item"))
                    .take(MAX_ITEMS_PER_PART)
                    .map(channel)
                    .collect()
            })
            .unwrap_or_default();
        Manscdp::Catalog {
            device_id,
            sn,
            sum_num: text_of("SumNum").parse().ok(),
            items,
        }
    } else if root_name.eq_ignore_ascii_case("Response")
        && cmd_type.eq_ignore_ascii_case("DeviceInfo")
    {
        Manscdp::DeviceInfo {
            device_id,
            sn,
            info: DeviceInfo {
                manufacturer: text_of("Manufacturer").to_string(),
                model: text_of("Model").to_string(),
                firmware: text_of("Firmware").to_string(),
                channels: text_of("Channel").parse().ok(),
            },
        }
    } else {
        Manscdp::Other {
            root: root_name.to_string(),
            cmd_type: cmd_type.to_string(),
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
        device_id: field("DeviceID").to_string(),
        name: field("Name").to_string(),
        manufacturer: field("Manufacturer").to_string(),
        model: field("Model").to_string(),
        status: field("Status").to_string(),
        parent_id: field("ParentID").to_string(),
        address: field("Address").to_string(),
        longitude: coord("Longitude"),
        latitude: coord("Latitude"),
    }
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
