//! Routing and JSON rendering of the admin API, without sockets: the server
//! hands [`handle`] a parsed request and writes back the [`Response`].
//!
//! | route | methods | answer |
//! |---|---|---|
//! | `/healthz` | GET | 200 `ok` |
//! | `/metrics` | GET | 200 Prometheus text (see [`super::metrics`]) |
//! | `/api/devices?offset=&limit=` | GET | 200 `{total, offset, limit, devices: [summary]}` |
//! | `/api/devices/{id}` | GET, DELETE | 200 device / 204 removed |
//! | `/api/devices/{id}/catalog` | POST | 202 `{sn}`: a Catalog query was queued |
//! | `/api/devices/{id}/info` | POST | 202 `{sn}`: a DeviceInfo query was queued |
//!
//! HEAD is accepted wherever GET is (the server drops the body). Errors are
//! `{"error": "…"}` with 400, 404, 405 (+ `Allow`), 409, 413, 503 (+ `Retry-After`).

use std::borrow::Cow;
use std::net::SocketAddr;

use serde::Serialize;

use super::url::{percent_decode, query_pairs};
use super::AdminState;
use crate::gb28181::{QueryError, QueryKind};
use crate::registry::{Binding, CatalogStatus, Channel, Device, DeviceInfo};

/// Devices per page when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted: one page is rendered in one go on the admin thread.
pub const MAX_LIMIT: usize = 1000;
/// Longest device id accepted; the registrar keys nothing longer (its
/// `MAX_AOR`, RFC 3261 §10.3 step 5 keys are `user@host`).
pub const MAX_ID: usize = 256;

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus text exposition format 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An answer before it is framed as HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Allow` header (405).
    pub allow: Option<&'static str>,
    /// `Retry-After` header in seconds (503).
    pub retry_after: Option<u32>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            body,
            allow: None,
            retry_after: None,
        }
    }

    fn json(status: u16, value: &impl Serialize) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(status, JSON, body),
            Err(e) => {
                log::error!("admin: cannot render JSON: {e}");
                ApiError::Internal.response()
            }
        }
    }

    /// The standard reason phrase of `status`.
    pub fn reason(&self) -> &'static str {
        reason(self.status)
    }
}

/// The reason phrase of the status codes this API uses.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// What is wrong with a request the client could fix (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// `%` not followed by two hex digits, in the path or the query.
    Escape,
    UnknownParameter,
    RepeatedParameter,
    Offset,
    Limit,
    EmptyId,
    IdTooLong,
    IdControlByte,
}

impl BadRequest {
    pub fn reason(self) -> &'static str {
        match self {
            BadRequest::Escape => "bad percent-escape in the request target",
            BadRequest::UnknownParameter => {
                "unknown query parameter (offset and limit are accepted)"
            }
            BadRequest::RepeatedParameter => "query parameter given twice",
            BadRequest::Offset => "offset must be a non-negative integer",
            BadRequest::Limit => "limit must be an integer from 0 to 1000",
            BadRequest::EmptyId => "empty device id",
            BadRequest::IdTooLong => "device id longer than 256 bytes",
            BadRequest::IdControlByte => "device id contains a control character",
        }
    }
}

/// Every way a request can fail, each with one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(BadRequest),
    /// No such route.
    NoRoute,
    UnknownDevice,
    /// The route exists but not with this method; the value is `Allow`.
    MethodNotAllowed(&'static str),
    /// Request head or body over the limits (set by the server).
    TooLarge,
    /// The query could not be queued (404 / 409 / 503).
    Query(QueryError),
    /// Over the admin connection limit (set by the server).
    TooManyConnections,
    Internal,
}

impl ApiError {
    pub fn status(self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NoRoute | ApiError::UnknownDevice => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::TooLarge => 413,
            ApiError::Query(QueryError::UnknownDevice) => 404,
            ApiError::Query(QueryError::NotRegistered) => 409,
            ApiError::Query(QueryError::Busy) | ApiError::TooManyConnections => 503,
            ApiError::Internal => 500,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ApiError::BadRequest(b) => b.reason(),
            ApiError::NoRoute => "no such resource",
            ApiError::UnknownDevice => "unknown device",
            ApiError::MethodNotAllowed(_) => "method not allowed",
            ApiError::TooLarge => "request too large (head 8 KiB, body 64 KiB at most)",
            ApiError::Query(e) => e.reason(),
            ApiError::TooManyConnections => "too many admin connections",
            ApiError::Internal => "internal error",
        }
    }

    /// `{"error": "…"}` with the status and headers this error calls for.
    pub fn response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: &'static str,
        }
        let body = serde_json::to_vec(&Body {
            error: self.message(),
        })
        .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
        let mut r = Response::new(self.status(), JSON, body);
        if let ApiError::MethodNotAllowed(allow) = self {
            r.allow = Some(allow);
        }
        if self.status() == 503 {
            r.retry_after = Some(1);
        }
        r
    }
}

impl From<BadRequest> for ApiError {
    fn from(b: BadRequest) -> Self {
        ApiError::BadRequest(b)
    }
}

/// A resource of the API; `id` is still percent-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Metrics,
    Devices,
    Device(&'a str),
    Query(&'a str, QueryKind),
    Lookup(&'a str),
}

impl Route<'_> {
    fn parse(path: &str) -> Option<Route<'_>> {
        match path {
            "/healthz" => return Some(Route::Health),
            "/metrics" => return Some(Route::Metrics),
            "/api/devices" => return Some(Route::Devices),
            _ => {}
        }
        if let Some(aor) = path.strip_prefix("/api/lookup/") {
            return (!aor.is_empty() && !aor.contains('/')).then_some(Route::Lookup(aor));
        }
        let rest = path.strip_prefix("/api/devices/")?;
        let mut parts = rest.splitn(3, '/');
        let id = parts.next()?;
        match (parts.next(), parts.next()) {
            (None, None) => Some(Route::Device(id)),
            (Some("catalog"), None) => Some(Route::Query(id, QueryKind::Catalog)),
            (Some("info"), None) => Some(Route::Query(id, QueryKind::DeviceInfo)),
            _ => None,
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Health | Route::Metrics | Route::Devices | Route::Lookup(_) => "GET, HEAD",
            Route::Device(_) => "GET, HEAD, DELETE",
            Route::Query(..) => "POST",
        }
    }
}

/// Answers one request. `path` and `query` are the request target split at
/// `?`, still percent-encoded; `now_ms` is `timer::now_ms()` (binding expiry
/// is monotonic). No endpoint reads a request body today; `_body` is here so
/// the server's framing and this signature need not change when one does.
pub fn handle(
    state: &AdminState,
    method: &str,
    path: &str,
    query: Option<&str>,
    _body: &[u8],
    now_ms: u64,
) -> Response {
    let Some(route) = Route::parse(path) else {
        return ApiError::NoRoute.response();
    };
    let get = method == "GET" || method == "HEAD";
    let result = match (route, method) {
        (Route::Health, _) if get => Ok(Response::new(200, TEXT, b"ok".to_vec())),
        (Route::Metrics, _) if get => {
            let mut out = String::with_capacity(8 * 1024);
            super::metrics::render(state, &mut out);
            Ok(Response::new(200, PROMETHEUS, out.into_bytes()))
        }
        (Route::Devices, _) if get => list(state, query.unwrap_or("")),
        (Route::Device(id), _) if get => device(state, id, now_ms),
        (Route::Lookup(aor), _) if get => lookup(state, aor, now_ms),
        (Route::Device(id), "DELETE") => remove(state, id),
        (Route::Query(id, kind), "POST") => send_query(state, id, kind),
        _ => Err(ApiError::MethodNotAllowed(route.allow())),
    };
    result.unwrap_or_else(ApiError::response)
}

/// Decodes a path segment into a table key. The registrar keys `user@host`
/// with the host in lower case (RFC 3261 §10.3 step 5), so the host part is
/// folded the same way and `alice@Example.COM` finds `alice@example.com`.
pub fn device_id(segment: &str) -> Result<Vec<u8>, BadRequest> {
    let mut id = percent_decode(segment.as_bytes()).map_err(|_| BadRequest::Escape)?;
    if id.is_empty() {
        return Err(BadRequest::EmptyId);
    }
    if id.len() > MAX_ID {
        return Err(BadRequest::IdTooLong);
    }
    if id.iter().any(|b| b.is_ascii_control()) {
        return Err(BadRequest::IdControlByte);
    }
    if let Some(at) = id.iter().rposition(|&b| b == b'@') {
        id[at + 1..].make_ascii_lowercase();
    }
    Ok(id)
}

/// `offset` and `limit` of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Page {
    /// Parses `offset=&limit=`; anything else, a repeat or a bad number is a 400
    /// (a typo such as `limt=` should not silently return the default page).
    pub fn parse(query: &str) -> Result<Page, BadRequest> {
        let mut offset = None;
        let mut limit = None;
        for pair in query_pairs(query) {
            let (name, value) = pair.map_err(|_| BadRequest::Escape)?;
            let (slot, bad) = match name.as_str() {
                "offset" => (&mut offset, BadRequest::Offset),
                "limit" => (&mut limit, BadRequest::Limit),
                _ => return Err(BadRequest::UnknownParameter),
            };
            if slot.is_some() {
                return Err(BadRequest::RepeatedParameter);
            }
            // `usize::from_str` accepts a leading `+`; a plain digit string is
            // what a client means.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad);
            }
            *slot = Some(value.parse::<usize>().map_err(|_| bad)?);
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err(BadRequest::Limit);
        }
        Ok(Page {
            offset: offset.unwrap_or(0),
            limit,
        })
    }
}

fn text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// Online as an operator means it: a GB28181 device by its keep-alive state,
/// any other device by having a live binding.
pub fn is_online(d: &Device) -> bool {
    if d.gb().known {
        d.gb().online
    } else {
        !d.bindings.is_empty()
    }
}

#[derive(Serialize)]
struct Summary {
    id: String,
    online: bool,
    /// Heard from as a GB28181 device (keep-alive, catalog).
    gb28181: bool,
    bindings: usize,
    /// Unix seconds of the last accepted keep-alive.
    last_keepalive: Option<u64>,
}

#[derive(Serialize)]
struct Listing {
    total: usize,
    offset: usize,
    limit: usize,
    devices: Vec<Summary>,
}

fn list(state: &AdminState, query: &str) -> Result<Response, ApiError> {
    let page = Page::parse(query)?;
    let mut devices = Vec::with_capacity(page.limit.min(state.registry.len()));
    // The closure copies a few fields under the shard's read lock and nothing
    // else; rendering happens after the walk.
    let total = state.registry.page(page.offset, page.limit, |aor, d| {
        devices.push(Summary {
            id: text(aor).into_owned(),
            online: is_online(d),
            gb28181: d.gb().known,
            bindings: d.bindings.len(),
            last_keepalive: d.gb().last_keepalive_unix,
        })
    });
    Ok(Response::json(
        200,
        &Listing {
            total,
            offset: page.offset,
            limit: page.limit,
            devices,
        },
    ))
}

#[derive(Serialize)]
struct BindingView<'a> {
    contact: Cow<'a, str>,
    /// The address the REGISTER came from (RFC 3581).
    source: SocketAddr,
    transport: &'static str,
    expires_in: u64,
    q: Option<f64>,
    user_agent: Cow<'a, str>,
    instance: Option<Cow<'a, str>>,
    reg_id: Option<u32>,
    call_id: Cow<'a, str>,
    cseq: u32,
}

impl<'a> BindingView<'a> {
    fn new(b: &'a Binding, now_ms: u64) -> Self {
        BindingView {
            contact: text(b.uri()),
            source: b.source,
            transport: b.transport.as_str(),
            expires_in: b.remaining_secs(now_ms),
            q: b.q.map(|q| f64::from(q) / 1000.0),
            user_agent: text(b.user_agent()),
            instance: b.instance().map(text),
            reg_id: b.reg_id,
            call_id: text(b.call_id()),
            cseq: b.cseq,
        }
    }
}

#[derive(Serialize)]
struct ChannelView<'a> {
    device_id: &'a str,
    name: &'a str,
    manufacturer: &'a str,
    model: &'a str,
    status: &'a str,
    parent_id: &'a str,
    address: &'a str,
    longitude: Option<f64>,
    latitude: Option<f64>,
}

impl<'a> From<&'a Channel> for ChannelView<'a> {
    fn from(c: &'a Channel) -> Self {
        ChannelView {
            device_id: &c.device_id,
            name: &c.name,
            manufacturer: &c.manufacturer,
            model: &c.model,
            status: &c.status,
            parent_id: &c.parent_id,
            address: &c.address,
            longitude: c.longitude,
            latitude: c.latitude,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum CatalogView {
    NeverQueried,
    Pending {
        sn: u32,
        received: usize,
        expected: Option<usize>,
    },
    Complete {
        sn: u32,
        /// Unix seconds when the last part arrived.
        at: u64,
    },
    Partial {
        sn: u32,
        received: usize,
        expected: Option<usize>,
    },
    TimedOut {
        sn: u32,
    },
}

impl From<&CatalogStatus> for CatalogView {
    fn from(c: &CatalogStatus) -> Self {
        match *c {
            CatalogStatus::NeverQueried => CatalogView::NeverQueried,
            CatalogStatus::Pending {
                sn,
                received,
                expected,
            } => CatalogView::Pending {
                sn,
                received,
                expected,
            },
            CatalogStatus::Complete { sn, at_unix } => CatalogView::Complete { sn, at: at_unix },
            CatalogStatus::Partial {
                sn,
                received,
                expected,
            } => CatalogView::Partial {
                sn,
                received,
                expected,
            },
            CatalogStatus::TimedOut { sn } => CatalogView::TimedOut { sn },
        }
    }
}

#[derive(Serialize)]
struct InfoView<'a> {
    manufacturer: &'a str,
    model: &'a str,
    firmware: &'a str,
    channels: Option<u32>,
}

impl<'a> From<&'a DeviceInfo> for InfoView<'a> {
    fn from(i: &'a DeviceInfo) -> Self {
        InfoView {
            manufacturer: &i.manufacturer,
            model: &i.model,
            firmware: &i.firmware,
            channels: i.channels,
        }
    }
}

#[derive(Serialize)]
struct GbView<'a> {
    known: bool,
    online: bool,
    last_keepalive: Option<u64>,
    /// Seconds until the device is offline without another keep-alive.
    keepalive_expires_in: Option<u64>,
    catalog: CatalogView,
    channels: Vec<ChannelView<'a>>,
    info: Option<InfoView<'a>>,
}

#[derive(Serialize)]
struct DeviceView<'a> {
    id: Cow<'a, str>,
    online: bool,
    bindings: Vec<BindingView<'a>>,
    gb: GbView<'a>,
}

impl<'a> DeviceView<'a> {
    fn new(aor: &'a [u8], d: &'a Device, now_ms: u64) -> Self {
        let gb = d.gb();
        DeviceView {
            id: text(aor),
            online: is_online(d),
            bindings: d
                .bindings
                .iter()
                .map(|b| BindingView::new(b, now_ms))
                .collect(),
            gb: GbView {
                known: gb.known,
                online: gb.online,
                last_keepalive: gb.last_keepalive_unix,
                keepalive_expires_in: gb
                    .keepalive_deadline_ms
                    .map(|t| t.saturating_sub(now_ms).div_ceil(1000)),
                catalog: (&gb.catalog).into(),
                channels: gb.channels.iter().map(ChannelView::from).collect(),
                info: gb.info.as_deref().map(InfoView::from),
            },
        }
    }
}

fn device(state: &AdminState, id: &str, now_ms: u64) -> Result<Response, ApiError> {
    let id = device_id(id)?;
    // Rendered under the shard's read lock (memory work only, no syscall):
    // cheaper than copying every channel out first.
    state
        .registry
        .read(&id, |d| {
            d.map(|d| Response::json(200, &DeviceView::new(&id, d, now_ms)))
        })
        .ok_or(ApiError::UnknownDevice)
}

/// `GET /api/lookup/{aor}`: where a proxy should send a request for `aor`
/// (`sip:alice@example.com`, `alice@example.com` or a GB28181 id), normalised
/// exactly as REGISTER stores it; live bindings only, highest q first
/// (RFC 3261 §8.3, as the redirect server orders its 302).
fn lookup(state: &AdminState, aor: &str, now_ms: u64) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Lookup<'a> {
        aor: Cow<'a, str>,
        bindings: Vec<BindingView<'a>>,
    }
    let decoded = percent_decode(aor.as_bytes()).map_err(|_| BadRequest::Escape)?;
    let mut uri_text = decoded.clone();
    if !(uri_text.starts_with(b"sip:") || uri_text.starts_with(b"sips:")) {
        uri_text.splice(0..0, b"sip:".iter().copied());
    }
    let uri = crate::sip::Uri::parse(&uri_text).map_err(|_| BadRequest::EmptyId)?;
    let mut key = [0u8; crate::registry::MAX_AOR];
    let key = crate::registry::aor_key(&uri, &mut key).ok_or(BadRequest::EmptyId)?;
    state
        .registry
        .read(key, |d| {
            d.map(|d| {
                let mut live: Vec<&Binding> = d
                    .bindings
                    .iter()
                    .filter(|b| b.expires_at_ms > now_ms)
                    .collect();
                live.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
                Response::json(
                    200,
                    &Lookup {
                        aor: text(key),
                        bindings: live
                            .into_iter()
                            .map(|b| BindingView::new(b, now_ms))
                            .collect(),
                    },
                )
            })
        })
        .ok_or(ApiError::UnknownDevice)
}

fn remove(state: &AdminState, id: &str) -> Result<Response, ApiError> {
    let id = device_id(id)?;
    if state.registry.remove(&id) {
        Ok(Response::new(204, JSON, Vec::new()))
    } else {
        Err(ApiError::UnknownDevice)
    }
}

fn send_query(state: &AdminState, id: &str, kind: QueryKind) -> Result<Response, ApiError> {
    #[derive(Serialize)]
    struct Accepted {
        sn: u32,
    }
    let id = device_id(id)?;
    let sn = state.queries.query(&id, kind).map_err(ApiError::Query)?;
    Ok(Response::json(202, &Accepted { sn }))
}

#[cfg(test)]
mod tests;
