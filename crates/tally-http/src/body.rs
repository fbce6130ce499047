//! The JSON body extractor: 413 past the size limit, 415 for another media type, 400 for malformed
//! JSON, 422 naming the field for JSON of the wrong shape. Keeps the raw bytes for idempotency hashes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// Request bodies over this many bytes are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct JsonBody<T>(pub T, pub Bytes);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(MAX_BODY_BYTES)
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })?;
        let value = parse(&bytes)?;
        Ok(JsonBody(value, bytes))
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is a JSON object. Anything else is refused before serde sees it: serde reads a
    // struct from an array too (its fields by position), which the contract does not offer.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => {}
        Some(_) => {
            check_syntax(bytes)?;
            return Err(ApiError::invalid("body", "must be a JSON object"));
        }
    }
    // Most bodies are good: decode them without tracking the path, which costs an allocation per
    // field; only a body that fails is decoded again to say where.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => {
            de.end()
                .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
            Ok(value)
        }
        Err(e) => {
            // A shape error may come before a syntax error further on; malformed JSON wins (400).
            check_syntax(bytes)?;
            let path = e.path().to_string();
            let message = strip_position(&e.into_inner().to_string());
            Err(ApiError::Invalid(vec![FieldError::new(
                field_of(&path, &message),
                message,
            )]))
        }
    }
}

fn check_syntax(bytes: &[u8]) -> Result<(), ApiError> {
    // JSON text is UTF-8 (RFC 8259); serde skips what it ignores without checking it.
    std::str::from_utf8(bytes)
        .map_err(|e| ApiError::MalformedJson(format!("the body is not UTF-8: {e}")))?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::de::IgnoredAny::deserialize(&mut de)
        .and_then(|_| de.end())
        .map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// The field an error is about: its path, or for a missing field the path of that field.
fn field_of(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    if let Some(name) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        return if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        };
    }
    if parent.is_empty() {
        "body".to_owned()
    } else {
        parent.to_owned()
    }
}

/// serde_json appends " at line 1 column 42" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The query-string extractor: a query that cannot be read (a parameter given twice, say) is a 422
/// problem naming the parameter, instead of axum's plain-text 400. Parameters are read as strings
/// and validated by the handlers, which name the field too.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(QueryParams(value)),
            Err(rejection) => {
                let text = rejection.body_text();
                let message = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text)
                    .to_owned();
                let field = message.split('`').nth(1).unwrap_or("query").to_owned();
                Err(ApiError::Invalid(vec![FieldError::new(field, message)]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// utoipa places parameters by the extractor; with [`super::QueryParams`] it cannot tell, so
    /// each query-parameter struct says `parameter_in = Query`. A parameter documented "in: path"
    /// that is not in the path template is one that forgot.
    #[test]
    fn every_path_parameter_is_in_its_path() {
        let doc = serde_json::to_value(crate::openapi()).expect("the document serializes");
        let paths = doc["paths"].as_object().expect("paths");
        let mut query_params = 0;
        for (path, operations) in paths {
            for (method, op) in operations.as_object().expect("operations") {
                for param in op["parameters"].as_array().into_iter().flatten() {
                    let name = param["name"].as_str().expect("a name");
                    match param["in"].as_str() {
                        Some("path") => assert!(
                            path.contains(&format!("{{{name}}}")),
                            "{method} {path}: {name} is documented in the path"
                        ),
                        Some("query") => query_params += 1,
                        _ => {}
                    }
                }
            }
        }
        assert!(
            query_params >= 15,
            "query parameters documented: {query_params}"
        );
        let date = &doc["paths"]["/v1/reports/daily-sales"]["get"]["parameters"][0];
        assert_eq!(
            (&date["name"], &date["in"], &date["required"]),
            (
                &serde_json::json!("date"),
                &serde_json::json!("query"),
                &serde_json::json!(true)
            )
        );
    }
}
