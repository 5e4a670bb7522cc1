//! Answers the brokers' membership requests (`<prefix>.internal.membership`): the conversations
//! a connecting user belongs to, with each one's latest `seq`. Every API instance listens in one
//! queue group, so each request is answered once.

use futures_util::StreamExt;
use parley_shared::ids::ConversationId;
use parley_shared::membership::{ConversationPosition, MembershipReply, MembershipRequest};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const QUEUE_GROUP: &str = "parley-api";

pub struct MembershipResponder {
    pub db: PgPool,
    pub nats: async_nats::Client,
    pub subject: String,
}

impl MembershipResponder {
    /// Serves until `stop`; requests are answered concurrently (the pool bounds the queries).
    pub async fn run(self, stop: CancellationToken) {
        let mut requests = match self.nats.queue_subscribe(self.subject.clone(), QUEUE_GROUP.into()).await {
            Ok(requests) => requests,
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to membership requests; brokers will refuse connections");
                return;
            }
        };
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(request) = requests.next() => {
                    let (db, nats) = (self.db.clone(), self.nats.clone());
                    in_flight.spawn(async move { answer(&db, &nats, request).await });
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        let _ = requests.unsubscribe().await;
        while in_flight.join_next().await.is_some() {}
    }
}

async fn answer(db: &PgPool, nats: &async_nats::Client, request: async_nats::Message) {
    let Some(reply_to) = request.reply else { return };
    let reply = match serde_json::from_slice::<MembershipRequest>(&request.payload) {
        Ok(MembershipRequest { user_id }) => match positions(db, *user_id.as_uuid()).await {
            Ok(conversations) => MembershipReply::Conversations(conversations),
            Err(error) => {
                tracing::warn!(%error, "membership request failed");
                MembershipReply::Error("the membership query failed".into())
            }
        },
        Err(error) => MembershipReply::Error(format!("malformed membership request: {error}")),
    };
    let payload = serde_json::to_vec(&reply).unwrap_or_default();
    if let Err(error) = nats.publish(reply_to, payload.into()).await {
        tracing::debug!(%error, "membership reply not sent");
    }
}

async fn positions(db: &PgPool, user: Uuid) -> sqlx::Result<Vec<ConversationPosition>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select c.id, c.last_seq
           from conversation_members m join conversations c on c.id = m.conversation_id
          where m.user_id = $1",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, last_seq)| ConversationPosition { conversation_id: ConversationId::from_uuid(id), last_seq })
        .collect())
}
