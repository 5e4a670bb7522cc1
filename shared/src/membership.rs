//! The request a broker makes when a user connects, over core NATS to
//! `<prefix>.internal.membership`, answered by one API instance: which conversations the user is
//! a member of, and where each one stands. The broker keeps the answer current from the user's
//! `member.added` / `member.removed` / `conversation.created` events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, UserId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MembershipRequest {
    pub user_id: UserId,
}

/// The reply: either `conversations` or `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MembershipReply {
    Conversations(Vec<ConversationPosition>),
    Error(String),
}

/// One conversation the user belongs to, with its latest `seq` when the API read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationPosition {
    pub conversation_id: ConversationId,
    pub last_seq: i64,
}
