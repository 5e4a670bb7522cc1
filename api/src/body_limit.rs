//! Request bodies over the configured size get 413, whether they announce their length or not.
//! (poem's `SizeLimit` refuses every request without `Content-Length`, GETs included.)

use poem::http::header::CONTENT_LENGTH;
use poem::{Body, Endpoint, Middleware, Request, Result};

/// Publish requests carry up to 64 KiB of `data` (and a broadcast up to 1,000 channel names)
/// whatever `PARLEY_MAX_BODY_BYTES` says; their own checks bound each part.
const PUBLISH_MAX_BODY_BYTES: usize = 512 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct BodyLimit {
    max: usize,
}

impl BodyLimit {
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint { inner, max: self.max }
    }
}

#[derive(Debug)]
pub struct BodyLimitEndpoint<E> {
    inner: E,
    max: usize,
}

fn is_publish(path: &str) -> bool {
    path == "/v1/publications" || (path.starts_with("/v1/channels/") && path.ends_with("/publications"))
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let max = if is_publish(req.uri().path()) { self.max.max(PUBLISH_MAX_BODY_BYTES) } else { self.max };
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        match declared {
            Some(length) if length > max => return Err(poem::error::ReadBodyError::PayloadTooLarge.into()),
            Some(_) => {}
            // A chunked body is read here, up to the limit, so it cannot grow past it.
            None => {
                let bytes = req.take_body().into_bytes_limit(max).await?;
                req.set_body(Body::from(bytes));
            }
        }
        self.inner.call(req).await
    }
}
