//! CORS for browser apps served from other origins (`PARLEY_API_ALLOWED_ORIGINS`).
//!
//! Written here rather than taken from poem: poem's middleware refuses (403) every request
//! whose `Origin` is not listed, and browsers send `Origin` on same-origin POSTs too, so Swagger
//! UI at `/docs` would break as soon as one origin was allowed; and it answers preflights 200.
//! Here a request from an origin not listed simply gets no CORS headers (the browser then keeps
//! the response from the page), and a preflight from a listed one gets 204.

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};

const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, traceparent";
/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSED_HEADERS: &str = "Retry-After, traceparent";
/// How long a browser may reuse a preflight answer (seconds).
const MAX_AGE: &str = "600";

/// The origins allowed to call the API from a browser: exact origins, or `*` for any.
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        Self { origins: origins.iter().map(|origin| origin.trim().to_owned()).filter(|o| !o.is_empty()).collect() }
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        let origin = origin.to_str().unwrap_or_default();
        self.origins.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

impl<E: Endpoint> Middleware<E> for Cors {
    type Output = CorsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        CorsEndpoint { cors: self.clone(), inner }
    }
}

#[derive(Debug)]
pub struct CorsEndpoint<E> {
    cors: Cors,
    inner: E,
}

impl<E: Endpoint> Endpoint for CorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> Result<Self::Output> {
        let origin = request.headers().get(header::ORIGIN).filter(|origin| self.cors.allows(origin)).cloned();
        let Some(origin) = origin else { return self.inner.call(request).await.map(IntoResponse::into_response) };
        let preflight = request.method() == Method::OPTIONS
            && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut response = if preflight {
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS)
                .header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS)
                .header(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE)
                .finish()
        } else {
            let mut response = self.inner.get_response(request).await;
            response
                .headers_mut()
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        // The answer depends on the origin: caches must not hand it to another one.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        Ok(response)
    }
}
