//! The committed contract is the one the code serves.

use serde_json::Value;

#[test]
fn committed_openapi_json_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == parley_api::openapi_json() + "\n",
        "openapi/openapi.json differs from the code: run `cargo xtask openapi` and commit the result"
    );
}

#[test]
fn every_operation_has_an_id_a_summary_and_its_error_responses() {
    let spec: Value = serde_json::from_str(&parley_api::openapi_json()).expect("spec is JSON");
    let paths = spec["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let name = format!("{method} {path}");
            assert!(operation["operationId"].is_string(), "{name} lacks an operationId");
            assert!(operation["summary"].is_string(), "{name} lacks a summary");
            for status in ["400", "401", "404", "500"] {
                let response = &operation["responses"][status];
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{name} does not document its {status} problem response"
                );
            }
            let schemes: Vec<&str> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|requirement| requirement.as_object().into_iter().flat_map(|r| r.keys().map(String::as_str)))
                .collect();
            let for_backends = path.starts_with("/v1/channels/")
                || path == "/v1/publications"
                || (path == "/v1/users/{id}/notifications" && method == "post");
            if !for_backends {
                assert_eq!(schemes, ["BearerAuth"], "{name} is not behind the bearer scheme alone");
            } else if method == "get" && path.ends_with("/publications") {
                // History: public channels need no credentials (the empty requirement).
                assert_eq!(schemes, ["HeaderKey", "AuthorizationKey", "BearerAuth"], "{name}");
            } else {
                assert_eq!(
                    schemes,
                    ["HeaderKey", "AuthorizationKey"],
                    "{name} takes a server API key, never a user token"
                );
            }
            for content in operation["requestBody"]["content"].as_object().into_iter().flat_map(|c| c.values()) {
                assert_has_example(&spec, &content["schema"], &format!("{name} request"));
            }
            for (status, response) in operation["responses"].as_object().expect("responses") {
                for content in response["content"].as_object().into_iter().flat_map(|c| c.values()) {
                    assert_has_example(&spec, &content["schema"], &format!("{name} {status} response"));
                }
            }
        }
    }
}

/// The schema (after `$ref`, and in each branch of a `oneOf`) carries an example.
fn assert_has_example(spec: &Value, schema: &Value, what: &str) {
    let resolved = match schema["$ref"].as_str() {
        Some(reference) => &spec["components"]["schemas"][reference.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    if let Some(branches) = resolved["oneOf"].as_array() {
        for branch in branches {
            assert_has_example(spec, branch, what);
        }
        return;
    }
    // A discriminated branch: the tag object plus a `$ref` to the variant, which has the example.
    if let Some(parts) = resolved["allOf"].as_array() {
        let variant = parts.iter().find(|part| part.get("$ref").is_some());
        assert!(variant.is_some(), "{what} has no example");
        assert_has_example(spec, variant.unwrap_or(&Value::Null), what);
        return;
    }
    assert!(resolved.get("example").is_some(), "{what} has no example: {resolved}");
}

#[test]
fn problem_codes_are_an_enum_clients_can_match_on() {
    let spec: Value = serde_json::from_str(&parley_api::openapi_json()).expect("spec is JSON");
    let code = &spec["components"]["schemas"]["Problem"]["properties"]["code"];
    // `{"allOf": [{"$ref": …}, {"description": …}]}`: a reference with its own description.
    let reference = code["$ref"].as_str().or_else(|| code["allOf"][0]["$ref"].as_str());
    let referenced = reference.and_then(|path| path.rsplit('/').next()).expect("code is a named schema");
    let values = spec["components"]["schemas"][referenced]["enum"].as_array().expect("an enum").clone();
    for expected in ["validation_failed", "unauthorized", "not_found", "idempotency_key_reused", "history_pruned"] {
        assert!(values.iter().any(|value| value == expected), "{expected} missing from {values:?}");
    }
}

#[test]
fn each_error_status_shows_a_problem_of_its_own() {
    let spec: Value = serde_json::from_str(&parley_api::openapi_json()).expect("spec is JSON");
    let mut codes = std::collections::BTreeMap::new();
    for (path, operations) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let Some(problem) = response["content"]["application/problem+json"].as_object() else { continue };
                let example = &problem["example"];
                assert_eq!(example["status"].to_string(), *status, "{method} {path} {status}: {example}");
                codes.insert(status.clone(), example["code"].clone());
            }
        }
    }
    assert_eq!(codes["400"], "validation_failed");
    assert_eq!(codes["404"], "not_found");
    assert_eq!(codes["429"], "rate_limited");
    assert!(codes.len() >= 8, "{codes:?}");
    assert_eq!(spec["servers"][0]["url"], "/");
}
