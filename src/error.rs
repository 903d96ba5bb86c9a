//! `ApiError`: the one error type of the HTTP surface. Every error any route
//! returns — ours or the framework's rejections — leaves as OpenAI's error body
//! `{"error":{"message","type","code","param"}}` (SPEC §3).
//!
//! What the client sees (`message`) and what is logged (`detail`) are separate
//! strings; neither may carry a secret.

use axum::extract::rejection::{
    BytesRejection, FormRejection, JsonRejection, PathRejection, QueryRejection,
};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer in OpenAI's shape, with the extra headers some carry.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub param: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
    /// Value of `x-should-retry`, when the gateway wants to steer SDK retries.
    pub should_retry: Option<bool>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code: code.map(str::to_owned),
            message: message.into(),
            param: None,
            retry_after: None,
            should_retry: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn with_should_retry(mut self, retry: bool) -> Self {
        self.should_retry = Some(retry);
        self
    }

    /// 400: malformed input; `param` names the field when there is one.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }

    pub fn invalid_field(param: &str, message: impl Into<String>) -> Self {
        Self::bad_request(message).with_param(param)
    }

    /// 401 in OpenAI's own shape: no, unknown, revoked or expired credential.
    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_api_key"),
            message,
        )
    }

    pub fn missing_credential() -> Self {
        Self::invalid_api_key(
            "No credential given. Send an API key as 'Authorization: Bearer sk_live_…' or 'X-API-Key', \
             or a token from POST /auth/login as 'Authorization: Bearer <token>'.",
        )
    }

    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            Some("invalid_credentials"),
            "Wrong username or password.",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", None, message)
    }

    pub fn forbidden_code(code: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            Some(code),
            message,
        )
    }

    /// 403 `session_required`: an API key tried to manage the account (SPEC §4
    /// "What a key may do"); only a signed-in session (a JWT) may.
    pub fn session_required() -> Self {
        Self::forbidden_code(
            "session_required",
            "An API key can call models and read the account, but not change it. \
             Sign in (POST /auth/login) and use the access token for this.",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("not_found"),
            message,
        )
    }

    pub fn model_not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            message,
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            Some("conflict"),
            message,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("The request body is larger than the server's limit of {limit} bytes ([server] max_body_bytes)."),
        )
    }

    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
            message,
        )
        .with_retry_after(retry_after_secs.max(1))
    }

    pub fn insufficient_quota(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "insufficient_quota",
            Some("insufficient_quota"),
            message,
        )
        .with_should_retry(false)
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            Some("upstream_error"),
            message,
        )
    }

    pub fn upstream_auth(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "api_error",
            Some("upstream_auth_error"),
            message,
        )
    }

    pub fn provider_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("provider_unavailable"),
            message,
        )
    }

    /// Usage records cannot be written and too many wait in memory (SPEC §13):
    /// no call is served that could go unrecorded.
    pub fn usage_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            Some("usage_unavailable"),
            "The gateway cannot record usage right now (its database refuses writes), so it takes no \
             metered calls; retry shortly. Operators: see /health and the server log.",
        )
        .with_retry_after(5)
    }

    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            Some("upstream_timeout"),
            message,
        )
    }

    /// 500 with a generic message; the detail goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            Some("internal_error"),
            "Internal server error; the server log has the details.",
        )
    }

    /// The JSON body, as sent (also used for SSE error events).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": self.param,
        }})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        let headers = resp.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(retry) = self.should_retry {
            headers.insert(
                HeaderName::from_static("x-should-retry"),
                HeaderValue::from_static(if retry { "true" } else { "false" }),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE
            || self.status == StatusCode::REQUEST_TIMEOUT
        {
            // The rest of the body is not read: say the connection ends, so
            // that the client does not send its next request on it.
            headers.insert(
                axum::http::header::CONNECTION,
                HeaderValue::from_static("close"),
            );
        }
        resp
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::Conflict(what) => ApiError::conflict(what),
            other => ApiError::internal(other),
        }
    }
}

/// The answer to a request body that could not be read: 408 when it stalled
/// past `[server] body_timeout_secs`, 413 over `max_body_bytes`, else 400.
/// Both refusals end the connection (the rest of the body is not read).
pub fn body_read_error(e: &(dyn std::error::Error + 'static)) -> ApiError {
    if caused_by::<crate::server::watch::BodyStalled>(e) {
        request_timeout()
    } else if caused_by::<http_body_util::LengthLimitError>(e) {
        body_too_large()
    } else {
        ApiError::bad_request(format!("Failed to read the request body: {e}"))
    }
}

/// Whether `e`, or an error it was caused by, is a `T`.
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<T>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// 408: the request body stalled.
pub fn request_timeout() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        Some("request_timeout"),
        "The request body stopped arriving ([server] body_timeout_secs); send it again.",
    )
}

/// The answer to a body over `[server] max_body_bytes`.
pub fn body_too_large() -> ApiError {
    body_rejection(StatusCode::PAYLOAD_TOO_LARGE, String::new(), true)
}

fn body_rejection(status: StatusCode, text: String, limit_hint: bool) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE || limit_hint {
        let mut e = ApiError::too_large(0);
        e.message =
            "The request body is larger than the server's limit ([server] max_body_bytes).".into();
        return e;
    }
    ApiError::bad_request(text)
}

/// The field a serde message says is missing (`missing field `password``).
fn missing_field(msg: &str) -> Option<String> {
    msg.split("missing field `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .map(str::to_owned)
}

/// serde echoes the value it refused (`invalid type: string "sk_live_…", expected
/// i64`); a client may have put a key or a password in the wrong field, so only
/// the value's kind is kept (SPEC §3: no error contains a secret).
fn redact_value(msg: &str) -> String {
    for lead in ["invalid type: ", "invalid value: ", "unknown variant "] {
        let Some(rest) = msg.strip_prefix(lead) else {
            continue;
        };
        let Some(i) = rest.rfind(", expected ") else {
            return format!("{}value not accepted", lead);
        };
        let kind = rest[..i]
            .split(['`', '"', '\''])
            .next()
            .unwrap_or("")
            .trim();
        let kind = if lead == "unknown variant " || kind.is_empty() {
            "value".to_owned()
        } else {
            kind.to_owned()
        };
        return format!(
            "{}{kind}{}",
            lead.replace("unknown variant ", "unknown variant: "),
            &rest[i..]
        );
    }
    msg.to_owned()
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::JsonDataError(e) => {
                // serde_path_to_error gives "field: message"; name the field in `param`.
                let text = e.body_text();
                let detail = text.trim_start_matches(
                    "Failed to deserialize the JSON body into the target type: ",
                );
                let (param, msg) = match detail.split_once(": ") {
                    Some((p, m)) if !p.is_empty() && !p.contains(' ') => (Some(p.to_owned()), m),
                    _ => (None, detail),
                };
                let msg = redact_value(msg);
                let mut err = match &param {
                    Some(p) => ApiError::bad_request(format!("Invalid request body: {p}: {msg}")),
                    None => ApiError::bad_request(format!("Invalid request body: {msg}")),
                };
                err.param = param.or_else(|| missing_field(&msg));
                err
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::bad_request(format!("The body is not valid JSON: {}", e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                Some("unsupported_media_type"),
                "Send the body as JSON with 'Content-Type: application/json'.",
            ),
            JsonRejection::BytesRejection(b) if stalled(b) => request_timeout(),
            JsonRejection::BytesRejection(b) => body_rejection(b.status(), b.body_text(), false),
            other => body_rejection(other.status(), other.body_text(), false),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if stalled(&r) {
            return request_timeout();
        }
        body_rejection(r.status(), r.body_text(), false)
    }
}

/// The body could not be read because it stopped arriving.
fn stalled(r: &BytesRejection) -> bool {
    caused_by::<crate::server::watch::BodyStalled>(r)
}

impl From<FormRejection> for ApiError {
    fn from(r: FormRejection) -> Self {
        let text = redact_value(
            r.body_text()
                .trim_start_matches("Failed to deserialize form body: "),
        );
        let mut err = body_rejection(r.status(), format!("Invalid form body: {text}"), false);
        if err.status == StatusCode::BAD_REQUEST {
            err.param = missing_field(&text);
        }
        err
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("Invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        // A path segment that cannot name anything (e.g. /api/keys/abc) is an unknown id.
        ApiError::not_found(format!("Not found: {}", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::{missing_field, redact_value};

    #[test]
    fn refused_values_are_not_echoed() {
        assert_eq!(
            redact_value(
                r#"invalid type: string "sk_live_abc, expected x", expected i64 at line 1 column 9"#
            ),
            "invalid type: string, expected i64 at line 1 column 9"
        );
        assert_eq!(
            redact_value(
                "invalid type: integer `123456789`, expected a string at line 1 column 30"
            ),
            "invalid type: integer, expected a string at line 1 column 30"
        );
        assert_eq!(
            redact_value("invalid type: sequence, expected a string"),
            "invalid type: sequence, expected a string"
        );
        assert_eq!(
            redact_value("unknown variant `hunter2`, expected `a` or `b`"),
            "unknown variant: value, expected `a` or `b`"
        );
        assert_eq!(
            redact_value("missing field `password`"),
            "missing field `password`"
        );
        assert_eq!(
            missing_field("missing field `password` at line 1 column 2").as_deref(),
            Some("password")
        );
    }
}
