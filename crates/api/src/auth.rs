//! Bearer-token authentication: mutating calls need the token when one is
//! configured; reads too with `api.auth_reads`.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::HttpError;
use crate::routes::AppState;

/// Whether `header_value` (an `Authorization` header) carries `token`.
/// Compared in constant time so response timing tells nothing about it.
pub fn bearer_matches(header_value: Option<&str>, token: &str) -> bool {
    let Some(given) = header_value.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.api.token {
        let needed = !is_read(request.method()) || state.api.auth_reads;
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if needed && !bearer_matches(given, token.expose()) {
            let message = if given.is_none() {
                "this call needs the API token: send `Authorization: Bearer <token>` (ctl: --token-file or $PGWARDEN_API_TOKEN)"
            } else {
                "the API token is wrong; use the content of the member's api.token_file"
            };
            let mut response = HttpError::new(StatusCode::UNAUTHORIZED, message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
            return response;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer s3cretX"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
