//! The one error type of every route: RFC 7807 `application/problem+json` with a stable `code`.
//!
//! Handlers return `Result<_, ApiError>`. Errors raised outside handlers (a path or body that
//! does not parse, a missing bearer token, an unknown route, a body over the size limit) are
//! turned into the same shape by [`problem_for_unhandled`]. Internal failures are logged with
//! their cause and answered without it.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, Object};

use crate::retry::Lost;
use crate::route_templates::RouteTemplates;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 7807 problem detail.
#[derive(Object, Clone, Debug, PartialEq, Eq)]
#[oai(skip_serializing_if_is_none, example)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:parley:problem:<code>`.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable, machine-readable code.
    pub code: ProblemCode,
    /// The request field at fault, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub field: Option<String>,
}

/// Every `code` a problem can carry: clients may match on them exhaustively.
#[derive(poem_openapi::Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum ProblemCode {
    /// 400: a parameter or body field is invalid (`field` names it).
    ValidationFailed,
    /// 400: the channel's namespace is not configured.
    UnknownNamespace,
    /// 400: the channel's namespace keeps no history (it is ephemeral).
    NotDurable,
    /// 401: no bearer token, or an invalid or expired one (or, on server routes, no valid API key).
    Unauthorized,
    /// 403: the caller may not read this channel.
    Forbidden,
    /// 403: only an owner of the group may do this.
    NotOwner,
    /// 403: only the author may do this.
    NotAuthor,
    /// 403: the edit window of the message has closed.
    EditWindowExpired,
    /// 404: no such resource, or one the caller may not see.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: the message is deleted.
    MessageDeleted,
    /// 409: the user is a member already.
    AlreadyMember,
    /// 409: the last owner of a group with other members cannot leave it.
    LastOwner,
    /// 409: members of a direct conversation cannot change.
    DirectConversation,
    /// 409: the group has as many members as it may.
    MemberLimit,
    /// 409: the user has as many push targets as they may.
    TooManyPushTargets,
    /// 410: the events asked for are no longer stored.
    HistoryPruned,
    /// 413: the body (or an event it would make) is too large.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: the Idempotency-Key was used for another request.
    IdempotencyKeyReused,
    /// 429: too many requests; see `Retry-After`.
    RateLimited,
    /// 500: a bug, logged on the server.
    Internal,
    /// 503: PostgreSQL, NATS or the signing keys are unavailable; retry shortly.
    Unavailable,
    /// Any other HTTP error status.
    Error,
}

impl ProblemCode {
    /// The code as clients see it (`validation_failed`).
    pub fn name(self) -> String {
        self.to_json().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("urn:parley:problem:{}", code.name()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            code,
            field: None,
        }
    }
}

impl Problem {
    pub fn to_json_value(&self) -> serde_json::Value {
        self.to_json().unwrap_or_default()
    }
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Self::new(StatusCode::NOT_FOUND, ProblemCode::NotFound, "conversation not found")
    }
}

/// A [`Problem`] sent as `application/problem+json`.
#[derive(Debug)]
pub struct ProblemJson(pub Box<Problem>);

impl ProblemJson {
    pub fn new(problem: Problem) -> Self {
        Self(Box::new(problem))
    }
}

impl Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = PROBLEM_CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Response::builder().status(status).content_type(PROBLEM_CONTENT_TYPE).body(self.0.to_json_string())
    }
}

/// Every error a Parley route can answer with.
#[derive(ApiResponse, Debug)]
pub enum ApiError {
    /// The request is malformed; `field` names the part at fault.
    #[oai(status = 400)]
    BadRequest(ProblemJson),
    /// The bearer token is missing, invalid or expired.
    #[oai(status = 401)]
    Unauthorized(ProblemJson, #[oai(header = "WWW-Authenticate")] String),
    /// The caller is a member but may not do this.
    #[oai(status = 403)]
    Forbidden(ProblemJson),
    /// Not found, or not visible to the caller (non-members cannot tell the difference).
    #[oai(status = 404)]
    NotFound(ProblemJson),
    /// The request conflicts with the current state.
    #[oai(status = 409)]
    Conflict(ProblemJson),
    /// The request body is over the size limit.
    #[oai(status = 413)]
    PayloadTooLarge(ProblemJson),
    /// The request body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(ProblemJson),
    /// The request is well-formed but cannot be applied.
    #[oai(status = 422)]
    Unprocessable(ProblemJson),
    /// The per-user rate limit is exhausted; retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(ProblemJson, #[oai(header = "Retry-After")] u64),
    /// A dependency (PostgreSQL, NATS) is unavailable; retry after `Retry-After` seconds.
    #[oai(status = 503)]
    Unavailable(ProblemJson, #[oai(header = "Retry-After")] u64),
    /// An unexpected failure; details are in the server log.
    #[oai(status = 500)]
    Internal(ProblemJson),
}

impl ApiError {
    /// The problem this error answers with.
    pub fn problem(&self) -> &Problem {
        match self {
            Self::BadRequest(problem)
            | Self::Unauthorized(problem, _)
            | Self::Forbidden(problem)
            | Self::NotFound(problem)
            | Self::Conflict(problem)
            | Self::PayloadTooLarge(problem)
            | Self::UnsupportedMediaType(problem)
            | Self::Unprocessable(problem)
            | Self::TooManyRequests(problem, _)
            | Self::Unavailable(problem, _)
            | Self::Internal(problem) => &problem.0,
        }
    }

    pub fn bad_request(field: &str, detail: impl Into<String>) -> Self {
        Self::bad_request_code(ProblemCode::ValidationFailed, field, detail)
    }

    pub fn bad_request_code(code: ProblemCode, field: &str, detail: impl Into<String>) -> Self {
        let mut problem = Problem::new(StatusCode::BAD_REQUEST, code, detail);
        problem.field = Some(field.to_owned());
        Self::BadRequest(ProblemJson::new(problem))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", detail.replace('"', "'"));
        Self::Unauthorized(
            ProblemJson::new(Problem::new(StatusCode::UNAUTHORIZED, ProblemCode::Unauthorized, detail)),
            challenge,
        )
    }

    pub fn forbidden(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self::Forbidden(ProblemJson::new(Problem::new(StatusCode::FORBIDDEN, code, detail)))
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(ProblemJson::new(Problem::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            format!("{what} not found"),
        )))
    }

    pub fn conflict(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self::Conflict(ProblemJson::new(Problem::new(StatusCode::CONFLICT, code, detail)))
    }

    pub fn payload_too_large(field: &str, detail: impl Into<String>) -> Self {
        let mut problem = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, ProblemCode::PayloadTooLarge, detail);
        problem.field = Some(field.to_owned());
        Self::PayloadTooLarge(ProblemJson::new(problem))
    }

    pub fn unprocessable(code: ProblemCode, detail: impl Into<String>) -> Self {
        Self::Unprocessable(ProblemJson::new(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)))
    }

    pub fn too_many_requests(retry_after_seconds: u64) -> Self {
        let detail = format!("rate limit exceeded; retry in {retry_after_seconds} s");
        Self::TooManyRequests(
            ProblemJson::new(Problem::new(StatusCode::TOO_MANY_REQUESTS, ProblemCode::RateLimited, detail)),
            retry_after_seconds,
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        let problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, ProblemCode::Unavailable, detail);
        Self::Unavailable(ProblemJson::new(problem), UNAVAILABLE_RETRY_AFTER_SECONDS)
    }

    pub fn internal() -> Self {
        Self::Internal(ProblemJson::new(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ProblemCode::Internal,
            "an unexpected error occurred; it has been logged",
        )))
    }
}

/// What a 503 asks clients to wait before retrying.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 1;

/// Whether the database cannot serve now, whatever the request: no connection to be had, the
/// server going away (57P01 on pooled connections at a shutdown), lost connections (class 08),
/// a full disk or exhausted resources (class 53). The database's state, not a bug.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    connection_lost(error).is_some()
        || match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("53")),
            _ => false,
        }
}

/// Whether `error` means the connection it came on is gone, and how.
pub fn connection_lost(error: &sqlx::Error) -> Option<Lost> {
    match error {
        sqlx::Error::Io(_) => Some(Lost::ConnectionBroken),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("57P01" | "57P02" | "57P03") => Some(Lost::SessionEnded),
            Some(code) if code.starts_with("08") => Some(Lost::ConnectionBroken),
            _ => None,
        },
        _ => None,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            error if database_unavailable(error) => {
                tracing::warn!(%error, "database unavailable");
                if let Some(lost) = connection_lost(error) {
                    crate::retry::note_lost(lost);
                    crate::db::distrust_pooled_connections();
                }
                Self::unavailable("the database is unavailable; retry shortly")
            }
            // Class 22, data exception: a value PostgreSQL cannot store (a NUL character, say).
            // The input is at fault, not the server.
            sqlx::Error::Database(db) if db.code().is_some_and(|code| code.starts_with("22")) => {
                tracing::info!(%error, "input refused by the database");
                let problem = Problem::new(
                    StatusCode::BAD_REQUEST,
                    ProblemCode::ValidationFailed,
                    "a value in the request cannot be stored",
                );
                Self::BadRequest(ProblemJson::new(problem))
            }
            _ => {
                tracing::error!(error = ?error, "database error");
                Self::internal()
            }
        }
    }
}

impl From<parley_shared::auth::AuthError> for ApiError {
    fn from(error: parley_shared::auth::AuthError) -> Self {
        match error {
            parley_shared::auth::AuthError::KeysUnavailable => Self::unavailable(error.to_string()),
            other => Self::unauthorized(other.to_string()),
        }
    }
}

/// Turns any error that reached the router without being an [`ApiError`] into problem+json.
/// The 500 problem for a handler that panicked (the panic itself is on stderr).
pub fn problem_for_panic(_panic: Box<dyn std::any::Any + Send>) -> Response {
    ApiError::internal().into_response()
}

pub async fn problem_for_unhandled(error: poem::Error, templates: &RouteTemplates) -> Response {
    // The route that matched: for the access log and metrics (see `request_span`), and for the
    // real name of a path parameter (poem-openapi calls them `param0`, `param1`, …).
    let route = error.data::<poem::PathPattern>().cloned();
    let mut detail = error.to_string();
    let field = if let Some(param) = error.downcast_ref::<poem_openapi::error::ParseParamError>() {
        Some(param.name.to_owned())
    } else if let Some(path) = error.downcast_ref::<poem_openapi::error::ParsePathError>() {
        let name = route.as_ref().and_then(|route| templates.parameter_name(&route.0, path.name));
        let name = name.unwrap_or_else(|| path.name.to_owned());
        detail = detail.replace(&format!("`{}`", path.name), &format!("`{name}`"));
        Some(name)
    } else {
        None
    };
    let status = error.status();
    let response = error.into_response();
    if response.content_type().is_some_and(|content_type| content_type.starts_with(PROBLEM_CONTENT_TYPE)) {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => ProblemCode::ValidationFailed,
        StatusCode::UNAUTHORIZED => ProblemCode::Unauthorized,
        StatusCode::NOT_FOUND => ProblemCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ProblemCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ProblemCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemCode::UnsupportedMediaType,
        status if status.is_server_error() => ProblemCode::Internal,
        _ => ProblemCode::Error,
    };
    let detail = if detail.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { detail };
    let mut problem = Problem::new(status, code, detail);
    problem.field = field;
    let problem = ProblemJson::new(problem);
    // Through ApiError, so each status carries the headers the contract documents for it.
    let error = match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest(problem),
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized(problem, "Bearer".into()),
        StatusCode::NOT_FOUND => ApiError::NotFound(problem),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(problem),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(problem),
        status if status.is_server_error() => ApiError::Internal(problem),
        _ => return with_route(problem.into_response(), route),
    };
    with_route(error.into_response(), route)
}

fn with_route(mut response: Response, route: Option<poem::PathPattern>) -> Response {
    if let Some(route) = route {
        response.set_data(route);
    }
    response
}
