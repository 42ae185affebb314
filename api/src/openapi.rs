//! The OpenAPI 3.0 description of the API, generated from [`ROUTES`](crate::ops::ROUTES) so
//! it cannot disagree with what the daemon serves. The daemon serves it at
//! `/v1/openapi.json`; `docs/openapi.json` is the same document, kept equal by a test.

use serde_json::{Map, Value, json};

use crate::ops::{Method, ObjectKind, ROUTES};

fn tag(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Node => "node",
        ObjectKind::Domain => "domains",
        ObjectKind::Pool => "pools",
        ObjectKind::Volume => "volumes",
        ObjectKind::Network => "networks",
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let error = json!({
        "description": "The error: its kind (not-found, invalid-state, permission-denied, ...) and a message naming the cause",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    });
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
            })
            .collect();
        let mut op = json!({
            "operationId": r.op,
            "tags": [tag(r.object)],
            "x-permission": r.permission.name(),
            "parameters": params,
            "responses": {
                "200": { "description": "The answer, as JSON", "content": { "application/json": {} } },
                "default": error,
            }
        });
        if r.method == Method::Post {
            op["requestBody"] = json!({
                "description": format!("The arguments of '{}' other than those in the path, as a JSON object", r.op),
                "required": false,
                "content": { "application/json": { "schema": { "type": "object" } } }
            });
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = op;
    }
    paths.insert(
        "/v1".into(),
        json!({ "get": { "operationId": "server-info", "tags": ["node"],
            "responses": { "200": { "description": "API version, daemon mode, the caller's identity and role" } } } }),
    );
    paths.insert(
        "/v1/events".into(),
        json!({ "get": { "operationId": "events", "tags": ["events"], "x-permission": "search",
            "responses": { "200": { "description": "Server-Sent Events: `event: domain|pool|network`, `data:` one JSON event",
                "content": { "text/event-stream": {} } }, "default": error } } }),
    );
    paths.insert(
        "/v1/openapi.json".into(),
        json!({ "get": { "operationId": "openapi", "tags": ["node"],
            "responses": { "200": { "description": "This document" } } } }),
    );
    paths.insert(
        "/v1/operations".into(),
        json!({ "get": { "operationId": "operations", "tags": ["operations"], "x-permission": "getattr",
            "responses": { "200": { "description": "Running and recent operations, newest first" }, "default": error } } }),
    );
    paths.insert(
        "/v1/operations/{id}".into(),
        json!({
            "get": { "operationId": "operation", "tags": ["operations"], "x-permission": "getattr",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "The operation: status, progress, result or error" }, "default": error } },
            "delete": { "operationId": "operation-cancel", "tags": ["operations"], "x-permission": "the operation's own",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "Cancel requested" }, "default": error } }
        }),
    );
    paths.insert(
        "/v1/operations/{id}/wait".into(),
        json!({ "get": { "operationId": "operation-wait", "tags": ["operations"], "x-permission": "getattr",
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                           { "name": "timeout", "in": "query", "required": false, "schema": { "type": "integer" } }],
            "responses": { "200": { "description": "The operation once finished, or as it is after the timeout" }, "default": error } } }),
    );
    paths.insert(
        "/v1/volumes/{key}/data".into(),
        json!({
            "get": { "operationId": "vol-download", "tags": ["volumes"], "x-permission": "read",
                "parameters": [{ "name": "key", "in": "path", "required": true, "schema": { "type": "string" } },
                               { "name": "pool", "in": "query", "required": false, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "The volume's bytes (x-virtwasm-operation names the operation)",
                    "content": { "application/octet-stream": {} } }, "default": error } },
            "put": { "operationId": "vol-upload", "tags": ["volumes"], "x-permission": "write",
                "parameters": [{ "name": "key", "in": "path", "required": true, "schema": { "type": "string" } },
                               { "name": "pool", "in": "query", "required": false, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/octet-stream": {} } },
                "responses": { "200": { "description": "Bytes written" }, "default": error } }
        }),
    );
    paths.insert(
        "/v1/domains/{key}/console".into(),
        json!({ "get": { "operationId": "console", "tags": ["domains"], "x-permission": "open_device",
            "parameters": [{ "name": "key", "in": "path", "required": true, "schema": { "type": "string" } },
                           { "name": "device", "in": "query", "required": false, "schema": { "type": "string" } },
                           { "name": "Upgrade", "in": "header", "required": true, "schema": { "type": "string", "enum": ["virtwasm-console"] } }],
            "responses": { "101": { "description": "The connection now carries the guest's serial port both ways" }, "default": error } } }),
    );
    paths.insert(
        "/v1/trust".into(),
        json!({ "get": { "operationId": "trust-list", "tags": ["trust"], "x-permission": "read",
            "responses": { "200": { "description": "Trusted clients and pending tokens (no secrets)" }, "default": error } } }),
    );
    paths.insert(
        "/v1/trust/tokens".into(),
        json!({ "post": { "operationId": "trust-token", "tags": ["trust"], "x-permission": "write",
            "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["name"],
                "properties": { "name": { "type": "string" }, "role": { "type": "string", "enum": ["read-only", "operator", "admin"] },
                    "ttl_secs": { "type": "integer" } } } } } },
            "responses": { "200": { "description": "The token (vwt1.SECRET.FINGERPRINT), its name, role and expiry" }, "default": error } } }),
    );
    paths.insert(
        "/v1/trust/join".into(),
        json!({ "post": { "operationId": "trust-join", "tags": ["trust"], "x-permission": "a valid token (no certificate needed)",
            "requestBody": { "content": { "application/json": { "schema": { "type": "object", "required": ["secret", "csr"],
                "properties": { "secret": { "type": "string" }, "csr": { "type": "string", "description": "PEM certificate signing request" } } } } } },
            "responses": { "200": { "description": "The signed client certificate, the CA, the client's name, role and fingerprint" }, "default": error } } }),
    );
    paths.insert(
        "/v1/trust/clients/{name}".into(),
        json!({ "delete": { "operationId": "trust-remove", "tags": ["trust"], "x-permission": "write",
            "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": { "description": "The removed client" }, "default": error } } }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "virtwasm API",
            "version": "1",
            "description": "virtwasmd's management API. Every request may name the driver URI in the x-virtwasm-uri header (default: the daemon's default_uri). See docs/api.md."
        },
        "paths": paths,
        "components": { "schemas": { "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": { "type": "object", "required": ["kind", "message"], "properties": {
                "kind": { "type": "string", "enum": ["unsupported", "invalid-argument", "not-found", "invalid-state",
                    "already-exists", "permission-denied", "operation-failed", "timeout", "plugin-crashed", "plugin-load", "internal"] },
                "message": { "type": "string" } } } }
        } } }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_repository_copy_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let generated = serde_json::to_string_pretty(&super::document()).unwrap() + "\n";
        if std::env::var_os("VIRTWASM_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == generated,
            "docs/openapi.json is stale: run `VIRTWASM_WRITE_OPENAPI=1 cargo test -p virtwasm-api openapi`"
        );
    }
}
