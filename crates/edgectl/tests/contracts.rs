//! The documented contract cannot drift: `schemas/asyncapi.yaml` lists every API subject and
//! every message schema, all its references resolve, its addresses follow the subject grammar,
//! and the example applications are valid specs.

use std::path::{Path, PathBuf};

use edge_types::app::AppSpec;
use edge_types::subject::{self, ApiOp};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn asyncapi() -> Value {
    let text = std::fs::read_to_string(root().join("schemas/asyncapi.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap().to_string());
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn asyncapi_lists_every_api_subject_and_message() {
    let doc = asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let addresses: Vec<&str> =
        doc["channels"].as_object().unwrap().values().filter_map(|c| c["address"].as_str()).collect();
    for op in ApiOp::ALL {
        assert!(addresses.contains(&op.subject().as_str()), "{} is not documented", op.subject());
    }
    for (name, _, _) in edge_types::schema::all() {
        let msg = &doc["components"]["messages"][name];
        assert_eq!(msg["payload"]["$ref"], format!("./{name}.json"), "message {name} is not documented");
    }
}

#[test]
fn asyncapi_references_resolve() {
    let doc = asyncapi();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50);
    for r in all {
        if let Some(pointer) = r.strip_prefix('#') {
            assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
        } else {
            let file = root().join("schemas").join(&r);
            let text = std::fs::read_to_string(&file).unwrap_or_else(|_| panic!("missing schema file {r}"));
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{r} is not JSON: {e}"));
        }
    }
}

#[test]
fn asyncapi_addresses_follow_the_grammar() {
    let doc = asyncapi();
    for (id, channel) in doc["channels"].as_object().unwrap() {
        let Some(address) = channel["address"].as_str() else {
            continue;
        };
        if address.contains("{service}") {
            continue; // health subjects belong to each service, not to the scheduler's grammar
        }
        if let Some(kv) = address.strip_prefix("$KV.") {
            // A KV bucket: it must be one the topology ensures.
            let bucket = kv.split('.').next().unwrap();
            let known = [
                edge_bus::topology::BUCKET_HOSTS,
                edge_bus::topology::BUCKET_LEADER,
                edge_bus::topology::BUCKET_ASSIGN,
                edge_bus::topology::BUCKET_HOST_STATUS,
                edge_bus::topology::BUCKET_IMAGES,
                edge_bus::topology::BUCKET_STAGING,
            ];
            assert!(known.contains(&bucket), "channel {id}: bucket {bucket} is not in the topology");
            continue;
        }
        let site = edge_types::Name::new("site-1").unwrap();
        let shard = subject::shard_token(subject::desired_shard(&site));
        let concrete = address
            .replace("{shard}", &shard)
            .replace("{site}", site.as_str())
            .replace("{app}", "web")
            .replace("{tenant}", "default")
            .replace("{topic}", "readings")
            .replace("{name}", "db")
            .replace("{kind}", "site_offline")
            .replace("{host}", "host-1")
            .replace("{op}", "app.apply")
            .replace("{server}", "hub");
        assert!(subject::parse(&concrete).is_ok(), "channel {id}: {address} is not in the grammar");
    }
}

#[test]
fn example_applications_are_valid_specs() {
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let value: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let bytes = serde_json::to_vec(&value).unwrap();
        let spec: AppSpec = edge_types::schema::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        spec.check().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen += 1;
    }
    assert!(seen >= 1);
}
