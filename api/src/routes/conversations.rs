//! `/v1/conversations`: create (direct or group), list by last activity, read, rename.

use chrono::{DateTime, Utc};
use parley_shared::events::{self, ConversationCreated, ConversationUpdated, Event};
use parley_shared::ids::{ConversationId, UserId};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Union};
use sqlx::PgConnection;
use uuid::Uuid;

use super::messages::{self, Message};
use super::{ApiTags, examples};
use crate::auth::BearerAuth;
use crate::error::{ApiError, ProblemCode};
use crate::presence::Presence;
use crate::state::AppState;
use crate::text::{Text, clean_name};
use crate::{membership, notifications, outbox};
use parley_shared::notifications::NotificationKind;

/// Members listed in a conversation; `member_count` has the total.
const LISTED_MEMBERS: i64 = 100;

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ConversationKind {
    Direct,
    Group,
}

#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Member => "member",
        }
    }

    fn parse(role: &str) -> Self {
        if role == "owner" { Self::Owner } else { Self::Member }
    }
}

/// An application's reference that scopes a direct conversation: one conversation per pair of
/// users and context (e.g. per marketplace listing).
#[derive(Object, Clone, Debug, PartialEq, Eq)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ConversationContext {
    /// What the reference points at, e.g. `listing`.
    #[oai(validator(min_length = 1, max_length = 50))]
    pub kind: Text,
    /// The application's id of it, e.g. `123`.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub id: Text,
    /// A label to show, e.g. `Blue bike`.
    #[oai(validator(max_length = 200))]
    pub title: Option<Text>,
}

/// A conversation between exactly two users.
#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct NewDirectConversation {
    /// The other user (created if Parley has not seen them yet).
    pub user_id: Uuid,
    pub context: Option<ConversationContext>,
}

/// A named group; the creator becomes its owner.
#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct NewGroupConversation {
    #[oai(validator(min_length = 1, max_length = 200))]
    pub title: Text,
    /// Other initial members (created if Parley has not seen them yet).
    #[oai(default)]
    pub member_ids: Vec<Uuid>,
}

#[derive(Union, Debug)]
#[oai(discriminator_name = "kind", one_of)]
pub enum NewConversation {
    #[oai(mapping = "direct")]
    Direct(NewDirectConversation),
    #[oai(mapping = "group")]
    Group(NewGroupConversation),
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ConversationPatch {
    /// New title (groups only).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub title: Text,
}

#[derive(Object, Clone, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Member {
    pub user_id: Uuid,
    pub display_name: Option<String>,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
    /// Latest seq this member has confirmed receiving.
    pub delivered_seq: i64,
    /// Latest seq this member has read.
    pub read_seq: i64,
    pub presence: Presence,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Conversation {
    pub id: Uuid,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub context: Option<ConversationContext>,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Seq of the latest event: a client that has seen every event up to here is up to date.
    pub last_seq: i64,
    pub last_activity_at: DateTime<Utc>,
    pub member_count: i64,
    /// Members in join order, at most 100.
    pub members: Vec<Member>,
    pub last_message: Option<Message>,
    /// Messages by others after the caller's read cursor.
    pub unread_count: i64,
    /// The caller's read cursor.
    pub read_seq: i64,
    /// The caller's delivery cursor.
    pub delivered_seq: i64,
    /// The first seq the caller may read (events before it predate their joining).
    pub visible_from_seq: i64,
}

#[derive(Object, Debug)]
#[oai(skip_serializing_if_is_none, example)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse, Debug)]
pub enum CreateResponse {
    /// The conversation was created.
    #[oai(status = 201)]
    Created(Json<Conversation>),
    /// This direct conversation already existed; here it is.
    #[oai(status = 200)]
    Existing(Json<Conversation>),
}

#[derive(Default)]
pub struct ConversationsApi;

#[OpenApi(prefix_path = "/v1", tag = "ApiTags::Conversations")]
impl ConversationsApi {
    /// Create a conversation
    ///
    /// A `direct` conversation joins the caller and `user_id`; the same pair (and `context`)
    /// always gets the same conversation: 201 the first time, 200 after, even when both users
    /// create it at the same moment. A `group` has a title; the caller becomes its owner.
    #[oai(path = "/conversations", method = "post", operation_id = "createConversation")]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<NewConversation>,
    ) -> Result<CreateResponse, ApiError> {
        let caller = auth.0.id;
        let (id, created) = match body.0 {
            NewConversation::Direct(direct) => create_direct(&state, caller, direct).await?,
            NewConversation::Group(group) => (create_group(&state, caller, group).await?, true),
        };
        let conversation = load_one(&state, caller, id).await?;
        Ok(if created {
            CreateResponse::Created(Json(conversation))
        } else {
            CreateResponse::Existing(Json(conversation))
        })
    }

    /// List the caller's conversations
    ///
    /// Most recent activity first, cursor-paginated.
    #[oai(path = "/conversations", method = "get", operation_id = "listConversations")]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
        /// Page size, 1 to 100.
        #[oai(default = "default_page", validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<i64>,
    ) -> Result<Json<ConversationPage>, ApiError> {
        let caller = auth.0.id;
        let after = cursor.0.as_deref().map(parse_cursor).transpose()?;
        let ids: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "select c.id, c.last_activity_at
               from conversations c join conversation_members m on m.conversation_id = c.id and m.user_id = $1
              where $2::timestamptz is null or (c.last_activity_at, c.id) < ($2, $3)
              order by c.last_activity_at desc, c.id desc
              limit $4",
        )
        .bind(caller.as_uuid())
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit.0 + 1)
        .fetch_all(&state.db)
        .await?;
        let more = ids.len() > usize::try_from(limit.0).unwrap_or(usize::MAX);
        let page: Vec<Uuid> = ids.iter().take(ids.len() - usize::from(more)).map(|(id, _)| *id).collect();
        let next_cursor = more
            .then(|| ids.get(page.len().wrapping_sub(1)))
            .flatten()
            .map(|(id, at)| format!("{}_{id}", at.timestamp_micros()));
        let items = load(&state, caller, &page).await?;
        Ok(Json(ConversationPage { items, next_cursor }))
    }

    /// Get a conversation
    #[oai(path = "/conversations/:id", method = "get", operation_id = "getConversation")]
    async fn get(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<Conversation>, ApiError> {
        Ok(Json(load_one(&state, auth.0.id, id.0).await?))
    }

    /// Rename a group
    ///
    /// Owners only; direct conversations have no title.
    #[oai(path = "/conversations/:id", method = "patch", operation_id = "updateConversation")]
    async fn update(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: Json<ConversationPatch>,
    ) -> Result<Json<Conversation>, ApiError> {
        let (caller, conversation) = (auth.0.id, ConversationId::from_uuid(id.0));
        let title = clean_name(&body.0.title)
            .ok_or_else(|| ApiError::bad_request("title", "title must have a visible character"))?;
        let mut tx = state.db.begin().await?;
        let seq = outbox::next_seq(&mut tx, conversation, true).await?;
        let member = membership::require(&mut *tx, conversation, caller).await?;
        if !member.is_group() {
            return Err(ApiError::conflict(ProblemCode::DirectConversation, "direct conversations have no title"));
        }
        if !member.is_owner() {
            return Err(ApiError::forbidden(ProblemCode::NotOwner, "only owners may rename a group"));
        }
        sqlx::query("update conversations set title = $2, updated_at = now() where id = $1")
            .bind(id.0)
            .bind(&title)
            .execute(&mut *tx)
            .await?;
        let event = Event::ConversationUpdated(ConversationUpdated { title: Some(title) });
        let recorded = outbox::append(&mut tx, conversation, seq, caller, &event).await?;
        crate::db::commit(tx).await?;
        state.outbox.committed(recorded);
        Ok(Json(load_one(&state, caller, id.0).await?))
    }
}

fn default_page() -> i64 {
    50
}

fn parse_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::bad_request("cursor", "not a cursor returned by this endpoint");
    let (micros, id) = cursor.split_once('_').ok_or_else(invalid)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| invalid())?).ok_or_else(invalid)?;
    Ok((at, id.parse().map_err(|_| invalid())?))
}

/// Makes sure a row exists for each user, so members can be added before they ever sign in.
pub async fn ensure_users(tx: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query("insert into users (id) select unnest($1::uuid[]) on conflict (id) do nothing")
        .bind(ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// Refuses (429) a conversation of `kind` just inserted by `caller` when it makes more than
/// `per_hour` in the last hour; the transaction is then dropped, so nothing is stored. Counted
/// in PostgreSQL, so the quota holds across API instances (two creations at the same moment may
/// both pass at the boundary).
async fn within_quota(tx: &mut sqlx::PgConnection, caller: UserId, kind: &str, per_hour: i64) -> Result<(), ApiError> {
    let (count, free_in): (i64, Option<f64>) = sqlx::query_as(
        "select count(*), extract(epoch from min(created_at) + interval '1 hour' - now())::float8
           from conversations
          where created_by = $1 and kind = $2 and created_at > now() - interval '1 hour'",
    )
    .bind(caller.as_uuid())
    .bind(kind)
    .fetch_one(&mut *tx)
    .await?;
    if count <= per_hour {
        return Ok(());
    }
    let retry_after = free_in.unwrap_or(1.0).ceil().max(1.0) as u64;
    Err(ApiError::too_many_requests(retry_after))
}

/// Returns the conversation's id and whether this call created it.
async fn create_direct(
    state: &AppState,
    caller: UserId,
    direct: NewDirectConversation,
) -> Result<(Uuid, bool), ApiError> {
    let other = direct.user_id;
    if other == *caller.as_uuid() {
        return Err(ApiError::bad_request("user_id", "a direct conversation needs another user"));
    }
    let (low, high) = if *caller.as_uuid() < other { (*caller.as_uuid(), other) } else { (other, *caller.as_uuid()) };
    let context = direct.context;
    // JSON keeps the parts unambiguous whatever characters the context holds.
    let key = serde_json::json!([low, high, context.as_ref().map(|c| (&c.kind, &c.id))]).to_string();

    let mut tx = state.db.begin().await?;
    ensure_users(&mut tx, &[other]).await?;
    let id = Uuid::now_v7();
    // A concurrent creator of the same pair waits here for the first one's commit, then finds
    // the key taken and reads the conversation that won.
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "insert into conversations (id, kind, direct_key, context_kind, context_id, context_title, created_by, last_seq)
         values ($1, 'direct', $2, $3, $4, $5, $6, 1)
         on conflict (direct_key) do nothing
         returning id",
    )
    .bind(id)
    .bind(&key)
    .bind(context.as_ref().map(|c| &c.kind))
    .bind(context.as_ref().map(|c| &c.id))
    .bind(context.as_ref().and_then(|c| c.title.as_ref()))
    .bind(caller.as_uuid())
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        tx.rollback().await?;
        let existing: Uuid = sqlx::query_scalar("select id from conversations where direct_key = $1")
            .bind(&key)
            .fetch_one(&state.db)
            .await?;
        return Ok((existing, false));
    }
    within_quota(&mut tx, caller, "direct", state.limits.new_direct_partners_per_hour).await?;
    add_initial_members(&mut tx, id, &[(*caller.as_uuid(), Role::Member), (other, Role::Member)]).await?;
    let notice = notifications::about_conversation(NotificationKind::Direct, *caller.as_uuid(), id, None, [other]);
    notifications::record(&mut tx, Some(*caller.as_uuid()), &notice).await?;
    let context =
        context.map(|c| events::Context { kind: c.kind.into(), id: c.id.into(), title: c.title.map(Into::into) });
    let members = vec![caller, UserId::from_uuid(other)];
    let event = Event::ConversationCreated(ConversationCreated::new("direct", None, context, members));
    let recorded = outbox::append(&mut tx, ConversationId::from_uuid(id), 1, caller, &event).await?;
    crate::db::commit(tx).await?;
    state.outbox.committed(recorded);
    Ok((id, true))
}

async fn create_group(state: &AppState, caller: UserId, group: NewGroupConversation) -> Result<Uuid, ApiError> {
    let title = clean_name(&group.title)
        .ok_or_else(|| ApiError::bad_request("title", "title must have a visible character"))?;
    let mut others: Vec<Uuid> = group.member_ids.into_iter().filter(|id| id != caller.as_uuid()).collect();
    others.sort_unstable();
    others.dedup();
    if i64::try_from(others.len()).unwrap_or(i64::MAX) >= state.limits.group_max_members {
        return Err(ApiError::bad_request(
            "member_ids",
            format!("a group has at most {} members", state.limits.group_max_members),
        ));
    }
    let mut members = vec![(*caller.as_uuid(), Role::Owner)];
    members.extend(others.iter().map(|id| (*id, Role::Member)));
    let member_ids = members.iter().map(|(id, _)| UserId::from_uuid(*id)).collect();
    let event = Event::ConversationCreated(ConversationCreated::new("group", Some(title.clone()), None, member_ids));
    outbox::ensure_publishable(&state.nats, &event, "member_ids")?;
    let mut tx = state.db.begin().await?;
    ensure_users(&mut tx, &others).await?;
    let id = Uuid::now_v7();
    sqlx::query("insert into conversations (id, kind, title, created_by, last_seq) values ($1, 'group', $2, $3, 1)")
        .bind(id)
        .bind(&title)
        .bind(caller.as_uuid())
        .execute(&mut *tx)
        .await?;
    within_quota(&mut tx, caller, "group", state.limits.new_conversations_per_hour).await?;
    add_initial_members(&mut tx, id, &members).await?;
    if others.len() <= notifications::ADDED_NOTIFY_MAX_MEMBERS {
        let added =
            notifications::about_conversation(NotificationKind::Added, *caller.as_uuid(), id, Some(&title), others);
        notifications::record(&mut tx, Some(*caller.as_uuid()), &added).await?;
    }
    let recorded = outbox::append(&mut tx, ConversationId::from_uuid(id), 1, caller, &event).await?;
    crate::db::commit(tx).await?;
    state.outbox.committed(recorded);
    Ok(id)
}

async fn add_initial_members(
    tx: &mut PgConnection,
    conversation: Uuid,
    members: &[(Uuid, Role)],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = members.iter().map(|(id, _)| *id).collect();
    let roles: Vec<&str> = members.iter().map(|(_, role)| role.as_str()).collect();
    sqlx::query(
        "insert into conversation_members (conversation_id, user_id, role, visible_from_seq)
         select $1, member.id, member.role, 1 from unnest($2::uuid[], $3::text[]) as member (id, role)",
    )
    .bind(conversation)
    .bind(&ids)
    .bind(&roles)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct ConversationRow {
    id: Uuid,
    kind: String,
    title: Option<String>,
    context_kind: Option<String>,
    context_id: Option<String>,
    context_title: Option<String>,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_seq: i64,
    last_activity_at: DateTime<Utc>,
    read_seq: i64,
    delivered_seq: i64,
    visible_from_seq: i64,
    unread_count: i64,
    member_count: i64,
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    conversation_id: Uuid,
    user_id: Uuid,
    display_name: Option<String>,
    role: String,
    joined_at: DateTime<Utc>,
    delivered_seq: i64,
    read_seq: i64,
}

pub async fn load_one(state: &AppState, caller: UserId, id: Uuid) -> Result<Conversation, ApiError> {
    load(state, caller, &[id]).await?.pop().ok_or_else(|| ApiError::not_found("conversation"))
}

/// The conversations `ids` as the caller sees them, in the order given; those the caller is
/// not a member of are left out.
pub async fn load(state: &AppState, caller: UserId, ids: &[Uuid]) -> Result<Vec<Conversation>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let db = &state.db;
    let rows: Vec<ConversationRow> = sqlx::query_as(
        "select c.id, c.kind, c.title, c.context_kind, c.context_id, c.context_title, c.created_by,
                c.created_at, c.updated_at, c.last_seq, c.last_activity_at,
                me.read_seq, me.delivered_seq, me.visible_from_seq,
                (select count(*) from messages msg
                  where msg.conversation_id = c.id and msg.seq > greatest(me.read_seq, me.visible_from_seq - 1)
                    and msg.author_id <> me.user_id and msg.deleted_at is null) as unread_count,
                (select count(*) from conversation_members all_m where all_m.conversation_id = c.id) as member_count
           from conversations c join conversation_members me on me.conversation_id = c.id and me.user_id = $1
          where c.id = any($2)",
    )
    .bind(caller.as_uuid())
    .bind(ids)
    .fetch_all(db)
    .await?;
    let members: Vec<MemberRow> = sqlx::query_as(
        "select ranked.conversation_id, ranked.user_id, u.display_name, ranked.role, ranked.joined_at,
                ranked.delivered_seq, ranked.read_seq
           from (select m.*, row_number() over (partition by m.conversation_id order by m.joined_at, m.user_id) as n
                   from conversation_members m where m.conversation_id = any($1)) ranked
           join users u on u.id = ranked.user_id
          where ranked.n <= $2
          order by ranked.conversation_id, ranked.n",
    )
    .bind(ids)
    .bind(LISTED_MEMBERS)
    .fetch_all(db)
    .await?;
    let mut last_messages = messages::latest(db, caller, ids).await?;

    let mut out: Vec<Conversation> = Vec::with_capacity(rows.len());
    for id in ids {
        let Some(row) = rows.iter().find(|row| row.id == *id) else { continue };
        out.push(Conversation {
            id: row.id,
            kind: if row.kind == "direct" { ConversationKind::Direct } else { ConversationKind::Group },
            title: row.title.clone(),
            context: match (&row.context_kind, &row.context_id) {
                (Some(kind), Some(context_id)) => Some(ConversationContext {
                    kind: Text(kind.clone()),
                    id: Text(context_id.clone()),
                    title: row.context_title.clone().map(Text),
                }),
                _ => None,
            },
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_seq: row.last_seq,
            last_activity_at: row.last_activity_at,
            member_count: row.member_count,
            members: members
                .iter()
                .filter(|member| member.conversation_id == row.id)
                .map(|member| Member {
                    user_id: member.user_id,
                    display_name: member.display_name.clone(),
                    role: Role::parse(&member.role),
                    joined_at: member.joined_at,
                    delivered_seq: member.delivered_seq,
                    read_seq: member.read_seq,
                    presence: state.presence.of(UserId::from_uuid(member.user_id)),
                })
                .collect(),
            last_message: last_messages.remove(&row.id),
            unread_count: row.unread_count,
            read_seq: row.read_seq,
            delivered_seq: row.delivered_seq,
            visible_from_seq: row.visible_from_seq,
        });
    }
    Ok(out)
}

impl poem_openapi::types::Example for ConversationContext {
    fn example() -> Self {
        Self { kind: "listing".into(), id: "123".into(), title: Some("Blue bike".into()) }
    }
}

impl poem_openapi::types::Example for NewDirectConversation {
    fn example() -> Self {
        Self { user_id: examples::BOB, context: Some(ConversationContext::example()) }
    }
}

impl poem_openapi::types::Example for NewGroupConversation {
    fn example() -> Self {
        Self { title: "Weekend trip".into(), member_ids: vec![examples::BOB] }
    }
}

impl poem_openapi::types::Example for ConversationPatch {
    fn example() -> Self {
        Self { title: "Weekend trip (Sat)".into() }
    }
}

impl poem_openapi::types::Example for Member {
    fn example() -> Self {
        Self {
            user_id: examples::BOB,
            display_name: Some("Bob".into()),
            role: Role::Member,
            joined_at: examples::time(),
            delivered_seq: 2,
            read_seq: 2,
            presence: Presence::example(),
        }
    }
}

impl poem_openapi::types::Example for Conversation {
    fn example() -> Self {
        Self {
            id: examples::CONVERSATION,
            kind: ConversationKind::Group,
            title: Some("Weekend trip".into()),
            context: None,
            created_by: examples::ALICE,
            created_at: examples::time(),
            updated_at: examples::time(),
            last_seq: 2,
            last_activity_at: examples::time(),
            member_count: 2,
            members: vec![Member::example()],
            last_message: Some(Message::example()),
            unread_count: 0,
            read_seq: 2,
            delivered_seq: 2,
            visible_from_seq: 1,
        }
    }
}

impl poem_openapi::types::Example for ConversationPage {
    fn example() -> Self {
        Self {
            items: vec![Conversation::example()],
            next_cursor: Some(format!("1790000000000000_{}", examples::CONVERSATION)),
        }
    }
}
