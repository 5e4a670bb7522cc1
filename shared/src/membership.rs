//! The request a broker makes when a user connects, over core NATS to
//! `<prefix>.internal.membership`, answered by one API instance: which conversations the user is
//! a member of, where each one stands and how many members it has. The answer comes in pages
//! (NATS carries at most `max_payload`, 1 MiB by default, per message): the broker asks again
//! with `after` until `next` is absent. It keeps the answer current from the user's
//! `member.added` / `member.removed` / `conversation.created` events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, UserId};

/// Conversations per page: about 110 bytes each in JSON, so a page is about 110 KB, well under
/// NATS' 1 MiB, and the client's read buffer (which keeps the largest message's size) stays small.
pub const PAGE_SIZE: i64 = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipRequest {
    pub user_id: UserId,
    /// The `next` of the previous page; absent for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ConversationId>,
}

/// The reply: either `conversations` (one page) or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipReply {
    Conversations(MembershipPage),
    Error(String),
}

/// One page of a user's conversations, ordered by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipPage {
    pub items: Vec<Membership>,
    /// Ask again with `after` = this for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ConversationId>,
}

/// One conversation the user belongs to, as the API read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Membership {
    pub conversation_id: ConversationId,
    pub last_seq: i64,
    pub member_count: i64,
}

/// One conversation of the user and its latest `seq`, as `hello` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationPosition {
    pub conversation_id: ConversationId,
    pub last_seq: i64,
}

/// `<prefix>.internal.visibility`: which of `candidates` share a conversation with `user_id`
/// (who may follow whose presence). At most [`MAX_CANDIDATES`] at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VisibilityRequest {
    pub user_id: UserId,
    pub candidates: Vec<UserId>,
}

pub const MAX_CANDIDATES: usize = 1_000;

/// The reply: the visible candidates, or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisibilityReply {
    Visible(Vec<UserId>),
    Error(String),
}
