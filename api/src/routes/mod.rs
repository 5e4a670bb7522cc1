//! HTTP routes: `/health` and `/ready` outside the contract, and the `/v1` OpenAPI service, one
//! module per resource.

pub mod channels;
pub mod conversations;
mod event_schema;
pub mod events;
mod examples;
pub mod health;
pub mod me;
pub mod members;
pub mod messages;
pub mod notifications;
pub mod presence;
pub mod push;
pub mod reactions;
pub mod receipts;
pub mod search;
pub mod typing;

use poem_openapi::{OpenApiService, Tags};

#[derive(Tags)]
pub enum ApiTags {
    /// The calling user.
    Users,
    /// Direct and group conversations.
    Conversations,
    /// Who belongs to a group.
    Members,
    /// Sending, reading, editing and deleting messages.
    Messages,
    /// Delivery and read cursors.
    Receipts,
    /// Full-text search.
    Search,
    /// The stored event log, for catching up.
    Events,
    /// Application channels: publishing (server API key), history and stats.
    Channels,
    /// The caller's notification inbox and push targets, and backends' notifications (server API key).
    Notifications,
}

pub type Api = (
    me::MeApi,
    conversations::ConversationsApi,
    members::MembersApi,
    messages::MessagesApi,
    reactions::ReactionsApi,
    receipts::ReceiptsApi,
    typing::TypingApi,
    presence::PresenceApi,
    search::SearchApi,
    events::EventsApi,
    channels::ChannelsApi,
    // Tuples implement `Default` up to 12 elements.
    (notifications::NotificationsApi, push::PushApi),
);

/// The operations that can answer 409 (a deleted message, membership rules).
const CONFLICTS: [(&str, &str); 7] = [
    ("post", "/v1/me/push-targets"),
    ("patch", "/v1/conversations/{id}"),
    ("post", "/v1/conversations/{id}/members"),
    ("delete", "/v1/conversations/{id}/members/{user_id}"),
    ("patch", "/v1/conversations/{id}/messages/{message_id}"),
    ("put", "/v1/conversations/{id}/messages/{message_id}/reactions/{emoji}"),
    ("delete", "/v1/conversations/{id}/messages/{message_id}/reactions/{emoji}"),
];
/// The operations that honour `Idempotency-Key` and so can answer 422 when one is reused.
const IDEMPOTENT: [(&str, &str); 3] = [
    ("post", "/v1/conversations/{id}/messages"),
    ("post", "/v1/channels/{channel}/publications"),
    ("post", "/v1/publications"),
];

/// The OpenAPI document as served and committed: poem-openapi's, plus what its derive macros
/// cannot say:
/// - a union has no example of its own, so Swagger UI prefilled the first variant's, which
///   lacks the `kind` discriminator and was refused;
/// - every error response shared the `Problem` schema's one example (a 404); each status now
///   shows a problem of its own;
/// - `servers` names this API wherever the document was served from;
/// - every operation shared one error type; each now lists only the statuses it can answer;
/// - `StoredEvent.data` is the union of the event payloads (`event_schema`), not any JSON.
pub fn spec_json() -> String {
    let mut spec: serde_json::Value = serde_json::from_str(&api_service().spec()).expect("poem-openapi writes JSON");
    spec["components"]["schemas"]["NewConversation"]["example"] =
        serde_json::json!({ "kind": "group", "title": "Weekend trip", "member_ids": [examples::BOB] });
    spec["components"]["schemas"]["NewPushTarget"]["example"] =
        serde_json::json!({ "kind": "expo", "token": "ExponentPushToken[xxxxxxxxxxxxxxxxxxxxxx]" });
    spec["servers"] = serde_json::json!([{ "url": "/", "description": "This API (where this document was served)" }]);
    event_schema::type_stored_event(&mut spec);
    if let Some(paths) = spec["paths"].as_object_mut() {
        let operations = paths
            .iter_mut()
            .filter_map(|(path, ops)| Some((path.clone(), ops.as_object_mut()?)))
            .flat_map(|(path, ops)| ops.iter_mut().map(move |(method, op)| (path.clone(), method.clone(), op)));
        for (path, method, operation) in operations {
            let has_body = operation.get("requestBody").is_some();
            let Some(responses) = operation["responses"].as_object_mut() else { continue };
            // Every operation shares one error type; list only the statuses this one can answer.
            responses.retain(|status, _| match status.as_str() {
                "413" | "415" => has_body,
                "409" => CONFLICTS.contains(&(method.as_str(), path.as_str())),
                "422" => IDEMPOTENT.contains(&(method.as_str(), path.as_str())),
                _ => true,
            });
            for (status, response) in responses {
                let problem =
                    response.get_mut("content").and_then(|content| content.get_mut(crate::error::PROBLEM_CONTENT_TYPE));
                if let (Some(problem), Some(example)) = (problem, status.parse().ok().and_then(examples::problem_for)) {
                    problem["example"] = example;
                }
            }
        }
    }
    serde_json::to_string_pretty(&spec).expect("a JSON value serialises")
}

/// The `/v1` API with its OpenAPI document.
pub fn api_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(Api::default(), "Parley API", env!("CARGO_PKG_VERSION")).description(
        "Real-time messaging backend. Every route needs `Authorization: Bearer <JWT>`; errors are \
         RFC 7807 `application/problem+json` with a stable `code`. Live events arrive over the \
         broker's WebSocket; this API's `/events` endpoint replays them by `seq`.",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn spec() -> Value {
        serde_json::from_str(&super::spec_json()).expect("the document is JSON")
    }

    fn statuses(spec: &Value, method: &str, path: &str) -> Vec<String> {
        spec["paths"][path][method]["responses"].as_object().expect("responses").keys().cloned().collect()
    }

    #[test]
    fn operations_list_only_the_error_statuses_they_can_answer() {
        let spec = spec();
        let me = statuses(&spec, "get", "/v1/me");
        for status in ["409", "413", "415", "422"] {
            assert!(!me.contains(&status.to_owned()), "GET /v1/me lists {status}");
        }
        let send = statuses(&spec, "post", "/v1/conversations/{id}/messages");
        for status in ["400", "401", "404", "413", "415", "422", "429"] {
            assert!(send.contains(&status.to_owned()), "sending a message may answer {status}");
        }
        assert!(statuses(&spec, "post", "/v1/conversations/{id}/members").contains(&"409".to_owned()));
        assert!(!statuses(&spec, "get", "/v1/conversations").contains(&"409".to_owned()));
    }

    #[test]
    fn stored_event_data_is_the_union_of_the_event_payloads() {
        let spec = spec();
        let schemas = &spec["components"]["schemas"];
        assert_eq!(schemas["StoredEvent"]["allOf"][1]["$ref"], "#/components/schemas/EventPayload");
        let kinds: Vec<&str> = schemas["EventPayload"]["oneOf"]
            .as_array()
            .expect("a oneOf")
            .iter()
            .map(|variant| variant["properties"]["type"]["enum"][0].as_str().expect("a kind"))
            .collect();
        let documented: Vec<&str> = parley_shared::asyncapi::EVENT_KINDS.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, documented);
        assert_eq!(
            schemas["EventPayload"]["oneOf"][4]["properties"]["data"]["$ref"],
            "#/components/schemas/MessageCreated"
        );
    }
}
