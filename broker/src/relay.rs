//! The broker's requests and publishes on NATS: the membership request to the API, and typing
//! signals. (Events come in through the [`feed`](crate::feed), signals through
//! [`signals`](crate::signals).)

use std::time::Duration;

use parley_shared::channels::Channel;
use parley_shared::events::{Typing, TypingData, TypingKind, TypingState};
use parley_shared::ids::{ConversationId, UserId};
use parley_shared::membership::{Membership, MembershipReply, MembershipRequest, VisibilityReply, VisibilityRequest};
use parley_shared::publications::{
    ChannelPosition, ChannelState, PositionReply, PositionRequest, Publication, PublishReply, PublishRequest,
};
use parley_shared::subjects::Subjects;

#[derive(Clone, Debug)]
pub struct Relay {
    nats: async_nats::Client,
    subjects: Subjects,
    request_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("membership request failed: {0}")]
    Request(#[from] async_nats::RequestError),
    #[error("membership reply is malformed: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("the API could not answer: {0}")]
    Refused(String),
}

impl Relay {
    pub fn new(nats: async_nats::Client, subjects: Subjects, request_timeout: Duration) -> Self {
        Self { nats, subjects, request_timeout }
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The user's conversations, their positions and sizes, from whichever API instance
    /// answers, page by page.
    pub async fn membership(&self, user: UserId) -> Result<Vec<Membership>, MembershipError> {
        let mut memberships = Vec::new();
        let mut after = None;
        loop {
            let request = MembershipRequest { user_id: user, after };
            match self.request(self.subjects.membership_request(), &request).await? {
                MembershipReply::Conversations(page) => {
                    memberships.extend(page.items);
                    match page.next {
                        Some(next) => after = Some(next),
                        None => return Ok(memberships),
                    }
                }
                MembershipReply::Error(message) => return Err(MembershipError::Refused(message)),
            }
        }
    }

    /// Which of `candidates` share a conversation with `user`, from whichever API instance
    /// answers.
    pub async fn visible(&self, user: UserId, candidates: Vec<UserId>) -> Result<Vec<UserId>, MembershipError> {
        let request = VisibilityRequest { user_id: user, candidates };
        match self.request(self.subjects.visibility_request(), &request).await? {
            VisibilityReply::Visible(users) => Ok(users),
            VisibilityReply::Error(message) => Err(MembershipError::Refused(message)),
        }
    }

    /// A core-NATS request to the API instances, bounded by the request timeout.
    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: &impl serde::Serialize,
    ) -> Result<T, MembershipError> {
        let payload = serde_json::to_vec(body)?;
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(self.request_timeout));
        let reply = self.nats.send_request(subject, request).await?;
        Ok(serde_json::from_slice(&reply.payload)?)
    }

    /// Where a durable channel stands and, for `since`, what a subscriber missed (all of it, or
    /// `recovered: false`), from whichever API instance answers.
    pub async fn channel_position(
        &self,
        channel: &Channel,
        since: Option<ChannelPosition>,
        max_bytes: usize,
    ) -> Result<ChannelState, MembershipError> {
        let request = PositionRequest { channel: channel.as_str().to_owned(), since, max_bytes };
        match self.request(self.subjects.channel_position_request(), &request).await? {
            PositionReply::Position(state) => Ok(state),
            PositionReply::Error(message) => Err(MembershipError::Refused(message)),
        }
    }

    /// A client's publication into a durable channel, stored by whichever API instance answers:
    /// its offset.
    pub async fn publish_durable(
        &self,
        channel: &Channel,
        data: &serde_json::Value,
    ) -> Result<Option<i64>, MembershipError> {
        let request = PublishRequest {
            channel: Some(channel.as_str().to_owned()),
            channels: Vec::new(),
            data: data.clone(),
            idempotency_key: None,
        };
        match self.request(self.subjects.publish_request(), &request).await? {
            PublishReply::Publications(published) => Ok(published.first().and_then(|published| published.offset)),
            PublishReply::Error(problem) => {
                Err(MembershipError::Refused(problem["detail"].as_str().unwrap_or_default().into()))
            }
        }
    }

    /// A client's publication into an ephemeral channel: straight to NATS, at most once.
    pub async fn publish_ephemeral(&self, channel: &Channel, data: serde_json::Value) -> bool {
        let publication = Publication::ephemeral(channel.as_str(), data);
        let Ok(payload) = serde_json::to_vec(&publication) else { return false };
        self.nats.publish(self.subjects.ephemeral_channel(channel), payload.into()).await.is_ok()
    }

    /// Publishes a typing signal on core NATS (dropped while NATS is away: it is ephemeral).
    pub async fn publish_typing(&self, conversation: ConversationId, actor: UserId, state: TypingState) {
        let typing = Typing {
            kind: TypingKind::Typing,
            conversation_id: conversation,
            actor,
            occurred_at: chrono::Utc::now(),
            data: TypingData { state },
        };
        let payload = serde_json::to_vec(&typing).unwrap_or_default();
        parley_shared::serve::publish_if_connected(&self.nats, self.subjects.typing(conversation), payload.into())
            .await;
    }
}
