//! Inbound validation names the offending field by JSON pointer and never echoes its value.

use edge_types::app::AppSpec;
use edge_types::schema::{decode, DecodeError, MAX_MESSAGE_BYTES};
use serde_json::json;

fn spec() -> serde_json::Value {
    json!({
        "name": "web",
        "version": "1.0.0",
        "services": [{"name": "main", "image": "edge/busybox:v1", "env": {"TOKEN": "s3cr3t"}}],
        "placement": {"sites": "customer = acme"}
    })
}

fn pointer_of(v: serde_json::Value) -> String {
    match decode::<AppSpec>(&serde_json::to_vec(&v).unwrap()) {
        Err(DecodeError::Invalid { pointer, .. }) => pointer,
        other => panic!("expected a schema violation, got {other:?}"),
    }
}

#[test]
fn a_valid_spec_decodes() {
    let s = decode::<AppSpec>(&serde_json::to_vec(&spec()).unwrap()).unwrap();
    assert_eq!(s.services[0].replicas, 1);
}

#[test]
fn violations_name_the_field() {
    let mut v = spec();
    v["services"][0]["env"]["bad key"] = json!("x");
    assert_eq!(pointer_of(v), "/services/0/env");
    let mut v = spec();
    v["services"][0]["ports"] = json!([{"container": 70000}]);
    assert_eq!(pointer_of(v), "/services/0/ports/0/container");
    let mut v = spec();
    v["services"][0]["image"] = json!("UPPER case");
    assert_eq!(pointer_of(v), "/services/0/image");
}

#[test]
fn errors_never_echo_values() {
    let mut v = spec();
    v["services"][0]["env"]["TOKEN"] = json!(12345678);
    let e = decode::<AppSpec>(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert_eq!(e.pointer(), "/services/0/env/TOKEN");
    assert!(!e.to_string().contains("12345678"), "{e}");
}

#[test]
fn malformed_and_oversized_input_is_rejected() {
    assert!(matches!(decode::<AppSpec>(b"{"), Err(DecodeError::Malformed(_))));
    assert!(matches!(decode::<AppSpec>(&vec![b' '; MAX_MESSAGE_BYTES + 1]), Err(DecodeError::TooLarge(_))));
    let deep = "[".repeat(100_000);
    assert!(decode::<AppSpec>(deep.as_bytes()).is_err());
}
