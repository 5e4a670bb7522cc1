//! "Is the caller a member, and as what?" — asked by every conversation route. A non-member
//! gets 404, exactly as for a conversation that does not exist, so ids cannot be probed. Also
//! the membership questions about users rather than conversations.

use parley_shared::ids::{ConversationId, UserId};
use parley_shared::presence::MAX_AUDIENCE;
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

/// The caller may see `user` (their profile, their presence): it is them, or they share a
/// conversation. Anyone else is 404, as a user who does not exist.
pub async fn require_visible<'e>(db: impl PgExecutor<'e>, caller: UserId, user: UserId) -> Result<(), ApiError> {
    if user != caller && !share_a_conversation(db, caller, user).await? {
        return Err(ApiError::not_found("user"));
    }
    Ok(())
}

/// Whether the two users are members of at least one common conversation.
async fn share_a_conversation<'e>(db: impl PgExecutor<'e>, one: UserId, other: UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists (select 1 from conversation_members mine
                          join conversation_members theirs on theirs.conversation_id = mine.conversation_id
                         where mine.user_id = $1 and theirs.user_id = $2)",
    )
    .bind(one.as_uuid())
    .bind(other.as_uuid())
    .fetch_one(db)
    .await
}

/// The conversations whose members hear `user`'s presence without asking: those with at most
/// `max_members` members, the [`MAX_AUDIENCE`] most recently active.
pub async fn audience_of<'e>(
    db: impl PgExecutor<'e>,
    user: UserId,
    max_members: u32,
) -> sqlx::Result<Vec<ConversationId>> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "select m.conversation_id from conversation_members m join conversations c on c.id = m.conversation_id
          where m.user_id = $1 and c.member_count <= $2
          order by c.last_seq desc limit $3",
    )
    .bind(user.as_uuid())
    .bind(i64::from(max_members))
    .bind(MAX_AUDIENCE as i64)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(ConversationId::from_uuid).collect())
}

/// Which of `candidates` share a conversation with `user` (the user themself included).
pub async fn visible_among<'e>(
    db: impl PgExecutor<'e>,
    user: UserId,
    candidates: &[UserId],
) -> sqlx::Result<Vec<UserId>> {
    let candidates: Vec<uuid::Uuid> = candidates.iter().map(|candidate| *candidate.as_uuid()).collect();
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "select candidate from unnest($2::uuid[]) as candidate
          where candidate = $1
             or exists (select 1 from conversation_members mine
                          join conversation_members theirs on theirs.conversation_id = mine.conversation_id
                         where mine.user_id = $1 and theirs.user_id = candidate)",
    )
    .bind(user.as_uuid())
    .bind(&candidates)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().map(UserId::from_uuid).collect())
}
