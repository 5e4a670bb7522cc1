//! `/v1/conversations/{id}/members`: owners add members to groups; anyone may leave, owners
//! may remove others.

use parley_shared::events::{Event, MemberChange};
use parley_shared::ids::{ConversationId, UserId};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::conversations::{Member, Role, ensure_users};
use crate::auth::BearerAuth;
use crate::error::{ApiError, ProblemCode};
use crate::state::AppState;
use crate::{membership, notifications, outbox};
use parley_shared::notifications::NotificationKind;

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct NewMember {
    /// The user to add (created if Parley has not seen them yet).
    pub user_id: Uuid,
    /// `member` unless given.
    pub role: Option<Role>,
}

#[derive(ApiResponse, Debug)]
pub enum AddResponse {
    /// The user is now a member; they see the conversation's events from this point on.
    #[oai(status = 201)]
    Added(Json<Member>),
}

#[derive(ApiResponse, Debug)]
pub enum RemoveResponse {
    /// The user is no longer a member; nothing more of this conversation reaches them.
    #[oai(status = 204)]
    Removed,
}

#[derive(Default)]
pub struct MembersApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Members")]
impl MembersApi {
    /// Add a member to a group
    ///
    /// Owners only. 409 `already_member`, `member_limit` or `direct_conversation`.
    #[oai(path = "/conversations/:id/members", method = "post", operation_id = "addMember")]
    async fn add(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<NewMember>,
    ) -> Result<AddResponse, ApiError> {
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id.0));
        let role = body.0.role.unwrap_or(Role::Member);
        let mut tx = state.db.begin().await?;
        let seq = outbox::next_seq(&mut tx, conversation, true).await?;
        let member = membership::require(&mut *tx, conversation, caller).await?;
        if !member.is_group() {
            return Err(ApiError::conflict(
                ProblemCode::DirectConversation,
                "a direct conversation has exactly two members",
            ));
        }
        if !member.is_owner() {
            return Err(ApiError::forbidden(ProblemCode::NotOwner, "only owners may add members"));
        }
        let count: i64 = sqlx::query_scalar("select count(*) from conversation_members where conversation_id = $1")
            .bind(id.0)
            .fetch_one(&mut *tx)
            .await?;
        if count >= state.limits.group_max_members {
            return Err(ApiError::conflict(
                ProblemCode::MemberLimit,
                format!("a group has at most {} members", state.limits.group_max_members),
            ));
        }
        ensure_users(&mut tx, &[body.0.user_id]).await?;
        let added: Option<(chrono::DateTime<chrono::Utc>, Option<String>)> = sqlx::query_as(
            "with added as (
                insert into conversation_members (conversation_id, user_id, role, visible_from_seq)
                values ($1, $2, $3, $4) on conflict do nothing returning joined_at, user_id)
             select added.joined_at, users.display_name from added join users on users.id = added.user_id",
        )
        .bind(id.0)
        .bind(body.0.user_id)
        .bind(role.as_str())
        .bind(seq)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((joined_at, display_name)) = added else {
            return Err(ApiError::conflict(ProblemCode::AlreadyMember, "the user is already a member"));
        };
        let added =
            notifications::about_conversation(NotificationKind::Added, *caller.as_uuid(), id.0, None, [body.0.user_id]);
        notifications::record(&mut tx, Some(*caller.as_uuid()), &added).await?;
        let event = Event::MemberAdded(MemberChange {
            user_id: UserId::from_uuid(body.0.user_id),
            role: Some(role.as_str().into()),
        });
        let recorded = outbox::append(&mut tx, conversation, seq, caller, &event).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
        Ok(AddResponse::Added(Json(Member {
            user_id: body.0.user_id,
            display_name,
            role,
            joined_at,
            delivered_seq: 0,
            read_seq: 0,
            presence: state.presence.of(UserId::from_uuid(body.0.user_id)),
        })))
    }

    /// Remove a member, or leave
    ///
    /// Anyone may remove themselves; owners may remove others. The last owner cannot leave
    /// while other members remain (409 `last_owner`); members of a direct conversation cannot
    /// change (409 `direct_conversation`).
    #[oai(path = "/conversations/:id/members/:user_id", method = "delete", operation_id = "removeMember")]
    async fn remove(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> Result<RemoveResponse, ApiError> {
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id.0));
        let leaving = user_id.0 == *caller.as_uuid();
        let mut tx = state.db.begin().await?;
        let seq = outbox::next_seq(&mut tx, conversation, true).await?;
        let member = membership::require(&mut *tx, conversation, caller).await?;
        if !member.is_group() {
            return Err(ApiError::conflict(
                ProblemCode::DirectConversation,
                "a direct conversation has exactly two members",
            ));
        }
        if !leaving && !member.is_owner() {
            return Err(ApiError::forbidden(ProblemCode::NotOwner, "only owners may remove other members"));
        }
        let (owners, others): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where role = 'owner' and user_id <> $2), count(*) filter (where user_id <> $2)
               from conversation_members where conversation_id = $1",
        )
        .bind(id.0)
        .bind(user_id.0)
        .fetch_one(&mut *tx)
        .await?;
        let removed: Option<String> = sqlx::query_scalar(
            "delete from conversation_members where conversation_id = $1 and user_id = $2 returning role",
        )
        .bind(id.0)
        .bind(user_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        match removed.as_deref() {
            None => return Err(ApiError::not_found("member")),
            Some("owner") if owners == 0 && others > 0 => {
                return Err(ApiError::conflict(
                    ProblemCode::LastOwner,
                    "the last owner cannot leave while others remain",
                ));
            }
            Some(_) => {}
        }
        let event = Event::MemberRemoved(MemberChange { user_id: UserId::from_uuid(user_id.0), role: None });
        let recorded = outbox::append(&mut tx, conversation, seq, caller, &event).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
        Ok(RemoveResponse::Removed)
    }
}

impl poem_openapi::types::Example for NewMember {
    fn example() -> Self {
        Self { user_id: super::examples::BOB, role: Some(Role::Member) }
    }
}
