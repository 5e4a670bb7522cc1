//! Request bodies over the configured size get 413, whether they announce their length or not.
//! (poem's `SizeLimit` refuses every request without `Content-Length`, GETs included.)

use poem::http::header::CONTENT_LENGTH;
use poem::{Body, Endpoint, Middleware, Request, Result};

#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint { inner, max: self.0 }
    }
}

#[derive(Debug)]
pub struct BodyLimitEndpoint<E> {
    inner: E,
    max: usize,
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> Result<Self::Output> {
        let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        match declared {
            Some(length) if length > self.max => return Err(poem::error::ReadBodyError::PayloadTooLarge.into()),
            Some(_) => {}
            // A chunked body is read here, up to the limit, so it cannot grow past it.
            None => {
                let bytes = req.take_body().into_bytes_limit(self.max).await?;
                req.set_body(Body::from(bytes));
            }
        }
        self.inner.call(req).await
    }
}
