pub mod client;
pub mod counting;
pub mod peers;
pub mod sans_io;
pub mod server;
pub mod sipp;
pub mod vectors;
