//! One retry, on a fresh connection, for a request the database failed because it had lost the
//! connection rather than because of anything in the request.
//!
//! After PostgreSQL restarts, fails over or terminates sessions, pooled connections that were
//! used less than a second ago are handed out without a ping (see `db`), and the first statement
//! on each finds it dead. A request is run again when nothing of it can have been stored: when
//! PostgreSQL ended the session itself (57P01–57P03) before the request asked to commit (the
//! statement that got the error did not run), or, for safe methods (GET, HEAD), whenever the
//! link broke (I/O error, class 08). Either way the pool then pings every connection it hands
//! out for a while (`db::distrust_pooled_connections`), so the retry gets a live one.
//! Message sends are committed by the group-commit worker, outside the request; it retries a
//! batch itself (`sending`).

use std::cell::Cell;

use poem::http::Method;
use poem::{Body, Endpoint, IntoResponse, Middleware, Request, RequestParts, Response, Result};

/// How a request's database work was cut off, if it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// PostgreSQL ended the session: the failed statement did not run.
    SessionEnded,
    /// The connection broke: whether the failed statement ran is unknown.
    ConnectionBroken,
}

/// What one attempt of a request did with the database.
#[derive(Clone, Copy, Debug, Default)]
struct Attempt {
    lost: Option<Lost>,
    committed: bool,
}

impl Attempt {
    fn may_retry(self, safe_method: bool) -> bool {
        match self.lost {
            Some(Lost::SessionEnded) => safe_method || !self.committed,
            Some(Lost::ConnectionBroken) => safe_method,
            None => false,
        }
    }
}

tokio::task_local! {
    static ATTEMPT: Cell<Attempt>;
}

/// Records, for the request being served (if any), that its database connection was lost.
pub fn note_lost(lost: Lost) {
    let _ = ATTEMPT.try_with(|cell| {
        let mut attempt = cell.get();
        // A broken link anywhere in the request makes it one that may have been stored.
        if attempt.lost != Some(Lost::ConnectionBroken) {
            attempt.lost = Some(lost);
        }
        cell.set(attempt);
    });
}

/// Records that the request being served asked to commit.
pub fn note_commit() {
    let _ = ATTEMPT.try_with(|cell| cell.set(Attempt { committed: true, ..cell.get() }));
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RetryOnLostConnection;

impl<E: Endpoint> Middleware<E> for RetryOnLostConnection {
    type Output = RetryOnLostConnectionEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RetryOnLostConnectionEndpoint { inner }
    }
}

#[derive(Debug)]
pub struct RetryOnLostConnectionEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for RetryOnLostConnectionEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> Result<Response> {
        // Bodies are small and bounded (`BodyLimit` runs first): kept for a second attempt.
        let body = request.take_body().into_bytes().await?;
        let copy = copy_head(&request);
        request.set_body(body.clone());
        let safe = matches!(*request.method(), Method::GET | Method::HEAD);
        // The second attempt runs outside the scope: it is not retried again.
        let (first, attempt) = ATTEMPT
            .scope(Cell::new(Attempt::default()), async {
                let response = self.inner.call(request).await.map(IntoResponse::into_response);
                (response, ATTEMPT.with(Cell::get))
            })
            .await;
        if !attempt.may_retry(safe) {
            return first;
        }
        tracing::info!(lost = ?attempt.lost, "retrying a request on a fresh database connection");
        self.inner.call(Request::from_parts(copy, Body::from(body))).await.map(IntoResponse::into_response)
    }
}

/// Everything of the request but its body.
fn copy_head(request: &Request) -> RequestParts {
    let mut head = poem::http::Request::new(()).into_parts().0;
    head.method = request.method().clone();
    head.uri = request.uri().clone();
    head.version = request.version();
    head.headers = request.headers().clone();
    head.extensions = request.extensions().clone();
    RequestParts::from((head, request.local_addr().clone(), request.remote_addr().clone(), request.scheme().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_cannot_have_stored_anything_are_retried() {
        let attempt = |lost, committed| Attempt { lost, committed };
        // An ended session before the commit: any method.
        assert!(attempt(Some(Lost::SessionEnded), false).may_retry(false));
        // Once the commit was asked for, only a read.
        assert!(!attempt(Some(Lost::SessionEnded), true).may_retry(false));
        assert!(attempt(Some(Lost::SessionEnded), true).may_retry(true));
        // A broken link: only a read.
        assert!(!attempt(Some(Lost::ConnectionBroken), false).may_retry(false));
        assert!(attempt(Some(Lost::ConnectionBroken), false).may_retry(true));
        assert!(!attempt(None, false).may_retry(true));
    }
}
