//! The device table: one `DashMap` from address-of-record to [`Device`], shared
//! by every worker. It is reached only through closures, so no shard guard
//! escapes this module and no lock is held across a syscall or a channel send
//! (STYLE habit 12).
//!
//! # Expiry events
//!
//! Timer events carry `(aor, generation)`, and an event whose generation is not
//! the device's is a no-op (nothing is ever cancelled). Unlike the first design
//! (DESIGN.md: "a refresh bumps the generation"), a refresh leaves the device's
//! one pending event alone: deadlines only move later, so the event fires
//! early, finds the bindings live and re-arms itself at their new deadline
//! ([`Device::arm_expiry`]). A new event (and generation) is needed only for a
//! deadline earlier than the armed one. That keeps the wheel at one entry per
//! device — one per refresh would hold 40 bytes per refresh until the old
//! deadline — and saves the worker a channel send per refresh.
//!
//! # Memory
//!
//! A million registered phones is the sizing case (perf/RESULTS.md): the
//! device does not repeat its key, GB28181 state is boxed and made on first
//! use, the bindings are an exact-size boxed slice, and each binding keeps its
//! strings in one allocation.

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

/// The strings of a binding, borrowed: what [`Binding::new`] stores and
/// [`Binding::set_text`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingText<'a> {
    /// The Contact URI as the device sent it.
    pub uri: &'a [u8],
    /// RFC 5626 `+sip.instance`, when present.
    pub instance: Option<&'a [u8]>,
    pub call_id: &'a [u8],
    pub user_agent: &'a [u8],
}

/// Longest part a binding stores; the registrar caps every part far below
/// (1 KiB for the URI, 256 B for the others), so this only bounds the
/// length fields.
pub const MAX_TEXT_PART: usize = u16::MAX as usize - 1;
/// `instance_len` of a binding without `+sip.instance`.
const NO_INSTANCE: u16 = u16::MAX;

/// One location binding (RFC 3261 §10): a Contact plus what the registrar
/// learned about where it really is.
///
/// Its four strings share one allocation (`text`, read through the accessors):
/// with a million devices, three or four small allocations per binding cost
/// more in allocator headers and rounding than the strings themselves.
#[derive(Clone, PartialEq, Eq)]
pub struct Binding {
    /// Contact URI, instance, Call-ID and User-Agent, back to back.
    text: Box<[u8]>,
    uri_len: u16,
    /// [`NO_INSTANCE`] when the Contact had none.
    instance_len: u16,
    call_id_len: u16,
    pub reg_id: Option<u32>,
    /// q in thousandths, when the Contact carried one.
    pub q: Option<u16>,
    /// Monotonic deadline (see `timer::now_ms`).
    pub expires_at_ms: u64,
    pub cseq: u32,
    /// Where the REGISTER really came from (RFC 3581: NAT-facing address).
    pub source: SocketAddr,
    pub transport: Transport,
    pub conn: Option<ConnRef>,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_struct("Binding")
            .field("uri", &s(self.uri()))
            .field("instance", &self.instance().map(s))
            .field("reg_id", &self.reg_id)
            .field("q", &self.q)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("call_id", &s(self.call_id()))
            .field("cseq", &self.cseq)
            .field("source", &self.source)
            .field("transport", &self.transport)
            .field("conn", &self.conn)
            .field("user_agent", &s(self.user_agent()))
            .finish()
    }
}

impl Binding {
    /// A binding of `text` reached at `source`; the other fields start empty
    /// (no reg-id, q, deadline, CSeq or connection) for the caller to set.
    pub fn new(text: BindingText<'_>, source: SocketAddr, transport: Transport) -> Binding {
        let mut b = Binding {
            text: Box::default(),
            uri_len: 0,
            instance_len: NO_INSTANCE,
            call_id_len: 0,
            reg_id: None,
            q: None,
            expires_at_ms: 0,
            cseq: 0,
            source,
            transport,
            conn: None,
        };
        b.set_text(text);
        b
    }

    pub fn uri(&self) -> &[u8] {
        &self.text[..usize::from(self.uri_len)]
    }

    pub fn instance(&self) -> Option<&[u8]> {
        (self.instance_len != NO_INSTANCE).then(|| {
            let start = usize::from(self.uri_len);
            &self.text[start..start + usize::from(self.instance_len)]
        })
    }

    /// Length of the instance part of `text` (none: 0).
    fn instance_bytes(&self) -> usize {
        if self.instance_len == NO_INSTANCE {
            0
        } else {
            usize::from(self.instance_len)
        }
    }

    pub fn call_id(&self) -> &[u8] {
        let start = usize::from(self.uri_len) + self.instance_bytes();
        &self.text[start..start + usize::from(self.call_id_len)]
    }

    pub fn user_agent(&self) -> &[u8] {
        let start =
            usize::from(self.uri_len) + self.instance_bytes() + usize::from(self.call_id_len);
        &self.text[start..]
    }

    /// The strings as they are now.
    pub fn text(&self) -> BindingText<'_> {
        BindingText {
            uri: self.uri(),
            instance: self.instance(),
            call_id: self.call_id(),
            user_agent: self.user_agent(),
        }
    }

    /// Replaces the strings. Allocates only when the total length changes: a
    /// refresh repeats them and must not allocate. Each part is cut at
    /// [`MAX_TEXT_PART`] bytes.
    pub fn set_text(&mut self, text: BindingText<'_>) {
        if self.text() == text {
            return;
        }
        let cut = |p: &'_ [u8]| -> usize { p.len().min(MAX_TEXT_PART) };
        let parts: [&[u8]; 4] = [
            &text.uri[..cut(text.uri)],
            text.instance.map_or(&[][..], |i| &i[..cut(i)]),
            &text.call_id[..cut(text.call_id)],
            &text.user_agent[..cut(text.user_agent)],
        ];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == self.text.len() {
            // Same size (say, a new Call-ID of the usual length): reuse it.
            let mut at = 0;
            for p in parts {
                self.text[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
        } else {
            self.text = parts.concat().into_boxed_slice();
        }
        // Every part is at most MAX_TEXT_PART, which fits below NO_INSTANCE.
        let len16 = |p: &[u8]| u16::try_from(p.len()).unwrap_or(NO_INSTANCE - 1);
        self.uri_len = len16(parts[0]);
        self.instance_len = if text.instance.is_some() {
            len16(parts[1])
        } else {
            NO_INSTANCE
        };
        self.call_id_len = len16(parts[2]);
    }

    /// Replaces the URI, Call-ID and User-Agent and keeps the instance (what
    /// a refresh does: the instance, or the URI, is what matched the binding).
    pub fn set_text_keeping_instance(&mut self, uri: &[u8], call_id: &[u8], user_agent: &[u8]) {
        let now = self.text();
        if now.uri == uri && now.call_id == call_id && now.user_agent == user_agent {
            return;
        }
        let instance = self.instance().map(<[u8]>::to_vec);
        self.set_text(BindingText {
            uri,
            instance: instance.as_deref(),
            call_id,
            user_agent,
        });
    }

    /// Whole seconds left, rounded up so a live binding never shows 0.
    pub fn remaining_secs(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

/// A device's bindings: a boxed slice sized exactly, since most devices have
/// one binding, and a `Vec` would keep spare room (its first push reserves
/// four) and cost every device 8 more bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings(Box<[Binding]>);

impl Bindings {
    /// Adds a binding (reallocates: bindings are added rarely, refreshed often).
    pub fn push(&mut self, b: Binding) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.reserve_exact(1);
        v.push(b);
        self.0 = v.into_boxed_slice();
    }

    /// Removes the binding at `i`, moving the last one into its place.
    pub fn swap_remove(&mut self, i: usize) -> Binding {
        let mut v = std::mem::take(&mut self.0).into_vec();
        let b = v.swap_remove(i);
        self.0 = v.into_boxed_slice();
        b
    }

    /// Keeps the bindings `keep` accepts; allocates only when some go.
    pub fn retain(&mut self, mut keep: impl FnMut(&Binding) -> bool) {
        if self.0.iter().all(&mut keep) {
            return;
        }
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.retain(keep);
        self.0 = v.into_boxed_slice();
    }

    pub fn clear(&mut self) {
        self.0 = Box::default();
    }
}

impl From<Vec<Binding>> for Bindings {
    fn from(v: Vec<Binding>) -> Self {
        Bindings(v.into_boxed_slice())
    }
}

impl std::ops::Deref for Bindings {
    type Target = [Binding];
    fn deref(&self) -> &[Binding] {
        &self.0
    }
}

impl std::ops::DerefMut for Bindings {
    fn deref_mut(&mut self) -> &mut [Binding] {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Bindings {
    type Item = &'a Binding;
    type IntoIter = std::slice::Iter<'a, Binding>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Everything known about one address-of-record (the table's key, which the
/// device does not repeat).
#[derive(Debug)]
pub struct Device {
    pub bindings: Bindings,
    /// Expiry events carry it; an event whose generation is not the device's
    /// is stale.
    pub generation: u64,
    /// Deadline of the one live expiry event (the one carrying `generation`),
    /// 0 when none is scheduled. See [`Device::arm_expiry`].
    pub armed_ms: u64,
    /// GB28181 state, boxed and created on first use: SIP phones, most of the
    /// table, never have one.
    gb: Option<Box<GbState>>,
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
    /// Deadline of the pending keep-alive timeout event (the one carrying
    /// `keepalive_generation`), if any. Keep-alives only move the deadline
    /// later, so one pending event serves them all: it re-arms itself at the
    /// newest deadline when it fires early (as `Device::arm_expiry` does for
    /// bindings), and a keep-alive schedules nothing.
    pub keepalive_timer_ms: Option<u64>,
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

/// What a device without GB28181 state reads as.
static NO_GB: GbState = GbState {
    known: false,
    online: false,
    last_keepalive_unix: None,
    keepalive_deadline_ms: None,
    keepalive_generation: 0,
    keepalive_timer_ms: None,
    channels: Vec::new(),
    catalog: CatalogStatus::NeverQueried,
    pending_channels: Vec::new(),
    info: None,
};

impl Device {
    fn new() -> Self {
        // Generations start from a process-wide counter, so a device removed
        // (admin DELETE) and registered again never matches a timer event
        // still pending for its earlier incarnation.
        static SEED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let seed = SEED.fetch_add(1 << 20, std::sync::atomic::Ordering::Relaxed);
        Device {
            bindings: Bindings::default(),
            generation: seed,
            armed_ms: 0,
            gb: None,
        }
    }

    /// The GB28181 state (all defaults for a device that has none).
    pub fn gb(&self) -> &GbState {
        self.gb.as_deref().unwrap_or(&NO_GB)
    }

    /// The GB28181 state to change, created on first use. Its keep-alive
    /// generation starts from the device's, so it is unique in the process
    /// as the device's is.
    pub fn gb_mut(&mut self) -> &mut GbState {
        let generation = self.generation;
        self.gb.get_or_insert_with(|| {
            Box::new(GbState {
                keepalive_generation: generation,
                ..GbState::default()
            })
        })
    }

    /// Nothing worth keeping: no binding and not a known GB28181 device.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty() && !self.gb().known
    }

    /// The earliest binding deadline, which is when the next expiry event is due.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.bindings.iter().map(|b| b.expires_at_ms).min()
    }

    /// After the bindings changed: the expiry event to schedule, as
    /// `(deadline_ms, generation)`, or `None` when the event already in the
    /// wheel fires early enough.
    ///
    /// A device has at most one live expiry event. A refresh moves deadlines
    /// later, so the live event stays: when it fires it finds the bindings
    /// still live and is re-armed at their new deadline
    /// ([`Expiry::Partial`]). Only a deadline earlier than the armed one (or
    /// none armed) schedules a new event, under a new generation that makes
    /// the old one stale. So a refresh sends nothing to the timer thread, and
    /// the wheel holds one entry per device rather than one per refresh.
    pub fn arm_expiry(&mut self) -> Option<(u64, u64)> {
        let next = self.next_deadline_ms()?;
        if self.armed_ms != 0 && self.armed_ms <= next {
            return None;
        }
        self.generation += 1;
        self.armed_ms = next;
        Some((next, self.generation))
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
        self.read_keyed(aor, |d| f(d.map(|(_, d)| d)))
    }

    /// As [`read`](Self::read), with the table's key (for timer events).
    pub fn read_keyed<R>(&self, aor: &[u8], f: impl FnOnce(Option<(&Aor, &Device)>) -> R) -> R {
        match self.map.get(aor) {
            Some(d) => f(Some((d.key(), d.value()))),
            None => f(None),
        }
    }

    /// Runs `f` on the device for `aor` under its shard's write lock, creating an
    /// empty device if there is none. A device left empty (no bindings, not a
    /// known GB28181 device) is not kept.
    /// The common case (a known device) allocates nothing.
    pub fn modify<R>(&self, aor: &[u8], f: impl FnOnce(&mut Device) -> R) -> R {
        self.modify_keyed(aor, |_, d| f(d))
    }

    /// As [`modify`](Self::modify), with the table's key (for timer events).
    pub fn modify_keyed<R>(&self, aor: &[u8], f: impl FnOnce(&Aor, &mut Device) -> R) -> R {
        if let Some(mut d) = self.map.get_mut(aor) {
            let (key, device) = d.pair_mut();
            let r = f(key, device);
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
                let key = o.key().clone();
                let r = f(&key, o.get_mut());
                if o.get().is_empty() {
                    o.remove();
                }
                r
            }
            Entry::Vacant(v) => {
                let mut d = Device::new();
                let r = f(v.key(), &mut d);
                if !d.is_empty() {
                    v.insert(Box::new(d));
                }
                r
            }
        }
    }

    /// Handles an expiry event for `(aor, generation)` at `now_ms`.
    ///
    /// One table operation whatever the outcome (the timer thread does this
    /// a million times in a mass expiry), and a removed device is freed after
    /// its shard's lock is released.
    pub fn expire(&self, aor: &[u8], generation: u64, now_ms: u64) -> Expiry {
        let mut outcome = Expiry::Stale;
        let removed_device = self.map.remove_if_mut(aor, |_, d| {
            if d.generation != generation {
                return false;
            }
            let before = d.bindings.len();
            d.bindings.retain(|b| b.expires_at_ms > now_ms);
            let removed = before - d.bindings.len();
            match d.next_deadline_ms() {
                Some(next_ms) => {
                    // The same event goes back into the wheel (see `arm_expiry`).
                    d.armed_ms = next_ms;
                    outcome = Expiry::Partial {
                        removed,
                        next_ms,
                        generation,
                    };
                    false
                }
                None if d.gb().known => {
                    // GB28181 §9.6: a device whose registration lapsed is
                    // offline, and stays listed for the operator.
                    d.gb_mut().online = false;
                    d.generation += 1;
                    d.armed_ms = 0;
                    outcome = Expiry::Gone { removed };
                    false
                }
                None => {
                    outcome = Expiry::Gone { removed };
                    true
                }
            }
        });
        drop(removed_device);
        outcome
    }

    /// Removes a device outright (admin API); returns whether it existed.
    pub fn remove(&self, aor: &[u8]) -> bool {
        self.map.remove(aor).is_some()
    }

    /// Visits at most `limit` devices after skipping `offset`, in the table's
    /// (stable while unchanged) shard order; returns the total device count.
    pub fn page(&self, offset: usize, limit: usize, mut f: impl FnMut(&Aor, &Device)) -> usize {
        for d in self.map.iter().skip(offset).take(limit) {
            f(d.key(), d.value());
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
    /// `gb` is `None` for a device that never spoke GB28181.
    pub fn restore(
        &self,
        aor: &[u8],
        bindings: Vec<Binding>,
        gb: Option<GbState>,
    ) -> Option<Restored> {
        self.modify_keyed(aor, |key, d| {
            d.bindings = bindings.into();
            if let Some(gb) = gb {
                let g = d.gb_mut();
                *g = GbState {
                    keepalive_generation: g.keepalive_generation,
                    // The caller arms the timeout at the restored deadline.
                    keepalive_timer_ms: gb.keepalive_deadline_ms,
                    ..gb
                };
            }
            let next_expiry_ms = d.arm_expiry().map(|(at, _)| at);
            (!d.is_empty()).then(|| Restored {
                aor: key.clone(),
                generation: d.generation,
                next_expiry_ms,
                keepalive_generation: d.gb().keepalive_generation,
                keepalive_deadline_ms: d.gb().keepalive_deadline_ms,
            })
        })
    }

    /// Visits every device (metrics totals, fuzzing bounds). Each shard is read-locked
    /// only while its own devices are visited.
    pub fn for_each(&self, mut f: impl FnMut(&Aor, &Device)) {
        for d in self.map.iter() {
            f(d.key(), d.value());
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
        let text = BindingText {
            uri: uri.as_bytes(),
            instance: None,
            call_id: b"c",
            user_agent: b"",
        };
        let mut b = Binding::new(text, "127.0.0.1:5060".parse().unwrap(), Transport::Udp);
        b.expires_at_ms = expires_at_ms;
        b.cseq = 1;
        b
    }

    #[test]
    fn binding_strings_share_one_allocation_and_read_back() {
        let mut b = binding("sip:a@x", 1);
        let with_instance = BindingText {
            uri: b"sip:a@192.0.2.1:5060",
            instance: Some(b"<urn:uuid:1>"),
            call_id: b"call-1",
            user_agent: b"phone/1.0",
        };
        b.set_text(with_instance);
        assert_eq!(b.text(), with_instance);
        // An empty instance is not the absence of one.
        let empty_instance = BindingText {
            instance: Some(b""),
            ..with_instance
        };
        b.set_text(empty_instance);
        assert_eq!(b.text(), empty_instance);
        let none = BindingText {
            instance: None,
            ..with_instance
        };
        b.set_text(none);
        assert_eq!(b.text(), none);
        // Same total length: the buffer is rewritten in place.
        let before = b.uri().as_ptr();
        let same_len = BindingText {
            call_id: b"call-2",
            ..none
        };
        b.set_text(same_len);
        assert_eq!((b.text(), b.uri().as_ptr()), (same_len, before));
        // A refresh keeps the instance that matched.
        b.set_text(with_instance);
        b.set_text_keeping_instance(b"sip:a@192.0.2.2:5060", b"call-3", b"phone/2.0");
        assert_eq!(b.instance(), Some(&b"<urn:uuid:1>"[..]));
        assert_eq!(
            (b.uri(), b.call_id(), b.user_agent()),
            (
                &b"sip:a@192.0.2.2:5060"[..],
                &b"call-3"[..],
                &b"phone/2.0"[..]
            )
        );
        // Parts too long for the length fields are cut, never misread.
        let long = vec![b'x'; MAX_TEXT_PART + 10];
        b.set_text(BindingText {
            uri: &long,
            instance: Some(&long),
            call_id: b"c",
            user_agent: &long,
        });
        assert_eq!(b.uri().len(), MAX_TEXT_PART);
        assert_eq!(b.instance().map(<[u8]>::len), Some(MAX_TEXT_PART));
        assert_eq!(b.call_id(), b"c");
        assert_eq!(b.user_agent().len(), MAX_TEXT_PART);
    }

    /// The per-device memory budget (perf/RESULTS.md, issue 5): these sizes
    /// decide how many allocator chunks a phone costs.
    #[test]
    fn device_and_binding_stay_small() {
        assert!(std::mem::size_of::<Device>() <= 40);
        assert!(std::mem::size_of::<Binding>() <= 104);
    }

    #[test]
    fn bindings_grow_and_shrink_exactly() {
        let mut v = Bindings::default();
        v.push(binding("sip:a@x", 1));
        v.push(binding("sip:a@y", 2));
        v.push(binding("sip:a@z", 3));
        assert_eq!(v.len(), 3);
        v.retain(|b| b.expires_at_ms != 2);
        assert_eq!(
            v.iter().map(|b| b.expires_at_ms).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(v.swap_remove(0).expires_at_ms, 1);
        assert_eq!(v[0].expires_at_ms, 3);
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    fn a_device_keeps_one_live_expiry_event() {
        let r = Registry::new();
        let arm = |exp: u64| {
            r.modify(b"a@h", |d| {
                match d.bindings.first_mut() {
                    Some(b) => b.expires_at_ms = exp,
                    None => d.bindings.push(binding("sip:a@x", exp)),
                }
                d.arm_expiry()
            })
        };
        let Some((1000, gen)) = arm(1000) else {
            panic!("the first binding arms an event");
        };
        // Refreshes move the deadline later: the event in the wheel stays.
        assert_eq!(arm(5000), None);
        assert_eq!(arm(9000), None);
        // It fires at 1000, finds the binding live, and re-arms itself.
        assert_eq!(
            r.expire(b"a@h", gen, 1000),
            Expiry::Partial {
                removed: 0,
                next_ms: 9000,
                generation: gen
            }
        );
        // A shorter expiry needs an earlier event, which supersedes it.
        let Some((2000, newer)) = arm(2000) else {
            panic!("an earlier deadline arms a new event");
        };
        assert_eq!(r.expire(b"a@h", gen, 9000), Expiry::Stale);
        assert_eq!(r.expire(b"a@h", newer, 2000), Expiry::Gone { removed: 1 });
        assert!(r.is_empty());
    }

    #[test]
    fn gb_state_is_created_on_first_write_only() {
        let r = Registry::new();
        r.modify(b"a@h", |d| {
            d.bindings.push(binding("sip:a@x", 1000));
            assert!(!d.gb().known);
            assert!(d.gb.is_none());
            d.gb_mut().known = true;
            assert_eq!(d.gb().keepalive_generation, d.generation);
        });
        // A known GB28181 device stays without bindings; a phone would not.
        r.modify(b"a@h", |d| d.bindings.clear());
        assert_eq!(r.len(), 1);
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
            d.arm_expiry().map(|(_, g)| g)
        });
        let gen = gen.expect("an event is armed");
        assert_eq!(r.expire(b"a@h", gen + 7, 2000), Expiry::Stale);
        // The event removes what is due and goes back in for the rest.
        assert_eq!(
            r.expire(b"a@h", gen, 2000),
            Expiry::Partial {
                removed: 1,
                next_ms: 5000,
                generation: gen
            }
        );
        assert_eq!(r.read(b"a@h", |d| d.map(|d| d.armed_ms)), Some(5000));
        assert_eq!(r.expire(b"a@h", gen, 6000), Expiry::Gone { removed: 1 });
        assert!(r.is_empty());
        assert_eq!(r.expire(b"nobody", 0, 0), Expiry::Stale);
    }

    #[test]
    fn a_superseded_event_is_a_no_op() {
        let r = Registry::new();
        let (_, gen) = r
            .modify(b"a@h", |d| {
                d.bindings.push(binding("sip:a@x", 9000));
                d.arm_expiry()
            })
            .expect("armed");
        let (_, newer) = r
            .modify(b"a@h", |d| {
                d.bindings[0].expires_at_ms = 1000;
                d.arm_expiry()
            })
            .expect("an earlier deadline re-arms");
        assert_ne!(gen, newer);
        assert_eq!(r.expire(b"a@h", gen, 9500), Expiry::Stale);
        assert_eq!(r.read(b"a@h", |d| d.map(|d| d.bindings.len())), Some(1));
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
