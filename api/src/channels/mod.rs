//! Application channels on the API side: publishing (from the HTTP routes and from backends on
//! NATS), reading a durable channel's history, and answering brokers about channel positions.

pub mod history;
pub mod publish;
pub mod requests;
pub mod server_keys;
pub mod stats;

use parley_shared::channels::{Channel, Namespace, Namespaces};

use crate::error::{ApiError, ProblemCode};

/// Parses `channel` and finds its namespace; `field` names the request field in errors.
pub fn resolve<'n>(
    namespaces: &'n Namespaces,
    channel: &str,
    field: &str,
) -> Result<(Channel, &'n Namespace), ApiError> {
    let channel = Channel::parse(channel).map_err(|error| ApiError::bad_request(field, error.to_string()))?;
    let namespace = namespaces.get(channel.namespace()).ok_or_else(|| {
        ApiError::bad_request_code(
            ProblemCode::UnknownNamespace,
            field,
            format!("no namespace {:?} is configured", channel.namespace()),
        )
    })?;
    // One spelling per user (the id as tokens carry it), so no publication misses its user.
    let canonical = |name: &str| name.parse::<parley_shared::ids::UserId>().is_ok_and(|user| user.to_string() == name);
    if channel.namespace() == parley_shared::channels::USER_NAMESPACE && !canonical(channel.name()) {
        return Err(ApiError::bad_request(field, "a user channel is user:<user id>, the id in lowercase"));
    }
    Ok((channel, namespace))
}
