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
        let subscribe = |subject: String| self.nats.queue_subscribe(subject, QUEUE_GROUP.into());
        let (membership, visibility) = match tokio::try_join!(
            subscribe(self.subjects.membership_request()),
            subscribe(self.subjects.visibility_request())
        ) {
            Ok(subscriptions) => subscriptions,
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to broker requests; brokers will refuse connections");
                return;
            }
        };
        let mut requests = futures_util::stream::select(membership, visibility);
        let mut in_flight = tokio::task::JoinSet::new();
        let membership_subject = self.subjects.membership_request();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(request) = requests.next() => {
                    let (db, nats) = (self.db.clone(), self.nats.clone());
                    let is_membership = request.subject.as_str() == membership_subject;
                    in_flight.spawn(async move {
                        let Some(reply_to) = request.reply.clone() else { return };
                        let reply = if is_membership {
                            serde_json::to_vec(&answer(&db, &request.payload).await)
                        } else {
                            serde_json::to_vec(&answer_visibility(&db, &request.payload).await)
                        };
                        if let Err(error) = nats.publish(reply_to, reply.unwrap_or_default().into()).await {
                            tracing::debug!(%error, "broker request reply not sent");
                        }
                    });
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        drop(requests);
        while in_flight.join_next().await.is_some() {}
    }
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
