//! HTTP routes: `/health` and `/ready` outside the contract, and the `/v1` OpenAPI service, one
//! module per resource.

pub mod conversations;
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

/// The `/v1` API with its OpenAPI document.
pub fn api_service() -> OpenApiService<Api, ()> {
    OpenApiService::new(Api::default(), "Parley API", env!("CARGO_PKG_VERSION")).description(
        "Real-time messaging backend. Every route needs `Authorization: Bearer <JWT>`; errors are \
         RFC 7807 `application/problem+json` with a stable `code`. Live events arrive over the \
         broker's WebSocket; this API's `/events` endpoint replays them by `seq`.",
    )
}
