//! A channel's subscribers across all brokers: one scatter-gather request over core NATS,
//! answered by every broker with its local count.

use std::time::Duration;

use futures_util::StreamExt;
use parley_shared::channels::Channel;
use parley_shared::publications::StatsReply;

use crate::state::AppState;

/// How long the API waits for brokers that have not answered yet.
const WAIT: Duration = Duration::from_millis(500);

/// Subscribers summed over the brokers that answered, how many answered, and whether every
/// broker with a live presence lease did.
pub struct Subscribers {
    pub count: u64,
    pub brokers: usize,
    pub complete: bool,
}

pub async fn subscribers(state: &AppState, channel: &Channel) -> anyhow::Result<Subscribers> {
    let expected = state.presence.live_brokers();
    let inbox = state.nats.new_inbox();
    let mut replies = state.nats.subscribe(inbox.clone()).await?;
    state.nats.publish_with_reply(state.subjects.channel_stats_request(), inbox, channel.key().into()).await?;
    state.nats.flush().await?;
    let (mut count, mut brokers) = (0, 0);
    let deadline = tokio::time::sleep(WAIT);
    tokio::pin!(deadline);
    while brokers < expected.max(1) {
        tokio::select! {
            () = &mut deadline => break,
            Some(reply) = replies.next() => {
                if let Ok(reply) = serde_json::from_slice::<StatsReply>(&reply.payload) {
                    count += reply.subscribers;
                    brokers += 1;
                }
            }
        }
    }
    Ok(Subscribers { count, brokers, complete: brokers >= expected })
}
