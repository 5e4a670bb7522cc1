//! Expo's push API: up to 100 messages per request, one ticket per message in the same order.

use parley_shared::notifications::Priority;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Outcome, Push, PushConfig};

/// Most messages Expo takes in one request.
pub(super) const MAX_BATCH: usize = 100;

#[derive(Serialize)]
struct Message<'a> {
    to: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    data: serde_json::Value,
    priority: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sound: Option<&'static str>,
    badge: i64,
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    data: Vec<Ticket>,
}

#[derive(Deserialize)]
struct Ticket {
    status: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: Option<TicketDetails>,
}

#[derive(Deserialize)]
struct TicketDetails {
    #[serde(default)]
    error: Option<String>,
}

/// Sends `pushes` (at most [`MAX_BATCH`]) in one request; one outcome each, in order.
pub(super) async fn send(http: &reqwest::Client, config: &PushConfig, pushes: &[Push]) -> Vec<Outcome> {
    let messages: Vec<Message<'_>> = pushes.iter().map(message).collect();
    let mut request = http.post(&config.expo_url).json(&messages);
    if let Some(token) = &config.expo_access_token {
        request = request.bearer_auth(token);
    }
    let all = |outcome: Outcome| vec![outcome; pushes.len()];
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return all(Outcome::Retry(format!("Expo: {error}"))),
    };
    let status = response.status();
    if status.as_u16() == 429 || status.is_server_error() {
        return all(Outcome::Retry(format!("Expo answered {status}")));
    }
    if !status.is_success() {
        let detail = response.text().await.unwrap_or_default();
        return all(Outcome::Rejected(format!(
            "Expo answered {status}: {}",
            detail.chars().take(300).collect::<String>()
        )));
    }
    match response.json::<Reply>().await {
        Ok(reply) if reply.data.len() == pushes.len() => reply.data.into_iter().map(outcome).collect(),
        Ok(_) => all(Outcome::Retry("Expo answered with a ticket count that differs from the messages".into())),
        Err(error) => all(Outcome::Retry(format!("Expo's answer is not its ticket list: {error}"))),
    }
}

fn message(push: &Push) -> Message<'_> {
    let notification = &push.notification;
    let (priority, sound) = match notification.priority {
        Priority::High => ("high", Some("default")),
        Priority::Low => ("normal", None),
        Priority::Normal => ("default", Some("default")),
    };
    Message {
        to: &push.target.address,
        title: &notification.title,
        body: notification.body.as_deref(),
        data: json!({
            "push_id": push.id,
            "notification_id": notification.id,
            "kind": notification.kind,
            "data": notification.data,
        }),
        priority,
        sound,
        badge: push.badge,
    }
}

/// A ticket's meaning: `DeviceNotRegistered` deletes the target; a rate limit is retried.
fn outcome(ticket: Ticket) -> Outcome {
    if ticket.status == "ok" {
        return Outcome::Sent;
    }
    let error = ticket.details.and_then(|details| details.error).unwrap_or_default();
    let message = format!("Expo ticket error {error}: {}", ticket.message.unwrap_or_default());
    match error.as_str() {
        "DeviceNotRegistered" => Outcome::TargetGone,
        "MessageRateExceeded" => Outcome::Retry(message),
        _ => Outcome::Rejected(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_map_to_outcomes() {
        let ticket = |json: serde_json::Value| serde_json::from_value::<Ticket>(json).expect("ticket");
        assert_eq!(outcome(ticket(json!({ "status": "ok", "id": "x" }))), Outcome::Sent);
        let gone = json!({ "status": "error", "message": "gone", "details": { "error": "DeviceNotRegistered" } });
        assert_eq!(outcome(ticket(gone)), Outcome::TargetGone);
        let limited = json!({ "status": "error", "details": { "error": "MessageRateExceeded" } });
        assert!(matches!(outcome(ticket(limited)), Outcome::Retry(_)));
        assert!(matches!(outcome(ticket(json!({ "status": "error" }))), Outcome::Rejected(_)));
    }
}
