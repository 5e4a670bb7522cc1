//! Answers the brokers' requests, over core NATS in one queue group (each request is answered
//! by one API instance):
//! - `<prefix>.internal.membership`: a connecting user's conversations, a page at a time, with
//!   each one's latest `seq` and member count;
//! - `<prefix>.internal.visibility`: which of some users share a conversation with a user (who
//!   may follow whose presence).

use futures_util::StreamExt;
use parley_shared::ids::ConversationId;
use parley_shared::membership::{
    MAX_CANDIDATES, Membership, MembershipPage, MembershipReply, MembershipRequest, PAGE_SIZE, VisibilityReply,
    VisibilityRequest,
};
use parley_shared::subjects::Subjects;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::membership;

const QUEUE_GROUP: &str = "parley-api";

pub struct MembershipResponder {
    pub db: PgPool,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
}

impl MembershipResponder {
    /// Serves until `stop`; requests are answered concurrently (the pool bounds the queries).
    pub async fn run(self, stop: CancellationToken) {
        let subjects = [self.subjects.membership_request(), self.subjects.visibility_request()];
        let db = self.db;
        serve(self.nats, subjects, stop, move |membership, payload| {
            let db = db.clone();
            async move {
                let reply = if membership {
                    serde_json::to_vec(&answer(&db, &payload).await)
                } else {
                    serde_json::to_vec(&answer_visibility(&db, &payload).await)
                };
                reply.unwrap_or_default()
            }
        })
        .await;
    }
}

/// Answers the requests on two subjects (queue group `parley-api`: one instance answers each)
/// until `stop`, each in a task of its own; `answer(first, payload)` makes the reply, `first`
/// telling which subject the request came on.
pub async fn serve<A, F>(nats: async_nats::Client, subjects: [String; 2], stop: CancellationToken, answer: A)
where
    A: Fn(bool, bytes::Bytes) -> F,
    F: Future<Output = Vec<u8>> + Send + 'static,
{
    let subscribe = |subject: String| nats.queue_subscribe(subject, QUEUE_GROUP.into());
    let [first_subject, second_subject] = subjects;
    let (first, second) = match tokio::try_join!(subscribe(first_subject.clone()), subscribe(second_subject.clone())) {
        Ok(subscriptions) => subscriptions,
        Err(error) => {
            tracing::error!(%error, %first_subject, %second_subject, "cannot subscribe to requests; they go unanswered");
            return;
        }
    };
    let mut requests = futures_util::stream::select(first, second);
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            Some(request) = requests.next() => {
                let Some(reply_to) = request.reply.clone() else { continue };
                let reply = answer(request.subject.as_str() == first_subject, request.payload);
                let nats = nats.clone();
                in_flight.spawn(async move {
                    if let Err(error) = nats.publish(reply_to, reply.await.into()).await {
                        tracing::debug!(%error, "request reply not sent");
                    }
                });
            }
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    drop(requests);
    while in_flight.join_next().await.is_some() {}
}

async fn answer(db: &PgPool, payload: &[u8]) -> MembershipReply {
    match serde_json::from_slice::<MembershipRequest>(payload) {
        Ok(MembershipRequest { user_id, after }) => match page(db, *user_id.as_uuid(), after).await {
            Ok(page) => MembershipReply::Conversations(page),
            Err(error) => {
                tracing::warn!(%error, "membership request failed");
                MembershipReply::Error("the membership query failed".into())
            }
        },
        Err(error) => MembershipReply::Error(format!("malformed membership request: {error}")),
    }
}

async fn answer_visibility(db: &PgPool, payload: &[u8]) -> VisibilityReply {
    match serde_json::from_slice::<VisibilityRequest>(payload) {
        Ok(request) if request.candidates.len() > MAX_CANDIDATES => {
            VisibilityReply::Error(format!("at most {MAX_CANDIDATES} candidates per request"))
        }
        Ok(VisibilityRequest { user_id, candidates }) => {
            match membership::visible_among(db, user_id, &candidates).await {
                Ok(visible) => VisibilityReply::Visible(visible),
                Err(error) => {
                    tracing::warn!(%error, "visibility request failed");
                    VisibilityReply::Error("the visibility query failed".into())
                }
            }
        }
        Err(error) => VisibilityReply::Error(format!("malformed visibility request: {error}")),
    }
}

/// One page of the user's conversations, by id, after `after`.
async fn page(db: &PgPool, user: Uuid, after: Option<ConversationId>) -> sqlx::Result<MembershipPage> {
    let rows: Vec<(Uuid, i64, i32)> = sqlx::query_as(
        "select c.id, c.last_seq, c.member_count
           from conversation_members m join conversations c on c.id = m.conversation_id
          where m.user_id = $1 and ($2::uuid is null or m.conversation_id > $2)
          order by m.conversation_id
          limit $3",
    )
    .bind(user)
    .bind(after.map(|after| *after.as_uuid()))
    .bind(PAGE_SIZE)
    .fetch_all(db)
    .await?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) == PAGE_SIZE;
    let items: Vec<Membership> = rows
        .into_iter()
        .map(|(id, last_seq, member_count)| Membership {
            conversation_id: ConversationId::from_uuid(id),
            last_seq,
            member_count: i64::from(member_count),
        })
        .collect();
    let next = if full { items.last().map(|last| last.conversation_id) } else { None };
    Ok(MembershipPage { items, next })
}
