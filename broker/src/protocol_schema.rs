//! The WebSocket protocol as one JSON Schema, for client code generators: every server and
//! client frame, the event envelope with its payloads, and the close codes (`x-close-codes`).
//! `cargo xtask openapi` writes it to `clients/typescript/schema/protocol.json`, from which the
//! TypeScript SDK generates its types; a test fails when the committed file differs.

use parley_shared::events::Envelope;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::protocol::{ClientFrame, CloseCode, ServerFrame};

/// Where the committed copy lives, relative to the workspace root.
pub const PATH: &str = "clients/typescript/schema/protocol.json";

pub fn document() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft07());
    let server_frame = generator.subschema_for::<ServerFrame>();
    let client_frame = generator.subschema_for::<ClientFrame>();
    let envelope = generator.subschema_for::<Envelope>();
    let definitions: serde_json::Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    let close_codes: Vec<Value> = CloseCode::ALL
        .iter()
        .map(|code| json!({ "code": code.code(), "reason": code.reason(), "reconnect": code.reconnect() }))
        .collect();
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "ParleyProtocol",
        "description": "Parley's WebSocket protocol, generated from the broker's Rust types (do not edit).",
        "type": "object",
        "properties": {
            "server_frame": server_frame,
            "client_frame": client_frame,
            "envelope": envelope,
        },
        "definitions": definitions,
        "x-close-codes": close_codes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_protocol_schema_matches_the_code() {
        let committed: Value =
            serde_json::from_str(include_str!("../../clients/typescript/schema/protocol.json")).expect("valid JSON");
        assert!(
            committed == document(),
            "{PATH} differs from the code; run `cargo xtask openapi` and commit the result"
        );
    }
}
