//! The OpenAPI document is generated from the handlers; `docs/openapi.json`
//! is its committed copy, kept in step here. After changing the API run
//! `UPDATE_OPENAPI=1 cargo test -p tidecast-control --test openapi`.

use serde_json::Value;

#[test]
fn committed_openapi_matches_the_code() {
    let generated = tidecast_control::api::openapi_json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(
        committed.trim_end(),
        generated.trim_end(),
        "docs/openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p tidecast-control --test openapi"
    );
}

#[test]
fn every_operation_is_documented_and_secured() {
    let doc: Value = serde_json::from_str(&tidecast_control::api::openapi_json()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for resource in [
        "/api/v1/tenants",
        "/api/v1/keys",
        "/api/v1/streams",
        "/api/v1/streams/{name}/keys",
        "/api/v1/streams/{name}/tokens",
        "/api/v1/triggers",
        "/api/v1/sessions",
        "/api/v1/load",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(resource), "{resource} is in the document");
    }
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path} has responses"));
            assert!(responses.contains_key("401"), "{method} {path} documents 401");
            assert!(responses.contains_key("429"), "{method} {path} documents the failed-auth limit");
            assert!(op["description"].is_string() || op["summary"].is_string(), "{method} {path} is described");
        }
    }
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
}
