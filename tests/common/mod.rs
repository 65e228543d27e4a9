pub mod client;
pub mod peers;
pub mod server;
pub mod sipp;
pub mod vectors;
