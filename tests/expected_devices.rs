//! `--expected-devices` against the real binary: the device table starts
//! pre-sized and the nonce-count cap raised, and /metrics shows both.
//!
//! The nonce table's full counter (`sipreg_nonce_table_full_total`) is only
//! checked here for presence: filling the table takes more than 2^20 digest
//! answers, and no flag shrinks the cap, so its counting is unit-tested in
//! `auth::nonce_count`.

mod common;

use common::client::{Ua, Udp};
use common::server::Server;
use sipreg::auth::MAX_TRACKED_NONCES;

fn gauge(srv: &Server, name: &str) -> f64 {
    srv.metric(name)
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[test]
fn expected_devices_presizes_the_tables() {
    let srv = Server::start_with(&[("--expected-devices", "50000")]);
    let capacity = gauge(&srv, "sipreg_registry_capacity");
    assert!(capacity >= 50_000.0, "registry capacity {capacity}");
    let nonces = gauge(&srv, "sipreg_nonce_table_capacity");
    assert!(
        nonces >= MAX_TRACKED_NONCES as f64,
        "nonce capacity {nonces}"
    );
    assert_eq!(gauge(&srv, "sipreg_nonce_table_full_total"), 0.0);

    // A digest registration with qop=auth: one nonce tracked, no shard grown.
    let mut ua = Ua::new(Udp::connect(srv.addr()), "alice", "example.com", "secret");
    let resp = ua.register(&["<sip:alice@192.0.2.1:5071>"], Some(600));
    assert_eq!(resp.code(), 200, "{resp:?}");
    assert_eq!(gauge(&srv, "sipreg_devices"), 1.0);
    assert_eq!(gauge(&srv, "sipreg_nonce_table_entries"), 1.0);
    assert_eq!(gauge(&srv, "sipreg_registry_capacity"), capacity);
    assert_eq!(gauge(&srv, "sipreg_nonce_table_full_total"), 0.0);
}

#[test]
fn without_the_flag_the_tables_grow_on_demand() {
    let srv = Server::start_default();
    assert_eq!(gauge(&srv, "sipreg_registry_capacity"), 0.0);
    assert_eq!(
        gauge(&srv, "sipreg_nonce_table_capacity"),
        MAX_TRACKED_NONCES as f64
    );
}

#[test]
fn a_bad_value_is_refused_naming_the_flag() {
    let (status, stderr) = Server::start_expect_failure(&[
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--expected-devices",
        "100000001",
    ]);
    assert!(!status.success());
    assert!(stderr.contains("--expected-devices"), "{stderr}");
}
