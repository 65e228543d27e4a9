//! The device table: one `DashMap` from address-of-record to [`Device`], shared
//! by every worker. It is reached only through closures, so no shard guard
//! escapes this module and no lock is held across a syscall or a channel send
//! (STYLE habit 12). Timer events carry `(aor, generation)`: any change bumps the
//! generation, which turns every older pending event into a no-op.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::sip::Uri;

/// The table key: normalised `user@host`, or a bare 20-digit GB28181 device id.
/// Shared with timer events so scheduling an expiry never allocates.
pub type Aor = Arc<[u8]>;

/// Longest address-of-record key accepted (user@host); longer is a 400.
pub const MAX_AOR: usize = 256;

/// Builds the table key into `buf`: `user@host` with the host in lower case
/// and no port (RFC 3261 §10.3 step 5), or the bare user when it is a 20-digit
/// GB28181 device id (GB/T 28181 §4.2: the id names the device on its own).
pub fn aor_key<'b>(uri: &Uri<'_>, buf: &'b mut [u8; MAX_AOR]) -> Option<&'b [u8]> {
    let user = uri.user?;
    if user.len() == 20 && user.iter().all(u8::is_ascii_digit) {
        buf[..20].copy_from_slice(user);
        return Some(&buf[..20]);
    }
    let len = user.len() + 1 + uri.host.len();
    if len > MAX_AOR {
        return None;
    }
    buf[..user.len()].copy_from_slice(user);
    buf[user.len()] = b'@';
    for (d, s) in buf[user.len() + 1..len].iter_mut().zip(uri.host) {
        *d = s.to_ascii_lowercase();
    }
    Some(&buf[..len])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Identifies one TCP connection owned by one worker, so a later request to the
/// device can be sent over the flow it registered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub worker: u16,
    pub token: u32,
    /// Unique per connection for the life of the process (tokens are reused).
    pub id: u64,
}

/// One location binding (RFC 3261 §10): a Contact plus what the registrar
/// learned about where it really is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the device sent it.
    pub uri: Box<[u8]>,
    /// RFC 5626 `+sip.instance`, when present.
    pub instance: Option<Box<[u8]>>,
    pub reg_id: Option<u32>,
    /// q in thousandths, when the Contact carried one.
    pub q: Option<u16>,
    /// Monotonic deadline (see `timer::now_ms`).
    pub expires_at_ms: u64,
    pub call_id: Box<[u8]>,
    pub cseq: u32,
    /// Where the REGISTER really came from (RFC 3581: NAT-facing address).
    pub source: SocketAddr,
    pub transport: Transport,
    pub conn: Option<ConnRef>,
    pub user_agent: Box<[u8]>,
}

impl Binding {
    /// Whole seconds left, rounded up so a live binding never shows 0.
    pub fn remaining_secs(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

/// Everything known about one address-of-record.
#[derive(Debug)]
pub struct Device {
    pub aor: Aor,
    pub bindings: Vec<Binding>,
    pub generation: u64,
    /// GB28181 state; `Default` (nothing known) for ordinary SIP phones.
    pub gb: GbState,
}

/// What the platform knows about a GB28181 device (GB/T 28181 §9).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GbState {
    /// A device the platform has heard from as GB28181 (keep-alive, catalog):
    /// kept in the table while offline so operators still see it.
    pub known: bool,
    pub online: bool,
    /// Wall-clock seconds of the last accepted keep-alive.
    pub last_keepalive_unix: Option<u64>,
    /// Monotonic deadline after which the device is offline without a keep-alive.
    pub keepalive_deadline_ms: Option<u64>,
    /// Bumped by every keep-alive or state change; keep-alive timeout events
    /// carry it so an older event is a no-op.
    pub keepalive_generation: u64,
    pub channels: Vec<Channel>,
    pub catalog: CatalogStatus,
    /// Items of the catalog response being assembled (SN in `catalog`); they
    /// replace `channels` only once the set is complete.
    pub pending_channels: Vec<Channel>,
    /// Boxed: most devices never send one, and inline it would cost every
    /// device (phones included) 80 bytes.
    pub info: Option<Box<DeviceInfo>>,
}

/// One catalog item (GB/T 28181 Annex A.2.6, `<Item>` of a Catalog response).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Channel {
    pub device_id: String,
    pub name: String,
    pub manufacturer: String,
    pub model: String,
    pub status: String,
    pub parent_id: String,
    pub address: String,
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
}

/// A DeviceInfo response (GB/T 28181 Annex A.2.6).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub channels: Option<u32>,
}

/// Where the latest catalog query stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum CatalogStatus {
    #[default]
    NeverQueried,
    /// Sent with this SN; `received` of `expected` items so far (expected is
    /// unknown until the first response part arrives).
    Pending {
        sn: u32,
        received: usize,
        expected: Option<usize>,
    },
    /// Every item of SN arrived; `channels` holds them.
    Complete { sn: u32, at_unix: u64 },
    /// The query timed out with some parts missing; `channels` keeps what it
    /// had, `received` of `expected` arrived.
    Partial {
        sn: u32,
        received: usize,
        expected: Option<usize>,
    },
    /// The device never answered (transaction timeout).
    TimedOut { sn: u32 },
}

impl Device {
    fn new(aor: Aor) -> Self {
        // Generations start from a process-wide counter, so a device removed
        // (admin DELETE) and registered again never matches a timer event
        // still pending for its earlier incarnation.
        static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let seed = SEED.fetch_add(1 << 20, std::sync::atomic::Ordering::Relaxed);
        Device {
            aor,
            bindings: Vec::new(),
            generation: seed,
            gb: GbState {
                keepalive_generation: seed,
                ..GbState::default()
            },
        }
    }

    /// Nothing worth keeping: no binding and not a known GB28181 device.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() && !self.gb.known
    }

    /// The earliest binding deadline, which is when the next expiry event is due.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.bindings.iter().map(|b| b.expires_at_ms).min()
    }
}

/// What an expiry event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// The event was stale (the device changed since it was scheduled) or the
    /// device is gone: nothing to do.
    Stale,
    /// `removed` bindings expired; the device lives on and its next event is due
    /// at `next_ms` with `generation`.
    Partial {
        removed: usize,
        next_ms: u64,
        generation: u64,
    },
    /// The last bindings expired and the device was dropped.
    Gone { removed: usize },
}

/// A device put back by [`Registry::restore`]: the keys of the timers to arm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub aor: Aor,
    pub generation: u64,
    pub next_expiry_ms: Option<u64>,
    pub keepalive_generation: u64,
    pub keepalive_deadline_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Registry {
    /// Devices are boxed: the hash table keeps its load factor between 44 and
    /// 88 %, so an inline 256-byte `Device` would cost up to twice its size in
    /// empty slots; boxed, an empty slot costs 24 bytes.
    map: DashMap<Aor, Box<Device>>,
}

/// Shards of the table: more than dashmap's default (4 × cores), because
/// whole-table readers (snapshots, admin listings) read-lock one shard at a
/// time, and with a million devices 256 shards keep each hold to about 4 000
/// entries, well under a millisecond of a worker's wait.
const SHARDS: usize = 256;

impl Default for Registry {
    fn default() -> Self {
        Registry {
            map: DashMap::with_shard_amount(SHARDS),
        }
    }
}

/// `with_capacity` on its own, next to it, apart from the tests below.
#[cfg(test)]
mod capacity_tests {
    use super::*;

    fn binding(uri: &str, expires_at_ms: u64) -> Binding {
        Binding {
            uri: uri.as_bytes().into(),
            instance: None,
            reg_id: None,
            q: None,
            expires_at_ms,
            call_id: b"c".as_slice().into(),
            cseq: 1,
            source: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            conn: None,
            user_agent: b"".as_slice().into(),
        }
    }

    #[test]
    fn a_presized_table_does_not_grow_before_its_capacity() {
        assert_eq!(Registry::with_capacity(0).capacity(), 0);
        let r = Registry::with_capacity(100_000);
        let capacity = r.capacity();
        assert!(capacity >= 100_000, "{capacity}");
        for i in 0..100_000 {
            let aor = format!("dev{i}@example.com");
            r.modify(aor.as_bytes(), |d| {
                d.bindings.push(binding("sip:d@x", 1000))
            });
        }
        assert_eq!(r.len(), 100_000);
        assert_eq!(r.capacity(), capacity, "some shard grew");
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// A table pre-sized for `devices` (0: as [`new`](Self::new)), so no
    /// shard rehashes before that many devices are in it. Grown on demand,
    /// the shards fill evenly and all resize within moments of each other
    /// (a latency spike at each doubling). Each shard gets its share plus
    /// five standard deviations of the hash spread, so no shard resizes
    /// early; the maps round that up to a power of two of 24-byte slots
    /// (`--expected-devices`).
    pub fn with_capacity(devices: usize) -> Self {
        if devices == 0 {
            return Registry::new();
        }
        let share = devices.div_ceil(SHARDS);
        let per_shard = share + 5 * share.isqrt() + 8;
        Registry {
            map: DashMap::with_capacity_and_shard_amount(per_shard * SHARDS, SHARDS),
        }
    }

    /// The shards' capacities summed: each shard grows when its own share
    /// is full (read-locks each shard in turn; for /metrics).
    pub fn capacity(&self) -> usize {
        self.map.capacity()
    }

    /// Number of devices with at least one binding.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Reads one device under its shard's read lock.
    pub fn read<R>(&self, aor: &[u8], f: impl FnOnce(Option<&Device>) -> R) -> R {
        match self.map.get(aor) {
            Some(d) => f(Some(&d)),
            None => f(None),
        }
    }

    /// Runs `f` on the device for `aor` under its shard's write lock, creating an
    /// empty device if there is none. A device left empty (no bindings, not a
    /// known GB28181 device) is not kept.
    /// The common case (a known device) allocates nothing.
    pub fn modify<R>(&self, aor: &[u8], f: impl FnOnce(&mut Device) -> R) -> R {
        if let Some(mut d) = self.map.get_mut(aor) {
            let r = f(&mut d);
            let empty = d.is_empty();
            drop(d);
            if empty {
                self.map.remove_if(aor, |_, d| d.is_empty());
            }
            return r;
        }
        let key: Aor = Arc::from(aor);
        match self.map.entry(key.clone()) {
            Entry::Occupied(mut o) => {
                let r = f(o.get_mut());
                if o.get().is_empty() {
                    o.remove();
                }
                r
            }
            Entry::Vacant(v) => {
                let mut d = Device::new(key);
                let r = f(&mut d);
                if !d.is_empty() {
                    v.insert(Box::new(d));
                }
                r
            }
        }
    }

    /// Handles an expiry event for `(aor, generation)` at `now_ms`.
    pub fn expire(&self, aor: &[u8], generation: u64, now_ms: u64) -> Expiry {
        let Some(mut d) = self.map.get_mut(aor) else {
            return Expiry::Stale;
        };
        if d.generation != generation {
            return Expiry::Stale;
        }
        let before = d.bindings.len();
        d.bindings.retain(|b| b.expires_at_ms > now_ms);
        let removed = before - d.bindings.len();
        match d.next_deadline_ms() {
            Some(next_ms) => {
                if removed > 0 {
                    d.generation += 1;
                }
                Expiry::Partial {
                    removed,
                    next_ms,
                    generation: d.generation,
                }
            }
            None if d.gb.known => {
                // GB28181 §9.6: a device whose registration lapsed is offline,
                // and stays listed for the operator.
                d.gb.online = false;
                d.generation += 1;
                Expiry::Gone { removed }
            }
            None => {
                drop(d);
                self.map
                    .remove_if(aor, |_, d| d.generation == generation && d.is_empty());
                Expiry::Gone { removed }
            }
        }
    }

    /// Removes a device outright (admin API); returns whether it existed.
    pub fn remove(&self, aor: &[u8]) -> bool {
        self.map.remove(aor).is_some()
    }

    /// Visits at most `limit` devices after skipping `offset`, in the table's
    /// (stable while unchanged) shard order; returns the total device count.
    pub fn page(&self, offset: usize, limit: usize, mut f: impl FnMut(&Device)) -> usize {
        for d in self.map.iter().skip(offset).take(limit) {
            f(&d);
        }
        self.map.len()
    }

    /// Every key in the table now (snapshots copy them out first so that no
    /// shard stays locked while devices are encoded).
    pub fn keys(&self) -> Vec<Aor> {
        self.map.iter().map(|d| d.key().clone()).collect()
    }

    /// Puts back a device loaded from a snapshot, under a fresh generation.
    /// Returns what its timers need, or `None` when there was nothing to keep.
    pub fn restore(&self, aor: &[u8], bindings: Vec<Binding>, gb: GbState) -> Option<Restored> {
        self.modify(aor, |d| {
            d.bindings = bindings;
            d.gb = GbState {
                keepalive_generation: d.gb.keepalive_generation,
                ..gb
            };
            (!d.is_empty()).then(|| Restored {
                aor: d.aor.clone(),
                generation: d.generation,
                next_expiry_ms: d.next_deadline_ms(),
                keepalive_generation: d.gb.keepalive_generation,
                keepalive_deadline_ms: d.gb.keepalive_deadline_ms,
            })
        })
    }

    /// Visits every device (metrics totals, fuzzing bounds). Each shard is read-locked
    /// only while its own devices are visited.
    pub fn for_each(&self, mut f: impl FnMut(&Device)) {
        for d in self.map.iter() {
            f(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aor_keys() {
        let mut buf = [0u8; MAX_AOR];
        let u = Uri::parse(b"sip:Alice@Example.COM:5060;transport=tcp").unwrap();
        assert_eq!(aor_key(&u, &mut buf), Some(&b"Alice@example.com"[..]));
        let u = Uri::parse(b"sip:130909113319427420@10.64.49.218:7100").unwrap();
        assert_eq!(
            aor_key(&u, &mut buf),
            Some(&b"130909113319427420@10.64.49.218"[..])
        );
        let u = Uri::parse(b"sip:34020000001320000001@3402000000").unwrap();
        assert_eq!(aor_key(&u, &mut buf), Some(&b"34020000001320000001"[..]));
        let u = Uri::parse(b"sip:example.com").unwrap();
        assert_eq!(aor_key(&u, &mut buf), None);
        let long = format!("sip:{}@h", "a".repeat(300));
        assert_eq!(
            aor_key(&Uri::parse(long.as_bytes()).unwrap(), &mut buf),
            None
        );
    }

    fn binding(uri: &str, expires_at_ms: u64) -> Binding {
        Binding {
            uri: uri.as_bytes().into(),
            instance: None,
            reg_id: None,
            q: None,
            expires_at_ms,
            call_id: b"c".as_slice().into(),
            cseq: 1,
            source: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            conn: None,
            user_agent: b"".as_slice().into(),
        }
    }

    #[test]
    fn modify_creates_only_devices_with_bindings() {
        let r = Registry::new();
        r.modify(b"a@h", |_| {});
        assert!(r.is_empty());
        r.modify(b"a@h", |d| d.bindings.push(binding("sip:a@x", 1000)));
        assert_eq!(r.len(), 1);
        r.modify(b"a@h", |d| d.bindings.clear());
        assert!(r.is_empty());
    }

    #[test]
    fn expiry_respects_generation_and_keeps_live_bindings() {
        let r = Registry::new();
        let gen = r.modify(b"a@h", |d| {
            d.bindings.push(binding("sip:a@x", 1000));
            d.bindings.push(binding("sip:a@y", 5000));
            d.generation += 1;
            d.generation
        });
        assert_eq!(r.expire(b"a@h", gen + 7, 2000), Expiry::Stale);
        let Expiry::Partial {
            removed: 1,
            next_ms: 5000,
            generation,
        } = r.expire(b"a@h", gen, 2000)
        else {
            panic!("expected a partial expiry");
        };
        // The older event is now stale; the new one removes the rest.
        assert_eq!(r.expire(b"a@h", gen, 6000), Expiry::Stale);
        assert_eq!(
            r.expire(b"a@h", generation, 6000),
            Expiry::Gone { removed: 1 }
        );
        assert!(r.is_empty());
        assert_eq!(r.expire(b"nobody", 0, 0), Expiry::Stale);
    }

    #[test]
    fn a_refresh_makes_the_pending_event_a_no_op() {
        let r = Registry::new();
        let gen = r.modify(b"a@h", |d| {
            d.bindings.push(binding("sip:a@x", 1000));
            d.generation += 1;
            d.generation
        });
        r.modify(b"a@h", |d| {
            d.bindings[0].expires_at_ms = 9000;
            d.generation += 1;
        });
        assert_eq!(r.expire(b"a@h", gen, 1500), Expiry::Stale);
        assert_eq!(r.read(b"a@h", |d| d.map(|d| d.bindings.len())), Some(1));
    }
}
