//! Sample values shared by the OpenAPI examples, so every example tells the same story:
//! Alice and Bob talking in one conversation.

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub const ALICE: Uuid = Uuid::from_u128(0x0191d0c2_6c3e_7f00_8000_00000000a11c);
pub const BOB: Uuid = Uuid::from_u128(0x0191d0c2_6c3e_7f00_8000_000000000b0b);
pub const CONVERSATION: Uuid = Uuid::from_u128(0x0191d0c3_1a2b_7c00_8000_0000000c0117);
pub const MESSAGE: Uuid = Uuid::from_u128(0x0191d0c4_5e6f_7a00_8000_00000000e55a);

pub fn time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default()
}

/// A typical problem answered with `status`, as a JSON example.
pub fn problem_for(status: u16) -> Option<serde_json::Value> {
    use crate::error::{Problem, ProblemCode};
    let (code, detail, field) = match status {
        400 => (ProblemCode::ValidationFailed, "text must not be empty", Some("text")),
        401 => (ProblemCode::Unauthorized, "the token has expired", None),
        403 => (ProblemCode::NotOwner, "only an owner of the group may do this", None),
        404 => (ProblemCode::NotFound, "conversation not found", None),
        409 => (ProblemCode::AlreadyMember, "the user is already a member", None),
        410 => {
            (ProblemCode::HistoryPruned, "events 1..41 are no longer stored; reload the conversation's messages", None)
        }
        413 => (ProblemCode::PayloadTooLarge, "the body is larger than 65536 bytes", None),
        415 => (ProblemCode::UnsupportedMediaType, "the body must be application/json", None),
        422 => (ProblemCode::IdempotencyKeyReused, "this Idempotency-Key was used for a different request", None),
        429 => (ProblemCode::RateLimited, "too many requests; retry after 1 s", None),
        500 => (ProblemCode::Internal, "an unexpected error occurred; it has been logged", None),
        503 => (ProblemCode::Unavailable, "the database is unavailable; retry shortly", None),
        _ => return None,
    };
    let status = poem::http::StatusCode::from_u16(status).ok()?;
    let mut problem = Problem::new(status, code, detail);
    problem.field = field.map(str::to_owned);
    poem_openapi::types::ToJSON::to_json(&problem)
}
