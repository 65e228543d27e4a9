//! REGISTER processing, RFC 3261 §10.3 steps 1–8, against the shared device
//! table. Every binding change for one request happens under one shard lock, so
//! a request is applied entirely or not at all (§10.3 step 7).

use crate::auth::{AuthError, DigestResponse, Verdict};
use crate::gb28181::{QueryKind, QuerySender};
use crate::registry::{aor_key, Binding, BindingText, Device, MAX_AOR};
use crate::sip::bytes::push_u64;
use crate::sip::{self, AuthHeader, HeaderId, Message, NameAddr, Scheme, Uri};
use crate::stats::WorkerStats;

use std::hash::BuildHasher;

use super::{date, Handled, Inbound, Now, Output, Policy, Registrar, Timer, TimerEvent, WorkerCtx};

enum Outcome {
    /// Applied; the expiry timer to arm, and whether this registration took a
    /// GB28181 device from no binding to one (time to ask for its catalog).
    Ok(Option<Timer>, bool),
    OutOfOrder,
    TooMany,
}

/// Contacts one REGISTER may carry: more than any device needs, and it bounds
/// the quadratic same-binding check below.
const MAX_CONTACTS_PER_REQUEST: usize = 64;
/// What a binding keeps, bounded per value so a device's memory is bounded
/// (`--max-contacts` bindings of at most these sizes).
const MAX_STORED_URI: usize = 1024;
const MAX_STORED_INSTANCE: usize = 256;
const MAX_STORED_CALL_ID: usize = 256;
const MAX_STORED_USER_AGENT: usize = 256;

pub(super) fn handle(
    r: &Registrar,
    msg: &Message<'_>,
    ruri: &Uri<'_>,
    inb: &Inbound<'_>,
    now: Now,
    ctx: &mut WorkerCtx<'_>,
    out: &mut Output,
) -> Handled {
    // Step 1: the Request-URI names a domain we serve.
    if ruri.scheme == Scheme::Tel {
        return r.reject(out, msg, inb, 416, "Unsupported URI Scheme");
    }
    if !r.serves_domain(ruri) {
        return r.reject(out, msg, inb, 404, "Domain Not Served");
    }
    // Step 5 (checked early so nothing is challenged that cannot register):
    // the To header holds a SIP address-of-record.
    let to = msg
        .value(HeaderId::To)
        .and_then(|v| NameAddr::parse(v).ok());
    let Some(to_uri) = to.and_then(|t| Uri::parse(t.uri).ok()) else {
        return r.reject(out, msg, inb, 400, "Malformed To Header");
    };
    if !matches!(to_uri.scheme, Scheme::Sip | Scheme::Sips) {
        return r.reject(out, msg, inb, 416, "Unsupported URI Scheme In To");
    }
    let mut key_buf = [0u8; MAX_AOR];
    let Some(aor) = aor_key(&to_uri, &mut key_buf) else {
        return r.reject(out, msg, inb, 404, "Not A Valid Address Of Record");
    };
    let aor_user = to_uri.user.unwrap_or(b"");

    // Steps 2–4: authenticate, then authorise the user for this AOR.
    if !r.policy.no_auth {
        if let Err(h) = authenticate(r, msg, inb, now, ctx, out, Some((aor, aor_user))) {
            return h;
        }
    }

    // Step 6: Contact and expiry checks that need no state.
    let header_expires = msg
        .value(HeaderId::Expires)
        .map(|v| sip::parse_expires(v).unwrap_or(r.policy.default_expires));
    let mut wildcard = false;
    let mut contacts = 0usize;
    if msg.call_id().len() > MAX_STORED_CALL_ID {
        return r.reject(out, msg, inb, 400, "Call-ID Too Long");
    }
    for c in msg.list(HeaderId::Contact) {
        let Ok(c) = NameAddr::parse(c) else {
            return r.reject(out, msg, inb, 400, "Malformed Contact Header");
        };
        contacts += 1;
        if contacts > MAX_CONTACTS_PER_REQUEST {
            return r.reject(out, msg, inb, 400, "Too Many Contacts In Request");
        }
        if c.uri.len() > MAX_STORED_URI
            || instance(&c).is_some_and(|i| i.len() > MAX_STORED_INSTANCE)
        {
            return r.reject(out, msg, inb, 400, "Contact URI Too Long");
        }
        if c.wildcard {
            wildcard = true;
            continue;
        }
        let e = requested_expires(&c, header_expires, r.policy.default_expires);
        if e != 0 && e < r.policy.min_expires {
            let mut w = r.start(out, msg, inb, 423, b"Interval Too Brief");
            w.header_u64("Min-Expires", u64::from(r.policy.min_expires));
            w.finish(b"");
            return Handled::Reply(423);
        }
    }
    // RFC 3261 §10.2.2: `*` only alone and only with Expires: 0.
    if wildcard && (contacts > 1 || header_expires != Some(0)) {
        return r.reject(
            out,
            msg,
            inb,
            400,
            "Wildcard Contact Requires Expires 0 And No Other Contact",
        );
    }

    let call_id = msg.call_id();
    let cseq = msg.cseq().seq;
    let user_agent = msg.value(HeaderId::UserAgent).unwrap_or(b"");
    // Kept for operators only: the start is enough, and bounds what a device stores.
    let user_agent = &user_agent[..user_agent.len().min(MAX_STORED_USER_AGENT)];
    let stats = ctx.stats;
    let policy = &r.policy;
    let expires_of = |c: &NameAddr<'_>| {
        let e =
            requested_expires(c, header_expires, policy.default_expires).min(policy.max_expires);
        jittered(e, policy, || r.jitter_key.hash_one((call_id, cseq, c.uri)))
    };

    // Step 7: apply atomically; step 8: answer with every binding.
    let outcome = r.registry.modify_keyed(aor, |key, dev| {
        if wildcard {
            if dev
                .bindings
                .iter()
                .any(|b| b.call_id() == call_id && cseq < b.cseq)
            {
                return Outcome::OutOfOrder;
            }
            if !dev.bindings.is_empty() {
                stats.bindings_removed.fetch_add(
                    dev.bindings.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                dev.bindings.clear();
                if dev.gb().known {
                    dev.gb_mut().online = false;
                }
            }
            write_ok(r, out, msg, inb, now, aor, dev);
            return Outcome::Ok(None, false);
        }
        // §10.3 step 7: a binding made by this Call-ID with a higher CSeq means
        // the request is out of order; with the same CSeq it is a repeat of a
        // request already applied (a retransmission with a new branch), so the
        // answer is the current state and nothing changes.
        let mut repeat = false;
        for b in dev.bindings.iter().filter(|b| b.call_id() == call_id) {
            if cseq < b.cseq {
                return Outcome::OutOfOrder;
            }
            repeat |= cseq == b.cseq;
        }
        if repeat {
            write_ok(r, out, msg, inb, now, aor, dev);
            return Outcome::Ok(None, false);
        }
        let was_unbound = dev.bindings.is_empty();
        // Validation pass: nothing changes unless every contact is acceptable.
        // Contacts apply in order, so a binding named twice ends as its last
        // mention says; only that mention changes the count.
        let contacts = || {
            msg.list(HeaderId::Contact)
                .filter_map(|c| NameAddr::parse(c).ok())
        };
        let mut count = dev.bindings.len();
        for (i, c) in contacts().enumerate() {
            if contacts().skip(i + 1).any(|later| same_contact(&c, &later)) {
                continue;
            }
            match (find(dev, &c).is_some(), expires_of(&c) == 0) {
                (true, true) => count = count.saturating_sub(1),
                (false, false) => count += 1,
                _ => {}
            }
        }
        if count > policy.max_contacts {
            return Outcome::TooMany;
        }
        let mut changed = false;
        for c in msg
            .list(HeaderId::Contact)
            .filter_map(|c| NameAddr::parse(c).ok())
        {
            let expires = expires_of(&c);
            let update = ContactUpdate {
                expires,
                call_id,
                cseq,
                user_agent,
                inb,
                now,
            };
            let idx = dev.bindings.iter().position(|b| same_binding(b, &c));
            match idx {
                Some(i) if expires == 0 => {
                    dev.bindings.swap_remove(i);
                    WorkerStats::inc(&stats.bindings_removed);
                    changed = true;
                }
                Some(i) => {
                    refresh(&mut dev.bindings[i], &c, &update);
                    WorkerStats::inc(&stats.bindings_refreshed);
                    changed = true;
                }
                None if expires == 0 => {}
                None => {
                    dev.bindings.push(new_binding(&c, &update));
                    WorkerStats::inc(&stats.bindings_added);
                    changed = true;
                }
            }
        }
        // GB28181: a registration brings a known device back online, removing
        // its last binding takes it offline.
        if dev.gb().known {
            dev.gb_mut().online = !dev.bindings.is_empty();
        }
        write_ok(r, out, msg, inb, now, aor, dev);
        // A refresh usually schedules nothing: the device's pending expiry
        // event comes first and re-arms itself (`Device::arm_expiry`).
        let timer = changed
            .then(|| dev.arm_expiry())
            .flatten()
            .map(|(deadline_ms, generation)| Timer {
                deadline_ms,
                event: TimerEvent::Expiry {
                    aor: key.clone(),
                    generation,
                },
            });
        let first_binding = was_unbound && !dev.bindings.is_empty() && is_gb28181(aor, dev);
        Outcome::Ok(timer, first_binding)
    });
    match outcome {
        Outcome::Ok(timer, first_binding) => {
            out.timers.extend(timer);
            // GB/T 28181 §9.5: the platform learns a new device's channels by
            // querying its catalog once it has registered.
            if let (true, Some(p)) = (first_binding, &r.platform) {
                if let Err(e) = p.query(aor, QueryKind::Catalog) {
                    log::debug!("catalog query after registration: {}", e.reason());
                }
            }
            Handled::Reply(200)
        }
        // §10.3 step 7: an older CSeq for the same Call-ID aborts the request.
        Outcome::OutOfOrder => r.reject(out, msg, inb, 400, "CSeq Out Of Order For This Call-ID"),
        Outcome::TooMany => r.reject(out, msg, inb, 503, "Too Many Registered Contacts"),
    }
}

/// `--expires-jitter`: lowers a granted expiry by up to the configured share
/// (as Kamailio's `expires_range`), never below `--min-expires`, so devices
/// that all registered after one outage do not all refresh in the same
/// second. The draw comes from a keyed hash of the request (`draw`), so a
/// retransmission is granted the same expiry as its original.
fn jittered(expires: u32, policy: &Policy, draw: impl FnOnce() -> u64) -> u32 {
    if policy.expires_jitter_pct == 0 || expires == 0 {
        return expires;
    }
    let span = u64::from(expires) * u64::from(policy.expires_jitter_pct) / 100;
    let cut = draw() % (span + 1);
    // `cut` <= `expires`, so this never wraps; the floor keeps step 6's rule.
    (expires - cut as u32).max(policy.min_expires.min(expires))
}

/// RFC 3261 §10.3 step 6: the contact's `expires` parameter, else the Expires
/// header, else the server default; malformed values count as the default
/// (§20.19; RFC 4475 §3.1.2.4).
fn requested_expires(c: &NameAddr<'_>, header: Option<u32>, default: u32) -> u32 {
    match c.expires() {
        Some(Ok(e)) => e,
        Some(Err(_)) => default,
        None => header.unwrap_or(default),
    }
}

fn find<'d>(dev: &'d Device, c: &NameAddr<'_>) -> Option<&'d Binding> {
    dev.bindings.iter().find(|b| same_binding(b, c))
}

/// RFC 5626 §6: with `+sip.instance` (and reg-id) the instance identifies the
/// binding; otherwise the Contact URI does (RFC 3261 §10.3 step 7).
fn same_binding(b: &Binding, c: &NameAddr<'_>) -> bool {
    match (b.instance(), instance(c)) {
        (Some(bi), Some(ci)) => bi == ci && b.reg_id == reg_id(c),
        _ => b.uri() == c.uri,
    }
}

/// Whether two Contacts of one request name the same binding (the rule of
/// [`same_binding`], between two Contacts).
fn same_contact(a: &NameAddr<'_>, b: &NameAddr<'_>) -> bool {
    match (instance(a), instance(b)) {
        (Some(ia), Some(ib)) => ia == ib && reg_id(a) == reg_id(b),
        _ => a.uri == b.uri,
    }
}

fn instance<'a>(c: &NameAddr<'a>) -> Option<&'a [u8]> {
    c.param(b"+sip.instance")
        .flatten()
        .filter(|v| !v.is_empty())
}

fn reg_id(c: &NameAddr<'_>) -> Option<u32> {
    c.param(b"reg-id").flatten().and_then(sip::bytes::parse_u32)
}

/// What one REGISTER says about a contact, beyond the Contact itself.
struct ContactUpdate<'r> {
    expires: u32,
    call_id: &'r [u8],
    cseq: u32,
    user_agent: &'r [u8],
    inb: &'r Inbound<'r>,
    now: Now,
}

impl ContactUpdate<'_> {
    fn deadline_ms(&self) -> u64 {
        self.now.mono_ms + u64::from(self.expires) * 1000
    }
}

fn new_binding(c: &NameAddr<'_>, u: &ContactUpdate<'_>) -> Binding {
    let text = BindingText {
        uri: c.uri,
        instance: instance(c),
        call_id: u.call_id,
        user_agent: u.user_agent,
    };
    let mut b = Binding::new(text, u.inb.source, u.inb.transport);
    b.reg_id = reg_id(c);
    b.q = c.q().and_then(Result::ok);
    b.expires_at_ms = u.deadline_ms();
    b.cseq = u.cseq;
    b.conn = u.inb.conn;
    b
}

/// Updates a binding in place; allocates only when its strings change length.
fn refresh(b: &mut Binding, c: &NameAddr<'_>, u: &ContactUpdate<'_>) {
    b.expires_at_ms = u.deadline_ms();
    // The instance stays: it (or the URI) is what matched this binding.
    b.set_text_keeping_instance(c.uri, u.call_id, u.user_agent);
    b.cseq = u.cseq;
    b.q = c.q().and_then(Result::ok);
    b.source = u.inb.source;
    b.transport = u.inb.transport;
    b.conn = u.inb.conn;
}

/// The 200 of §10.3 step 8: every current binding with its remaining expiry,
/// and a Date header for devices that set their clock from it.
fn write_ok(
    r: &Registrar,
    out: &mut Output,
    msg: &Message<'_>,
    inb: &Inbound<'_>,
    now: Now,
    aor: &[u8],
    dev: &Device,
) {
    let mut w = r.start(out, msg, inb, 200, b"OK");
    let buf = w.raw();
    for b in &dev.bindings {
        buf.extend_from_slice(b"Contact: <");
        buf.extend_from_slice(b.uri());
        buf.extend_from_slice(b">;expires=");
        push_u64(buf, b.remaining_secs(now.mono_ms));
        if let Some(q) = b.q {
            buf.extend_from_slice(b";q=");
            push_qvalue(buf, q);
        }
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"Date: ");
    if is_gb28181(aor, dev) {
        date::push_gb28181(buf, now.unix_secs, now.unix_millis);
    } else {
        date::push_rfc1123(buf, now.unix_secs);
    }
    buf.extend_from_slice(b"\r\n");
    w.finish(b"");
}

/// GB28181 devices take their clock from the REGISTER 200's Date in the
/// GB form: a device already seen speaking MANSCDP, or one whose id is a
/// GB28181 code (all digits; 20 by the standard, 18 on older Hikvision units).
fn is_gb28181(aor: &[u8], dev: &Device) -> bool {
    let user = aor.split(|&c| c == b'@').next().unwrap_or(&[]);
    dev.gb().known || (user.len() >= 18 && user.iter().all(u8::is_ascii_digit))
}

/// Thousandths back to a qvalue: 1000 → "1", 500 → "0.5", 25 → "0.025".
pub(super) fn push_qvalue(out: &mut Vec<u8>, q: u16) {
    if q >= 1000 {
        out.push(b'1');
        return;
    }
    out.extend_from_slice(b"0.");
    let digits = [q / 100, q / 10 % 10, q % 10];
    let keep = digits.iter().rposition(|&d| d != 0).map_or(1, |p| p + 1);
    for d in &digits[..keep] {
        out.push(b'0' + *d as u8);
    }
}

/// Digest authentication (RFC 2617 / RFC 7616, MD5 and SHA-256) behind the
/// brute-force guard and, for a REGISTER of `owner` = (AOR key, AOR user),
/// the ownership rule: a user listed in the credentials file may register
/// only its own AOR, and an AOR whose user is listed may be registered only
/// by that user.
pub(super) fn authenticate(
    r: &Registrar,
    msg: &Message<'_>,
    inb: &Inbound<'_>,
    now: Now,
    ctx: &mut WorkerCtx<'_>,
    out: &mut Output,
    owner: Option<(&[u8], &[u8])>,
) -> Result<(), Handled> {
    // A locked-out source is refused before anything else, right password
    // or not: otherwise guessing would go on until it hit.
    let ip = inb.source.ip();
    if r.guard.source_locked(ip, now.mono_ms) {
        return Err(locked_out(r, out, msg, inb, ctx));
    }
    let creds = msg
        .all(HeaderId::Authorization)
        .filter_map(|h| AuthHeader::parse(h.value).ok())
        .find(|a| a.is_digest() && a.param(b"realm") == Some(r.credentials.realm()));
    let Some(creds) = creds else {
        WorkerStats::inc(&ctx.stats.auth_challenges);
        return Err(challenge(r, out, msg, inb, now, false));
    };
    let Ok(resp) = DigestResponse::from_params(creds.params()) else {
        WorkerStats::inc(&ctx.stats.auth_failures);
        return Err(r.reject(out, msg, inb, 400, "Malformed Authorization Header"));
    };
    // Likewise a locked-out user, from any source.
    if r.guard.user_locked(resp.username, now.mono_ms) {
        return Err(locked_out(r, out, msg, inb, ctx));
    }
    // RFC 2617 §3.2.2: opaque comes back unchanged.
    let opaque_ok = resp.opaque.is_some_and(|o| o == r.opaque);
    match authenticator(r).authenticate(&resp, msg.cseq().method, now.unix_secs) {
        Verdict::Authorized if opaque_ok => {}
        // A correct digest whose nonce-count was already used: a retransmission
        // that the transaction cache no longer remembers is still a repeat of
        // an applied request (same Call-ID and CSeq), answered with the current
        // state; anything else is a replay.
        Verdict::Rejected(AuthError::Replay)
            if opaque_ok && owner.is_some_and(|(aor, _)| is_repeat(r, aor, msg)) => {}
        // A right digest whose nonce is expired, from before a restart, or
        // (one-time nonces) used up. The opaque is not required to match:
        // after a restart it is as outdated as the nonce, and stale=true only
        // lets the device answer a new challenge without its user.
        Verdict::Stale => {
            WorkerStats::inc(&ctx.stats.auth_challenges);
            return Err(challenge(r, out, msg, inb, now, true));
        }
        // Unknown user, wrong password, foreign nonce, replayed nc, missing
        // opaque: all the same fresh challenge, so none can be told apart.
        // Only wrong answers count towards a lockout.
        verdict => {
            WorkerStats::inc(&ctx.stats.auth_failures);
            if let Verdict::Rejected(e) = verdict {
                if e.is_failed_guess() {
                    let started = r.guard.record_failure(ip, resp.username, now.mono_ms);
                    ctx.stats
                        .auth_lockouts
                        .fetch_add(started.count(), std::sync::atomic::Ordering::Relaxed);
                }
            }
            return Err(challenge(r, out, msg, inb, now, false));
        }
    }
    let Some((_, aor_user)) = owner else {
        return Ok(());
    };
    let owns = if r.credentials.is_listed_username(resp.username) {
        resp.username == aor_user
    } else {
        !r.credentials.is_listed(aor_user)
    };
    if !owns {
        WorkerStats::inc(&ctx.stats.auth_failures);
        return Err(r.reject(out, msg, inb, 403, "Forbidden"));
    }
    Ok(())
}

/// The brute-force guard's answer: 403 with a reason phrase saying why, so
/// an operator reading a device's log knows; sent the same way for a locked
/// source and a locked user.
fn locked_out(
    r: &Registrar,
    out: &mut Output,
    msg: &Message<'_>,
    inb: &Inbound<'_>,
    ctx: &mut WorkerCtx<'_>,
) -> Handled {
    WorkerStats::inc(&ctx.stats.auth_locked_rejections);
    r.reject(out, msg, inb, 403, "Too Many Failed Authentications")
}

/// True when the AOR holds a binding made by this very Call-ID and CSeq.
fn is_repeat(r: &Registrar, aor: &[u8], msg: &Message<'_>) -> bool {
    let (call_id, cseq) = (msg.call_id(), msg.cseq().seq);
    r.registry.read(aor, |d| {
        d.is_some_and(|d| {
            d.bindings
                .iter()
                .any(|b| b.call_id() == call_id && b.cseq == cseq)
        })
    })
}

/// A 401 with one WWW-Authenticate per configured algorithm (preferred
/// first, RFC 8760 §2.4), sharing one fresh nonce.
fn challenge(
    r: &Registrar,
    out: &mut Output,
    msg: &Message<'_>,
    inb: &Inbound<'_>,
    now: Now,
    stale: bool,
) -> Handled {
    let mut w = r.start(out, msg, inb, 401, b"Unauthorized");
    authenticator(r).challenge(w.raw(), "WWW-Authenticate", now.unix_secs, stale);
    w.finish(b"");
    Handled::Reply(401)
}

/// The digest core over the registrar's shared state: algorithms offered
/// (the store's), one-time nonces (the counts'), nonce lifetime.
fn authenticator(r: &Registrar) -> crate::auth::Authenticator<'_> {
    crate::auth::Authenticator {
        store: &r.credentials,
        secret: &r.secret,
        counts: &r.nonce_counts,
        ttl_secs: r.policy.nonce_ttl_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_share_and_above_the_minimum() {
        let policy = Policy {
            expires_jitter_pct: 20,
            min_expires: 60,
            ..Policy::default()
        };
        for draw in [0, 1, 199, 200, 201, u64::MAX] {
            let e = jittered(1000, &policy, || draw);
            assert!((800..=1000).contains(&e), "{draw}: {e}");
        }
        assert_eq!(jittered(1000, &policy, || 200), 800);
        // Never below the minimum, never turning a removal into a binding.
        assert_eq!(jittered(70, &policy, || 14), 60);
        assert_eq!(jittered(0, &policy, || 5), 0);
        let off = Policy::default();
        assert_eq!(jittered(1000, &off, || 200), 1000);
    }

    #[test]
    fn qvalues() {
        for (q, s) in [
            (1000, "1"),
            (500, "0.5"),
            (25, "0.025"),
            (0, "0.0"),
            (330, "0.33"),
        ] {
            let mut v = Vec::new();
            push_qvalue(&mut v, q);
            assert_eq!(v, s.as_bytes());
        }
    }
}
