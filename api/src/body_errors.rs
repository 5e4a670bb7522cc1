//! Plain words for a JSON body that does not fit its schema. poem-openapi says `Expected input
//! type "string", found null. (occurred while parsing "NewMessage")` and names no field; this
//! middleware keeps a copy of JSON bodies (already bounded by `BodyLimit`) and, when parsing
//! failed, finds the field at fault by checking the body against the operation's body schema
//! (and the nested types the message names): `"text" is required`, `"seq" must be an integer`,
//! with `field` set. A body
//! with a key repeated in one object is refused before it is parsed (`"text" appears twice`).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::http::header::CONTENT_TYPE;
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, Result};
use poem_openapi::error::ParseRequestPayloadError;
use serde_json::{Map, Value};

use crate::error::{ApiError, Problem, ProblemCode, ProblemJson};

/// The OpenAPI document's component schemas, and each operation's body type.
#[derive(Debug)]
struct Contract {
    schemas: Map<String, Value>,
    /// `(method, path template)` → the name of its JSON body's schema.
    bodies: Vec<(String, String, String)>,
}

impl Contract {
    /// The body type of the operation a request path matches (`{id}` matches any segment).
    fn body_type(&self, method: &str, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.bodies.iter().find_map(|(m, template, name)| {
            let parts: Vec<&str> = template.split('/').collect();
            let matches = m == method
                && parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| part.starts_with('{') || part == segment);
            matches.then_some(name.as_str())
        })
    }
}

#[derive(Clone, Debug)]
pub struct PlainBodyErrors {
    contract: Arc<Contract>,
}

impl PlainBodyErrors {
    pub fn new(spec: &Value) -> Self {
        let schemas = spec["components"]["schemas"].as_object().cloned().unwrap_or_default();
        let mut bodies = Vec::new();
        for (path, operations) in spec["paths"].as_object().into_iter().flatten() {
            for (method, operation) in operations.as_object().into_iter().flatten() {
                let content = operation["requestBody"]["content"].as_object();
                let json =
                    content.and_then(|content| content.iter().find(|(kind, _)| kind.starts_with("application/json")));
                let reference = json.and_then(|(_, body)| body["schema"]["$ref"].as_str());
                if let Some(name) = reference.and_then(|reference| reference.rsplit('/').next()) {
                    bodies.push((method.clone(), path.clone(), name.to_owned()));
                }
            }
        }
        Self { contract: Arc::new(Contract { schemas, bodies }) }
    }
}

impl<E: Endpoint> Middleware<E> for PlainBodyErrors {
    type Output = PlainBodyErrorsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        PlainBodyErrorsEndpoint { inner, contract: self.contract.clone() }
    }
}

#[derive(Debug)]
pub struct PlainBodyErrorsEndpoint<E> {
    inner: E,
    contract: Arc<Contract>,
}

impl<E: Endpoint> Endpoint for PlainBodyErrorsEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let method = req.method().as_str().to_ascii_lowercase();
        let path = req.uri().path().to_owned();
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.contains("json"));
        let body = if json {
            let bytes = req.take_body().into_bytes().await?;
            // serde keeps the last of two equal keys silently; a client that sent both meant
            // something we cannot know.
            if let Some(field) = duplicate_key(&bytes) {
                let detail = format!("\"{field}\" appears twice");
                return Err(refused(Some(field), detail));
            }
            req.set_body(Body::from(bytes.clone()));
            Some(bytes)
        } else {
            None
        };
        match self.inner.call(req).await {
            Err(error) if error.is::<ParseRequestPayloadError>() => {
                let body = body.and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
                let body_type = self.contract.body_type(&method, &path);
                let (field, detail) = explain(&self.contract.schemas, &error.to_string(), body_type, body.as_ref());
                let mut plain = refused(field, detail);
                if let Some(route) = error.data::<poem::PathPattern>() {
                    plain.set_data(route.clone());
                }
                Err(plain)
            }
            other => other,
        }
    }
}

/// A 400 `validation_failed` problem as a poem error.
fn refused(field: Option<String>, detail: String) -> poem::Error {
    let mut problem = Problem::new(StatusCode::BAD_REQUEST, ProblemCode::ValidationFailed, detail);
    problem.field = field;
    poem::Error::from_response(ApiError::BadRequest(ProblemJson::new(problem)).into_response())
}

/// The first key that appears twice in one object of a JSON document, with its path
/// (`attachment.url`); `None` for a document without one (or one that is not JSON at all).
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    let found = std::cell::RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let _ = serde::de::DeserializeSeed::deserialize(KeyWalk { path: String::new(), found: &found }, &mut deserializer);
    found.into_inner()
}

/// Walks a JSON document, stopping at the first repeated key of an object.
struct KeyWalk<'a> {
    path: String,
    found: &'a std::cell::RefCell<Option<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyWalk<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                *self.found.borrow_mut() = Some(format!("{}{key}", self.path));
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(KeyWalk { path: format!("{}{key}.", self.path), found: self.found })?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(KeyWalk { path: self.path.clone(), found: self.found })?.is_some() {}
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The field at fault and a sentence about it; without a recognisable cause, the parser's
/// message without its "(occurred while parsing …)" trail.
fn explain(
    schemas: &Map<String, Value>,
    reason: &str,
    body_type: Option<&str>,
    body: Option<&Value>,
) -> (Option<String>, String) {
    let reason = reason.trim_start_matches("parse request payload error: ");
    let bare = reason.split(" (occurred while parsing").next().unwrap_or(reason).trim().trim_end_matches('.');
    // The types being parsed, innermost first (`… (occurred while parsing "Attachment")`), then
    // the operation's body type unless the parser named it already.
    // Names that are not schemas of the document (`optional_string`, `uuid`) are wrappers: skipped.
    let mut types: Vec<&str> = reason
        .split("(occurred while parsing \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|name| schemas.contains_key(*name))
        .collect();
    if let Some(body_type) = body_type.filter(|body_type| types.last() != Some(body_type)) {
        types.push(body_type);
    }
    // A field's validator refused it: `… field `body` verification failed. maxLength(1000)`.
    let refused_field = bare.split_once("field `").and_then(|(_, rest)| rest.split_once("` verification failed. "));
    if let Some((name, rule)) = refused_field {
        let path = body.and_then(|body| descend(schemas, &types, body)).map(|(_, _, path)| path).unwrap_or_default();
        let field = format!("{path}{name}");
        return (Some(field.clone()), format!("\"{field}\" breaks the rule {rule}"));
    }
    // A union's discriminator with a value it does not map (`{"kind": "pager"}`).
    if let Some(fault) = body_type.and_then(|name| unknown_variant(schemas.get(name)?, body?)) {
        return fault;
    }
    // `integer_int64` → `integer`: the JSON type, without the format.
    let expected = bare
        .strip_prefix("Expected input type \"")
        .and_then(|rest| rest.split('"').next())
        .and_then(|kind| kind.split('_').next());
    let found = body.and_then(|body| {
        let (schema, object, path) = descend(schemas, &types, body)?;
        Some((fault(schemas, schema, object, expected)?, path))
    });
    match found {
        Some((Fault::Missing(name), path)) => {
            let field = format!("{path}{name}");
            (Some(field.clone()), format!("\"{field}\" is required"))
        }
        Some((Fault::WrongType(name, wanted), path)) => {
            let field = format!("{path}{name}");
            (Some(field.clone()), format!("\"{field}\" must be {}", kind_words(&wanted)))
        }
        Some((Fault::NotAllowed(name, allowed), path)) => {
            let field = format!("{path}{name}");
            (Some(field.clone()), format!("\"{field}\" must be one of {allowed}"))
        }
        None => (None, format!("the body does not match the schema: {bare}")),
    }
}

/// The discriminator of a union body whose value names none of its variants.
fn unknown_variant(schema: &Value, body: &Value) -> Option<(Option<String>, String)> {
    let name = schema["discriminator"]["propertyName"].as_str()?;
    let mapping = schema["discriminator"]["mapping"].as_object()?;
    let value = body.get(name)?.as_str()?;
    if mapping.contains_key(value) {
        return None;
    }
    let allowed: Vec<String> = mapping.keys().map(|key| format!("\"{key}\"")).collect();
    Some((Some(name.to_owned()), format!("\"{name}\" must be one of {}", allowed.join(", "))))
}

/// From the outermost type (the body) to the innermost, following the property that holds each
/// nested type: that type's schema, the body's object there and its path (`attachment.`).
fn descend<'a>(
    schemas: &'a Map<String, Value>,
    types: &[&str],
    body: &'a Value,
) -> Option<(&'a Value, &'a Map<String, Value>, String)> {
    let (outer, inner) = types.split_last()?;
    let mut schema = schemas.get(*outer)?;
    let mut object = body.as_object()?;
    let mut path = String::new();
    for name in inner.iter().rev() {
        let reference = format!("#/components/schemas/{name}");
        let properties = schema["properties"].as_object()?;
        let (property, _) = properties.iter().find(|(_, property)| {
            property["$ref"] == reference.as_str() || property["allOf"][0]["$ref"] == reference.as_str()
        })?;
        object = object.get(property)?.as_object()?;
        schema = schemas.get(*name)?;
        path.push_str(&format!("{property}."));
    }
    Some((schema, object, path))
}

enum Fault {
    Missing(String),
    WrongType(String, String),
    /// Not one of an enumeration's values (listed, comma-separated).
    NotAllowed(String, String),
}

/// The first required property that is absent or null, else the first whose JSON type differs
/// from its schema's (preferring the type the parser expected), else the first that is not one
/// of its enumeration's values.
fn fault(
    schemas: &Map<String, Value>,
    schema: &Value,
    object: &Map<String, Value>,
    expected: Option<&str>,
) -> Option<Fault> {
    let required = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str);
    if let Some(missing) = required.into_iter().find(|name| object.get(*name).is_none_or(Value::is_null)) {
        return Some(Fault::Missing(missing.to_owned()));
    }
    let properties = schema["properties"].as_object()?;
    let present = || {
        properties
            .iter()
            .filter_map(|(name, property)| Some((name, property, object.get(name).filter(|value| !value.is_null())?)))
    };
    let wrong_type = present().find_map(|(name, property, value)| {
        let wanted = property["type"].as_str()?;
        (!matches_type(value, wanted) && expected.is_none_or(|expected| expected == wanted))
            .then(|| Fault::WrongType(name.clone(), wanted.to_owned()))
    });
    wrong_type.or_else(|| {
        present().find_map(|(name, property, value)| {
            let reference = property["$ref"].as_str().or_else(|| property["allOf"][0]["$ref"].as_str());
            let target = reference.and_then(|reference| schemas.get(reference.strip_prefix("#/components/schemas/")?));
            let allowed = target.unwrap_or(property)["enum"].as_array()?;
            (!allowed.contains(value)).then(|| {
                let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
                Fault::NotAllowed(name.clone(), listed.join(", "))
            })
        })
    })
}

fn matches_type(value: &Value, wanted: &str) -> bool {
    match wanted {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn kind_words(wanted: &str) -> String {
    match wanted {
        "string" => "a string".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "boolean" => "true or false".into(),
        "array" => "a list".into(),
        "object" => "an object".into(),
        other => format!("of type {other}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schemas() -> Map<String, Value> {
        json!({
            "ReceiptBody": { "type": "object", "required": ["seq"], "properties": { "seq": { "type": "integer" } } },
            "Outer": { "type": "object", "properties": { "inner": { "$ref": "#/components/schemas/ReceiptBody" } } },
        })
        .as_object()
        .cloned()
        .expect("an object")
    }

    #[test]
    fn a_missing_field_is_named_in_plain_words() {
        let reason = "Expected input type \"integer\", found null. (occurred while parsing \"ReceiptBody\")";
        let (field, detail) = explain(&schemas(), reason, None, Some(&json!({})));
        assert_eq!((field.as_deref(), detail.as_str()), (Some("seq"), "\"seq\" is required"));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        // The parser names no type: the operation's body type is used.
        let reason = "parse request payload error: Expected input type \"integer\", found \"3\"";
        let (field, detail) = explain(&schemas(), reason, Some("ReceiptBody"), Some(&json!({ "seq": "3" })));
        assert_eq!((field.as_deref(), detail.as_str()), (Some("seq"), "\"seq\" must be an integer"));
    }

    #[test]
    fn a_nested_field_is_named_by_its_path() {
        let reason = "Expected input type \"integer\", found null. (occurred while parsing \"ReceiptBody\")";
        let (field, detail) = explain(&schemas(), reason, Some("Outer"), Some(&json!({ "inner": {} })));
        assert_eq!((field.as_deref(), detail.as_str()), (Some("inner.seq"), "\"inner.seq\" is required"));
    }

    #[test]
    fn a_field_its_validator_refused_is_named_with_the_rule() {
        let reason = "parse request payload error: failed to parse \"ReceiptBody\": field `seq` verification failed. maximum(10)";
        let (field, detail) = explain(&schemas(), reason, Some("ReceiptBody"), Some(&json!({ "seq": 11 })));
        assert_eq!((field.as_deref(), detail.as_str()), (Some("seq"), "\"seq\" breaks the rule maximum(10)"));
    }

    #[test]
    fn a_value_outside_its_enumeration_is_named_with_the_values() {
        let mut schemas = schemas();
        schemas.insert("Kind".into(), json!({ "type": "string", "enum": ["app", "mention"] }));
        schemas.insert(
            "Note".into(),
            json!({ "type": "object", "properties": { "kind": { "$ref": "#/components/schemas/Kind" } } }),
        );
        let reason = "parse request payload error: failed to parse \"Kind\" (occurred while parsing \"Note\")";
        let (field, detail) = explain(&schemas, reason, Some("Note"), Some(&json!({ "kind": "party" })));
        assert_eq!((field.as_deref(), detail.as_str()), (Some("kind"), "\"kind\" must be one of \"app\", \"mention\""));
    }

    #[test]
    fn a_repeated_key_is_found_with_its_path() {
        assert_eq!(duplicate_key(br#"{"text":"a","text":"b"}"#).as_deref(), Some("text"));
        assert_eq!(duplicate_key(br#"{"attachment":{"url":"a","url":"b"}}"#).as_deref(), Some("attachment.url"));
        assert_eq!(duplicate_key(br#"{"kind":"group","items":[{"a":1},{"a":2}]}"#), None);
        assert_eq!(duplicate_key(b"{not json"), None);
    }

    #[test]
    fn an_unknown_cause_keeps_the_parser_message_without_its_trail() {
        let reason = "failed to parse JSON (occurred while parsing \"Other\")";
        let (field, detail) = explain(&schemas(), reason, None, None);
        assert_eq!(field, None);
        assert_eq!(detail, "the body does not match the schema: failed to parse JSON");
    }
}

#[cfg(test)]
mod contract_tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_real_contract_names_the_field() {
        let spec: Value = serde_json::from_str(&crate::routes::spec_json()).expect("json");
        let errors = PlainBodyErrors::new(&spec);
        let body_type =
            errors.contract.body_type("post", "/v1/conversations/0191d0c2-6c3e-7f00-8000-000000000b0b/messages");
        assert_eq!(body_type, Some("NewMessage"));
        let reason = "parse request payload error: Expected input type \"string\", found 42. \
                      (occurred while parsing \"optional_string\") (occurred while parsing \"NewMessage\")";
        let (field, _) = explain(&errors.contract.schemas, reason, body_type, Some(&json!({ "text": 42 })));
        assert_eq!(field.as_deref(), Some("text"));
    }
}
