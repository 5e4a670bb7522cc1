//! Writing notifications: each in the transaction of the write that causes it, with, for users
//! with a push target, its entry in the push dispatcher's queue (see `push`). The relay
//! publishes each to the user's connections (see `relay::notifications`): a message's with the
//! message's event, which lists their ids (so a mention costs no outbox row of its own); the
//! others through their `created` change in `notification_changes`. The writer wakes the relay
//! after commit as it does for its event (or with [`crate::outbox::Recorded::notifications`]
//! when it has none).

use parley_shared::notifications::{NotificationKind, Priority};
use sqlx::PgConnection;
use uuid::Uuid;

/// A `notifications` row aliased `n` as the JSON of [`parley_shared::notifications::Notification`]:
/// how lists, frames and pushes all read one.
pub const NOTIFICATION_JSON: &str = "jsonb_build_object('id', n.id, 'kind', n.kind, 'priority', n.priority,
    'title', n.title, 'body', n.body, 'data', n.data, 'created_at', n.created_at, 'read_at', n.read_at)";

/// Queues the notifications of the `created` CTE (`id, user_id`) for push, for users with a
/// push target only: what follows that CTE in every statement that creates notifications.
const QUEUE_PUSH: &str = "insert into push_queue (notification_id, due_at)
             select id, now() from created
              where exists (select 1 from push_targets target where target.user_id = created.user_id)";

/// Longest body a notification Parley creates carries: the start of the message.
const PREVIEW_CHARS: usize = 200;
/// A group created with more initial members than this notifies none of them: being one of
/// hundreds is a broadcast, not a personal event. Members added later are always notified.
pub const ADDED_NOTIFY_MAX_MEMBERS: usize = 100;

/// A stored message, for the mentions and the reply it carries.
#[derive(Debug)]
pub struct MessageNotice {
    pub message_id: Uuid,
    pub author: Uuid,
    pub seq: i64,
    pub text: Option<String>,
    pub mentions: Vec<Uuid>,
    pub reply_to: Option<Uuid>,
    /// The ids its notifications take, from [`candidate_ids`]; its event lists them.
    pub ids: Vec<Uuid>,
}

/// Ids for the notifications a message naming `mentions` and answering `reply_to` may cause:
/// one per mention, then one for the reply. Its event lists them all; the relay publishes
/// those that were created (a mention wins over a reply to the same user, a user who left
/// is not notified).
pub fn candidate_ids(mentions: &[Uuid], reply_to: Option<Uuid>) -> Vec<Uuid> {
    (0..mentions.len() + usize::from(reply_to.is_some())).map(|_| Uuid::now_v7()).collect()
}

impl MessageNotice {
    /// Whether it can notify anyone (else it costs no statement).
    pub fn notifies(&self) -> bool {
        !self.mentions.is_empty() || self.reply_to.is_some()
    }
}

/// Records the notifications `messages` (stored in `conversation` in this transaction) cause:
/// `mention` for each member a message names, `reply` for the author of the message it
/// answers (unless also named). Never for the author themself, and only for users who are
/// members (who can see the message) as the transaction commits.
pub async fn for_messages(
    tx: &mut PgConnection,
    conversation: Uuid,
    messages: &[MessageNotice],
) -> Result<(), sqlx::Error> {
    let mut rows = Rows::default();
    for message in messages {
        let preview = message.text.as_deref().map(preview);
        debug_assert_eq!(message.ids.len(), message.mentions.len() + usize::from(message.reply_to.is_some()));
        let mut ids = message.ids.iter().copied();
        for (user, id) in message.mentions.iter().zip(&mut ids) {
            rows.push(id, message, preview.clone(), Some(*user), None, NotificationKind::Mention);
        }
        if let (Some(reply_to), Some(id)) = (message.reply_to, ids.next()) {
            rows.push(id, message, preview.clone(), None, Some(reply_to), NotificationKind::Reply);
        }
    }
    if rows.ids.is_empty() {
        return Ok(());
    }
    let statement = format!(
        "with wanted as (
             select * from unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::uuid[], $8::uuid[], $9::text[])
                 as wanted (id, message_id, author_id, seq, preview, recipient, reply_to, kind)
         ), resolved as (
             -- One notification per message and user: a mention wins over a reply.
             select distinct on (wanted.message_id, coalesce(wanted.recipient, replied.author_id))
                    wanted.*, coalesce(wanted.recipient, replied.author_id) as user_id
               from wanted left join messages replied on replied.id = wanted.reply_to
              order by wanted.message_id, coalesce(wanted.recipient, replied.author_id), wanted.kind
         ), created as (
             insert into notifications (id, user_id, kind, priority, title, body, data)
             select resolved.id, resolved.user_id, resolved.kind, 'normal',
                    coalesce(left(author.display_name, 150), 'Someone')
                        || case resolved.kind when 'mention' then ' mentioned you' else ' replied to you' end,
                    resolved.preview,
                    jsonb_build_object('conversation_id', $1::uuid, 'message_id', resolved.message_id,
                                       'seq', resolved.seq, 'actor_id', resolved.author_id)
               from resolved join users author on author.id = resolved.author_id
              where resolved.user_id <> resolved.author_id
                and exists (select 1 from conversation_members member
                             where member.conversation_id = $1 and member.user_id = resolved.user_id
                               and member.visible_from_seq <= resolved.seq)
              order by resolved.id
          returning id, user_id
         ) {QUEUE_PUSH}"
    );
    sqlx::query(&statement)
        .bind(conversation)
        .bind(&rows.ids)
        .bind(&rows.message_ids)
        .bind(&rows.authors)
        .bind(&rows.seqs)
        .bind(&rows.previews)
        .bind(&rows.recipients)
        .bind(&rows.reply_tos)
        .bind(&rows.kinds)
        .execute(&mut *tx)
        .await
        .map(drop)
}

/// Column arrays of the candidate notifications of [`for_messages`].
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    message_ids: Vec<Uuid>,
    authors: Vec<Uuid>,
    seqs: Vec<i64>,
    previews: Vec<Option<String>>,
    recipients: Vec<Option<Uuid>>,
    reply_tos: Vec<Option<Uuid>>,
    kinds: Vec<&'static str>,
}

impl Rows {
    fn push(
        &mut self,
        id: Uuid,
        message: &MessageNotice,
        preview: Option<String>,
        recipient: Option<Uuid>,
        reply_to: Option<Uuid>,
        kind: NotificationKind,
    ) {
        self.ids.push(id);
        self.message_ids.push(message.message_id);
        self.authors.push(message.author);
        self.seqs.push(message.seq);
        self.previews.push(preview);
        self.recipients.push(recipient);
        self.reply_tos.push(reply_to);
        self.kinds.push(kind.as_str());
    }
}

/// The title of a notification: as given, or the actor's display name and then a phrase.
#[derive(Clone, Debug)]
pub enum Title {
    Given(String),
    ActorThen(&'static str),
}

/// One notification whose recipient is known (a new conversation, an addition, a backend's).
#[derive(Clone, Debug)]
pub struct NewNotification {
    pub id: Uuid,
    pub user: Uuid,
    pub kind: NotificationKind,
    pub priority: Priority,
    pub title: Title,
    pub body: Option<String>,
    pub data: serde_json::Value,
}

/// Records `notifications` caused by `actor`, in this transaction, each with its `created` change.
pub async fn record(
    tx: &mut PgConnection,
    actor: Option<Uuid>,
    notifications: &[NewNotification],
) -> Result<(), sqlx::Error> {
    if notifications.is_empty() {
        return Ok(());
    }
    let column = |field: fn(&NewNotification) -> Option<String>| notifications.iter().map(field).collect::<Vec<_>>();
    let statement = format!(
        "with created as (
             insert into notifications (id, user_id, kind, priority, title, body, data)
             select wanted.id, wanted.user_id, wanted.kind, wanted.priority,
                    coalesce(wanted.title, coalesce(left(actor.display_name, 150), 'Someone') || wanted.title_after_actor),
                    wanted.body, wanted.data
               from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::jsonb[])
                        as wanted (id, user_id, kind, priority, title, title_after_actor, body, data)
                    left join users actor on actor.id = $1
              order by wanted.id
          returning id, user_id
         ), queued as ({QUEUE_PUSH})
         insert into notification_changes (user_id, change, notification_id)
         select user_id, 'created', id from created order by id"
    );
    sqlx::query(&statement)
        .bind(actor)
        .bind(notifications.iter().map(|n| n.id).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.user).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.kind.as_str()).collect::<Vec<_>>())
        .bind(notifications.iter().map(|n| n.priority.as_str()).collect::<Vec<_>>())
        .bind(column(|n| match &n.title {
            Title::Given(title) => Some(title.clone()),
            Title::ActorThen(_) => None,
        }))
        .bind(column(|n| match n.title {
            Title::Given(_) => None,
            Title::ActorThen(phrase) => Some(phrase.to_owned()),
        }))
        .bind(column(|n| n.body.clone()))
        .bind(notifications.iter().map(|n| n.data.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map(drop)
}

/// A notification for each of `users` about `conversation`, caused by `actor` (a new direct
/// conversation with them, or their addition to a group).
pub fn about_conversation(
    kind: NotificationKind,
    actor: Uuid,
    conversation: Uuid,
    title: Option<&str>,
    users: impl IntoIterator<Item = Uuid>,
) -> Vec<NewNotification> {
    let phrase = match kind {
        NotificationKind::Added => " added you to a group",
        _ => " started a conversation with you",
    };
    users
        .into_iter()
        .filter(|user| *user != actor)
        .map(|user| NewNotification {
            id: Uuid::now_v7(),
            user,
            kind,
            priority: if kind == NotificationKind::Added { Priority::Low } else { Priority::Normal },
            title: Title::ActorThen(phrase),
            body: title.map(str::to_owned),
            data: serde_json::json!({ "conversation_id": conversation, "actor_id": actor }),
        })
        .collect()
}

/// The start of a message's text, as a notification's body.
fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_text_is_cut_to_its_first_characters_on_a_character_boundary() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let cut = preview(&long);
        assert_eq!(cut.chars().count(), PREVIEW_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
