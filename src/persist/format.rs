//! The snapshot file format, pure: devices to bytes and back, no files, no
//! clock reads (the caller passes a [`Clock`]).
//!
//! ```text
//! header   "SIPREGST"  version:u32  saved_at_unix_ms:u64
//! records  0x01 len:u32 device-payload        (one per device)
//! trailer  0xFF devices:u64 crc32:u32         (CRC-32 of every byte before it)
//! ```
//!
//! Integers are little-endian; byte strings are `len:u32` then the bytes;
//! optional values are a `0`/`1` byte then the value. Deadlines are stored as
//! wall-clock Unix milliseconds, since the monotonic clock restarts with the
//! process: a binding saved with 600 s left and loaded 100 s later has 500 s
//! left. What dies with the process is not stored: TCP connection references
//! (the device's next request opens a new flow), pending catalog items, timer
//! generations.
//!
//! Decoding trusts nothing: every length is checked against what is left of
//! the input, counts are bounded, and the checksum is verified before any
//! record is believed, so a truncated or bit-flipped file is refused whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::registry::{
    Binding, BindingText, CatalogStatus, Channel, Device, DeviceInfo, GbState, Transport, MAX_AOR,
    MAX_TEXT_PART,
};

pub const MAGIC: &[u8; 8] = b"SIPREGST";
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8;
const TRAILER_LEN: usize = 1 + 8 + 4;
const DEVICE_TAG: u8 = 0x01;
const END_TAG: u8 = 0xFF;

/// Why a snapshot could not be decoded. The file is kept aside whatever the
/// reason; the variant is for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// Not a sipreg snapshot at all.
    BadMagic,
    /// Written by a sipreg with another format version.
    UnsupportedVersion(u32),
    /// Ends before its trailer (a write cut short).
    Truncated,
    /// The bytes are not the ones written (bit flip, partial overwrite).
    ChecksumMismatch,
    /// The checksum matched but a record does not make sense: what the writer
    /// wrote was wrong, or the file was forged.
    Corrupt(&'static str),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::BadMagic => f.write_str("not a sipreg state file"),
            FormatError::UnsupportedVersion(v) => {
                write!(f, "format version {v}, this sipreg reads {VERSION}")
            }
            FormatError::Truncated => f.write_str("truncated (the save was cut short)"),
            FormatError::ChecksumMismatch => f.write_str("checksum mismatch (damaged file)"),
            FormatError::Corrupt(what) => write!(f, "corrupt record: {what}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// One reading of both clocks, to turn monotonic deadlines into wall-clock
/// ones and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// `timer::now_ms()`.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Clock {
    fn to_unix(self, mono_deadline: u64) -> u64 {
        if mono_deadline >= self.mono_ms {
            self.unix_ms.saturating_add(mono_deadline - self.mono_ms)
        } else {
            self.unix_ms.saturating_sub(self.mono_ms - mono_deadline)
        }
    }

    /// The monotonic deadline for a wall-clock one, or `None` when it has passed.
    fn to_mono(self, unix_deadline: u64) -> Option<u64> {
        (unix_deadline > self.unix_ms)
            .then(|| self.mono_ms.saturating_add(unix_deadline - self.unix_ms))
    }
}

/// A device as decoded, ready to be put back in the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub aor: Vec<u8>,
    /// Bindings still live at load time, deadlines on the new monotonic clock.
    pub bindings: Vec<Binding>,
    /// `None` for a device that never spoke GB28181.
    pub gb: Option<GbState>,
}

/// Writes the header; records follow with [`push_device`], then [`finish`].
pub fn push_header(out: &mut Vec<u8>, saved_at_unix_ms: u64) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&saved_at_unix_ms.to_le_bytes());
}

/// Appends one device record.
pub fn push_device(out: &mut Vec<u8>, aor: &[u8], d: &Device, clock: Clock) {
    out.push(DEVICE_TAG);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let start = out.len();
    put_bytes(out, aor);
    put_u32(out, d.bindings.len() as u32);
    for b in &d.bindings {
        put_binding(out, b, clock);
    }
    put_gb(out, d.gb(), clock);
    let len = (out.len() - start) as u32;
    out[len_at..start].copy_from_slice(&len.to_le_bytes());
}

/// Appends the trailer for `devices` records; `crc` is the running CRC-32 of
/// every byte written before this call.
pub fn push_trailer(out: &mut Vec<u8>, devices: u64, mut crc: crc32fast::Hasher) {
    let start = out.len();
    out.push(END_TAG);
    out.extend_from_slice(&devices.to_le_bytes());
    crc.update(&out[start..]);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, v: &[u8]) {
    put_u32(out, v.len() as u32);
    out.extend_from_slice(v);
}

fn put_opt<T: Copy>(out: &mut Vec<u8>, v: Option<T>, put: fn(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put(out, v);
        }
    }
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    put_u64(out, v.to_bits());
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_le_bytes());
}

fn put_binding(out: &mut Vec<u8>, b: &Binding, clock: Clock) {
    put_bytes(out, b.uri());
    match b.instance() {
        None => out.push(0),
        Some(i) => {
            out.push(1);
            put_bytes(out, i);
        }
    }
    put_opt(out, b.reg_id, put_u32);
    put_opt(out, b.q, |o, q| o.extend_from_slice(&q.to_le_bytes()));
    put_u64(out, clock.to_unix(b.expires_at_ms));
    put_bytes(out, b.call_id());
    put_u32(out, b.cseq);
    put_addr(out, b.source);
    out.push(match b.transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    });
    put_bytes(out, b.user_agent());
}

fn put_gb(out: &mut Vec<u8>, gb: &GbState, clock: Clock) {
    out.push(u8::from(gb.known));
    out.push(u8::from(gb.online));
    put_opt(out, gb.last_keepalive_unix, put_u64);
    put_opt(
        out,
        gb.keepalive_deadline_ms.map(|d| clock.to_unix(d)),
        put_u64,
    );
    match gb.catalog {
        CatalogStatus::NeverQueried => out.push(0),
        CatalogStatus::Complete { sn, at_unix } => {
            out.push(1);
            put_u32(out, sn);
            put_u64(out, at_unix);
        }
        // The query dies with the process: what arrived of it stays partial.
        CatalogStatus::Pending {
            sn,
            received,
            expected,
        }
        | CatalogStatus::Partial {
            sn,
            received,
            expected,
        } => {
            out.push(2);
            put_u32(out, sn);
            put_u64(out, received as u64);
            put_opt(out, expected.map(|e| e as u64), put_u64);
        }
        CatalogStatus::TimedOut { sn } => {
            out.push(3);
            put_u32(out, sn);
        }
    }
    put_u32(out, gb.channels.len() as u32);
    for c in &gb.channels {
        for s in [
            &c.device_id,
            &c.name,
            &c.manufacturer,
            &c.model,
            &c.status,
            &c.parent_id,
            &c.address,
        ] {
            put_bytes(out, s.as_bytes());
        }
        put_opt(out, c.longitude, put_f64);
        put_opt(out, c.latitude, put_f64);
    }
    match &gb.info {
        None => out.push(0),
        Some(i) => {
            out.push(1);
            put_bytes(out, i.manufacturer.as_bytes());
            put_bytes(out, i.model.as_bytes());
            put_bytes(out, i.firmware.as_bytes());
            put_opt(out, i.channels, put_u32);
        }
    }
}

/// A checked snapshot: header and trailer verified, records not yet decoded.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub saved_at_unix_ms: u64,
    pub devices: u64,
    records: &'a [u8],
}

/// Verifies magic, version, trailer and checksum.
pub fn open(file: &[u8]) -> Result<Snapshot<'_>, FormatError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        // A file cut inside the magic is still recognisably ours.
        return Err(if MAGIC.starts_with(file) {
            FormatError::Truncated
        } else {
            FormatError::BadMagic
        });
    }
    let mut header = Reader::new(&file[MAGIC.len()..]);
    let version = header.u32().map_err(|_| FormatError::Truncated)?;
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let saved_at_unix_ms = header.u64().map_err(|_| FormatError::Truncated)?;
    if file.len() < HEADER_LEN + TRAILER_LEN {
        return Err(FormatError::Truncated);
    }
    let (body, crc_bytes) = file.split_at(file.len() - 4);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc_bytes);
    if crc32fast::hash(body) != u32::from_le_bytes(stored) {
        // A save cut short has no valid trailer either; the checksum cannot
        // tell truncation from damage, the end tag's position can.
        return Err(if body[body.len() - 9] != END_TAG {
            FormatError::Truncated
        } else {
            FormatError::ChecksumMismatch
        });
    }
    let trailer = &body[body.len() - 9..];
    let mut count = [0u8; 8];
    count.copy_from_slice(&trailer[1..]);
    Ok(Snapshot {
        saved_at_unix_ms,
        devices: u64::from_le_bytes(count),
        records: &body[HEADER_LEN..body.len() - 9],
    })
}

impl<'a> Snapshot<'a> {
    /// Decodes every record, calling `f` for each device that still has
    /// something to keep at `clock` (a live binding or GB28181 state).
    /// Returns how many records were read.
    pub fn decode(&self, clock: Clock, mut f: impl FnMut(Restored)) -> Result<u64, FormatError> {
        let mut r = Reader::new(self.records);
        let mut n = 0u64;
        while !r.is_empty() {
            if r.u8()? != DEVICE_TAG {
                return Err(FormatError::Corrupt("unknown record tag"));
            }
            let len = r.u32()? as usize;
            let mut rec = Reader::new(r.take(len)?);
            let device = device(&mut rec, clock)?;
            if !rec.is_empty() {
                return Err(FormatError::Corrupt("trailing bytes in a device record"));
            }
            n += 1;
            if !device.bindings.is_empty() || device.gb.as_ref().is_some_and(|g| g.known) {
                f(device);
            }
        }
        if n != self.devices {
            return Err(FormatError::Corrupt(
                "device count differs from the trailer",
            ));
        }
        Ok(n)
    }
}

fn device(r: &mut Reader<'_>, clock: Clock) -> Result<Restored, FormatError> {
    let aor = r.bytes()?;
    if aor.is_empty() || aor.len() > MAX_AOR {
        return Err(FormatError::Corrupt("address-of-record length"));
    }
    let count = r.count(MIN_BINDING_LEN)?;
    let mut bindings = Vec::with_capacity(count);
    for _ in 0..count {
        let b = binding(r, clock)?;
        if let Some(b) = b {
            bindings.push(b);
        }
    }
    let gb = gb_state(r, clock)?;
    Ok(Restored {
        aor: aor.to_vec(),
        bindings,
        // Phones have nothing here: they get no GB28181 state back.
        gb: Some(gb).filter(|g| *g != GbState::default()),
    })
}

/// Fewest bytes a binding can take (bounds a count before allocating for it).
const MIN_BINDING_LEN: usize = 4 + 1 + 1 + 1 + 8 + 4 + 4 + 7 + 1 + 4;
/// Fewest bytes a channel can take.
const MIN_CHANNEL_LEN: usize = 7 * 4 + 2;

/// Decodes a binding; `None` when it expired while sipreg was down.
fn binding(r: &mut Reader<'_>, clock: Clock) -> Result<Option<Binding>, FormatError> {
    let uri = r.text()?;
    let instance = match r.u8()? {
        0 => None,
        1 => Some(r.text()?),
        _ => return Err(FormatError::Corrupt("option flag")),
    };
    let reg_id = r.opt(Reader::u32)?;
    let q = r.opt(Reader::u16)?;
    if q.is_some_and(|q| q > 1000) {
        return Err(FormatError::Corrupt("q-value above 1"));
    }
    let expires_unix = r.u64()?;
    let call_id = r.text()?;
    let cseq = r.u32()?;
    let source = r.addr()?;
    let transport = match r.u8()? {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => return Err(FormatError::Corrupt("transport")),
    };
    let user_agent = r.text()?;
    Ok(clock.to_mono(expires_unix).map(|expires_at_ms| {
        let text = BindingText {
            uri,
            instance,
            call_id,
            user_agent,
        };
        // The connection closed with the old process: `conn` stays empty.
        let mut b = Binding::new(text, source, transport);
        b.reg_id = reg_id;
        b.q = q;
        b.expires_at_ms = expires_at_ms;
        b.cseq = cseq;
        b
    }))
}

fn gb_state(r: &mut Reader<'_>, clock: Clock) -> Result<GbState, FormatError> {
    let known = r.bool()?;
    let online = r.bool()?;
    let last_keepalive_unix = r.opt(Reader::u64)?;
    // A device whose keep-alive deadline passed while sipreg was down is
    // offline now (GB/T 28181 §9.6).
    let keepalive_deadline_ms = r.opt(Reader::u64)?.and_then(|d| clock.to_mono(d));
    let online = online && keepalive_deadline_ms.is_some();
    let catalog = match r.u8()? {
        0 => CatalogStatus::NeverQueried,
        1 => CatalogStatus::Complete {
            sn: r.u32()?,
            at_unix: r.u64()?,
        },
        2 => CatalogStatus::Partial {
            sn: r.u32()?,
            received: r.usize()?,
            expected: r.opt(Reader::usize)?,
        },
        3 => CatalogStatus::TimedOut { sn: r.u32()? },
        _ => return Err(FormatError::Corrupt("catalog status")),
    };
    let count = r.count(MIN_CHANNEL_LEN)?;
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(Channel {
            device_id: r.string()?,
            name: r.string()?,
            manufacturer: r.string()?,
            model: r.string()?,
            status: r.string()?,
            parent_id: r.string()?,
            address: r.string()?,
            longitude: r.opt(Reader::f64)?,
            latitude: r.opt(Reader::f64)?,
        });
    }
    let info = match r.u8()? {
        0 => None,
        1 => Some(Box::new(DeviceInfo {
            manufacturer: r.string()?,
            model: r.string()?,
            firmware: r.string()?,
            channels: r.opt(Reader::u32)?,
        })),
        _ => return Err(FormatError::Corrupt("option flag")),
    };
    Ok(GbState {
        known,
        online,
        last_keepalive_unix,
        keepalive_deadline_ms: keepalive_deadline_ms.filter(|_| online),
        keepalive_generation: 0,
        keepalive_timer_ms: None,
        channels,
        catalog,
        pending_channels: Vec::new(),
        info,
    })
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(rest: &'a [u8]) -> Self {
        Reader { rest }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if n > self.rest.len() {
            return Err(FormatError::Corrupt("a length runs past the record"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn bool(&mut self) -> Result<bool, FormatError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(FormatError::Corrupt("boolean")),
        }
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        self.array().map(u64::from_le_bytes)
    }

    fn usize(&mut self) -> Result<usize, FormatError> {
        usize::try_from(self.u64()?).map_err(|_| FormatError::Corrupt("count"))
    }

    fn f64(&mut self) -> Result<f64, FormatError> {
        self.u64().map(f64::from_bits)
    }

    fn opt<T>(
        &mut self,
        read: fn(&mut Self) -> Result<T, FormatError>,
    ) -> Result<Option<T>, FormatError> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(FormatError::Corrupt("option flag")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A binding's string: longer than a binding can hold is corrupt.
    fn text(&mut self) -> Result<&'a [u8], FormatError> {
        let b = self.bytes()?;
        if b.len() > MAX_TEXT_PART {
            return Err(FormatError::Corrupt("binding text too long"));
        }
        Ok(b)
    }

    fn string(&mut self) -> Result<String, FormatError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| FormatError::Corrupt("text is not UTF-8"))
    }

    /// A count of items each at least `min_len` bytes long: one that could not
    /// fit in what is left is refused before anything is allocated for it.
    fn count(&mut self, min_len: usize) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_len) > self.rest.len() {
            return Err(FormatError::Corrupt("a count larger than its record"));
        }
        Ok(n)
    }

    fn addr(&mut self) -> Result<SocketAddr, FormatError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(FormatError::Corrupt("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    const CLOCK: Clock = Clock {
        mono_ms: 50_000,
        unix_ms: 1_700_000_000_000,
    };

    fn binding(uri: &str, expires_at_ms: u64) -> Binding {
        let text = BindingText {
            uri: uri.as_bytes(),
            instance: Some(b"<urn:uuid:1>"),
            call_id: b"call-1",
            user_agent: b"Linphone",
        };
        let mut b = Binding::new(text, "[2001:db8::1]:5062".parse().unwrap(), Transport::Tcp);
        b.reg_id = Some(1);
        b.q = Some(500);
        b.expires_at_ms = expires_at_ms;
        b.cseq = 42;
        b
    }

    fn camera_gb() -> GbState {
        GbState {
            known: true,
            online: true,
            last_keepalive_unix: Some(1_699_999_990),
            keepalive_deadline_ms: Some(CLOCK.mono_ms + 170_000),
            catalog: CatalogStatus::Complete {
                sn: 7,
                at_unix: 1_699_999_000,
            },
            channels: vec![Channel {
                device_id: "34020000001320000001".into(),
                name: "门口".into(),
                longitude: Some(116.4),
                ..Channel::default()
            }],
            info: Some(Box::new(DeviceInfo {
                manufacturer: "Hikvision".into(),
                channels: Some(1),
                ..DeviceInfo::default()
            })),
            ..GbState::default()
        }
    }

    /// A snapshot of two devices: a phone and a GB28181 camera.
    fn snapshot_bytes() -> Vec<u8> {
        let r = Registry::new();
        r.modify(b"alice@example.com", |d| {
            d.bindings
                .push(binding("sip:alice@10.0.0.1", CLOCK.mono_ms + 600_000));
            d.bindings
                .push(binding("sip:alice@10.0.0.2", CLOCK.mono_ms + 5_000));
        });
        r.modify(b"34020000001110000001", |d| {
            let mut b = binding(
                "sip:34020000001110000001@10.0.0.9:5060",
                CLOCK.mono_ms + 3_600_000,
            );
            b.source = "10.0.0.9:5060".parse().unwrap();
            b.transport = Transport::Udp;
            d.bindings.push(b);
            let gb = d.gb_mut();
            *gb = GbState {
                keepalive_generation: gb.keepalive_generation,
                ..camera_gb()
            };
        });
        let mut out = Vec::new();
        push_header(&mut out, CLOCK.unix_ms);
        let mut n = 0;
        for k in r.keys() {
            r.read(&k, |d| push_device(&mut out, &k, d.unwrap(), CLOCK));
            n += 1;
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out);
        push_trailer(&mut out, n, crc);
        out
    }

    fn decode_all(bytes: &[u8], clock: Clock) -> Result<Vec<Restored>, FormatError> {
        let mut v = Vec::new();
        open(bytes)?.decode(clock, |d| v.push(d))?;
        v.sort_by(|a, b| a.aor.cmp(&b.aor));
        Ok(v)
    }

    #[test]
    fn round_trip_moves_deadlines_onto_the_new_clock() {
        let bytes = snapshot_bytes();
        // Restarted 100 s later, on a monotonic clock that began anew.
        let later = Clock {
            mono_ms: 7,
            unix_ms: CLOCK.unix_ms + 100_000,
        };
        let v = decode_all(&bytes, later).unwrap();
        assert_eq!(v.len(), 2);
        let (camera, alice) = (&v[0], &v[1]);
        assert_eq!(alice.aor, b"alice@example.com");
        // The 5 s binding expired while down; the 600 s one has 500 s left.
        assert_eq!(alice.bindings.len(), 1);
        let b = &alice.bindings[0];
        assert_eq!(b.expires_at_ms, 7 + 500_000);
        assert_eq!(
            (b.uri(), b.q, b.reg_id, b.cseq),
            (&b"sip:alice@10.0.0.1"[..], Some(500), Some(1), 42)
        );
        assert_eq!(b.source, "[2001:db8::1]:5062".parse().unwrap());
        assert_eq!(b.transport, Transport::Tcp);
        assert_eq!(b.instance(), Some(&b"<urn:uuid:1>"[..]));
        assert_eq!(b.user_agent(), b"Linphone");
        assert_eq!(b.conn, None);

        assert_eq!(camera.aor, b"34020000001110000001");
        let want = GbState {
            keepalive_deadline_ms: Some(7 + 70_000),
            keepalive_generation: 0,
            ..camera_gb()
        };
        assert_eq!(camera.gb, Some(want));
        // A phone gets no GB28181 state back.
        assert_eq!(alice.gb, None);
    }

    #[test]
    fn a_keepalive_deadline_passed_while_down_means_offline() {
        let later = Clock {
            mono_ms: 0,
            unix_ms: CLOCK.unix_ms + 200_000,
        };
        let v = decode_all(&snapshot_bytes(), later).unwrap();
        let gb = v[0].gb.as_ref().unwrap();
        assert!(gb.known && !gb.online);
        assert_eq!(gb.keepalive_deadline_ms, None);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = snapshot_bytes();
        for len in 0..bytes.len() {
            let e = decode_all(&bytes[..len], CLOCK).unwrap_err();
            assert!(
                matches!(e, FormatError::Truncated | FormatError::ChecksumMismatch),
                "{len}: {e:?}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_refused() {
        let bytes = snapshot_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode_all(&b, CLOCK).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn other_files_and_versions_are_named() {
        assert_eq!(
            open(b"hello world, this is not ours").map(|_| ()),
            Err(FormatError::BadMagic)
        );
        assert_eq!(open(b"SIPR").map(|_| ()), Err(FormatError::Truncated));
        let mut b = snapshot_bytes();
        b[8] = 2;
        assert_eq!(
            open(&b).map(|_| ()),
            Err(FormatError::UnsupportedVersion(2))
        );
    }

    /// A well-formed file whose record lies about a count: refused before
    /// anything of that size is allocated.
    #[test]
    fn counts_are_bounded_by_the_record() {
        let mut out = Vec::new();
        push_header(&mut out, 0);
        out.push(DEVICE_TAG);
        let mut rec = Vec::new();
        put_bytes(&mut rec, b"a@b");
        put_u32(&mut rec, u32::MAX);
        put_u32(&mut out, rec.len() as u32);
        out.extend_from_slice(&rec);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out);
        push_trailer(&mut out, 1, crc);
        assert_eq!(
            decode_all(&out, CLOCK),
            Err(FormatError::Corrupt("a count larger than its record"))
        );
    }
}
