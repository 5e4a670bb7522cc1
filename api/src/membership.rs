//! "Is the caller a member, and as what?" — asked by every conversation route. A non-member
//! gets 404, exactly as for a conversation that does not exist, so ids cannot be probed.

use parley_shared::ids::{ConversationId, UserId};
use sqlx::PgExecutor;

use crate::error::ApiError;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Membership {
    pub kind: String,
    pub role: String,
    /// The first seq the member may read: events before it happened before they joined.
    pub visible_from_seq: i64,
}

impl Membership {
    pub fn is_owner(&self) -> bool {
        self.role == "owner"
    }

    pub fn is_group(&self) -> bool {
        self.kind == "group"
    }
}

/// The caller's membership, or 404. Writers call it after `outbox::next_seq` has locked the
/// conversation, so it sees every membership change committed before them.
pub async fn require<'e>(
    db: impl PgExecutor<'e>,
    conversation: ConversationId,
    user: UserId,
) -> Result<Membership, ApiError> {
    sqlx::query_as(
        "select c.kind, m.role, m.visible_from_seq
           from conversation_members m join conversations c on c.id = m.conversation_id
          where m.conversation_id = $1 and m.user_id = $2",
    )
    .bind(conversation.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::not_found("conversation"))
}
