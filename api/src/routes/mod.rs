//! HTTP routes: `/health` and `/ready` outside the contract, and the `/v1` OpenAPI service, one
//! module per resource.

pub mod conversations;
mod event_schema;
pub mod events;
mod examples;
pub mod health;
pub mod me;
pub mod members;
pub mod messages;
pub mod presence;
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
);

/// The OpenAPI document as served and committed: poem-openapi's, plus what its derive macros
/// cannot say:
/// - a union has no example of its own, so Swagger UI prefilled the first variant's, which
///   lacks the `kind` discriminator and was refused;
/// - every error response shared the `Problem` schema's one example (a 404); each status now
///   shows a problem of its own;
/// - `servers` names this API wherever the document was served from.
pub fn spec_json() -> String {
    let mut spec: serde_json::Value = serde_json::from_str(&api_service().spec()).expect("poem-openapi writes JSON");
    spec["components"]["schemas"]["NewConversation"]["example"] =
        serde_json::json!({ "kind": "group", "title": "Weekend trip", "member_ids": [examples::BOB] });
    spec["servers"] = serde_json::json!([{ "url": "/", "description": "This API (where this document was served)" }]);
    event_schema::type_stored_event(&mut spec);
    if let Some(paths) = spec["paths"].as_object_mut() {
        let operations =
            paths.values_mut().filter_map(serde_json::Value::as_object_mut).flat_map(|ops| ops.values_mut());
        for operation in operations {
            let Some(responses) = operation["responses"].as_object_mut() else { continue };
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
