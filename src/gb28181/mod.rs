//! GB/T 28181 device platform: keep-alives and online state, MANSCDP XML
//! bodies, and server-originated Catalog / DeviceInfo queries.

pub mod platform;
pub mod xml;

pub use platform::{Dest, Outbox, Platform, PlatformConfig};

/// A query the platform sends to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Catalog,
    DeviceInfo,
}

impl QueryKind {
    pub fn cmd_type(self) -> &'static str {
        match self {
            QueryKind::Catalog => "Catalog",
            QueryKind::DeviceInfo => "DeviceInfo",
        }
    }
}

/// Why a query could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    /// No device with this id in the table.
    UnknownDevice,
    /// The device has no live binding to send to.
    NotRegistered,
    /// Too many queries in flight; try later.
    Busy,
}

impl QueryError {
    pub fn reason(self) -> &'static str {
        match self {
            QueryError::UnknownDevice => "unknown device",
            QueryError::NotRegistered => "device is not registered",
            QueryError::Busy => "too many queries in flight",
        }
    }
}

/// Sends server-originated queries; implemented by the server wiring, used by
/// the admin API (so the admin thread never touches a SIP socket itself).
pub trait QuerySender: Send + Sync {
    /// Queues a query to `device_id`; returns the SN it will carry.
    fn query(&self, device_id: &[u8], kind: QueryKind) -> Result<u32, QueryError>;
}
