//! `StoredEvent` in the OpenAPI document as the discriminated union it is: poem-openapi sees
//! `data` as any JSON, so the document's schema is replaced by the event contract's own
//! (`parley_shared::events::Event`, through schemars), and generated clients get each kind's
//! payload type instead of `unknown`.

use parley_shared::events::Event;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The envelope fields besides `type` and `data`, as poem-openapi documented them.
const ENVELOPE_FIELDS: [&str; 5] = ["id", "conversation_id", "seq", "actor", "occurred_at"];

/// Replaces `StoredEvent` with `allOf: [the envelope fields, EventPayload]`, where
/// `EventPayload` is `oneOf` one `{type, data}` object per kind, and adds the payload schemas
/// (a name the REST API already uses gets an `Event` prefix).
pub fn type_stored_event(spec: &mut Value) {
    let mut settings = SchemaSettings::openapi3();
    settings.definitions_path = "#/components/schemas/".into();
    let mut generator = SchemaGenerator::new(settings);
    let payload = generator.subschema_for::<Event>();
    let definitions: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    let schemas = spec["components"]["schemas"].as_object_mut().expect("the document has schemas");

    let renamed: Vec<(String, String)> = definitions
        .keys()
        .filter(|name| schemas.contains_key(*name))
        .map(|name| (name.clone(), format!("Event{name}")))
        .collect();
    let rename = |value: Value| -> Value {
        let mut text = value.to_string();
        for (old, new) in &renamed {
            text = text.replace(&format!("\"#/components/schemas/{old}\""), &format!("\"#/components/schemas/{new}\""));
        }
        serde_json::from_str(&text).expect("renaming references keeps JSON valid")
    };
    for (name, schema) in definitions {
        let name = renamed.iter().find(|(old, _)| *old == name).map_or(name, |(_, new)| new.clone());
        schemas.insert(name, rename(schema));
    }
    let mut payload = rename(payload.to_value());
    if payload.get("$ref").is_some() {
        // schemars put the union itself among the definitions: keep that one, named for what it is.
        if let Some(event) = schemas.remove("Event") {
            payload = event;
        }
    }
    payload["description"] = json!("The event's kind (`type`) and that kind's payload (`data`).");
    schemas.insert("EventPayload".into(), payload);

    let stored = schemas.get_mut("StoredEvent").expect("StoredEvent is documented");
    let mut fields = Map::new();
    for field in ENVELOPE_FIELDS {
        if let Some(schema) = stored["properties"].get(field) {
            fields.insert(field.into(), schema.clone());
        }
    }
    let typed = json!({
        "title": "StoredEvent",
        "description": stored["description"],
        "example": stored["example"],
        "allOf": [
            { "type": "object", "properties": fields, "required": ENVELOPE_FIELDS },
            { "$ref": "#/components/schemas/EventPayload" },
        ],
    });
    *stored = typed;
}
