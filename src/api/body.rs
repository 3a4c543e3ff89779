//! Reading request bodies ourselves, so that every failure has our error shape and code
//! (actix's extractors answer in their own words).

use actix_web::HttpRequest;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{Bytes, Payload};
use serde_json::{Map, Value};

use crate::domain::DeviceId;
use crate::error::ApiError;
use crate::registry::Reason;

/// A JSON object body, read up to `limit` bytes.
pub struct JsonBody(Map<String, Value>);

/// A body read in full, not yet parsed.
pub struct RawBody {
    bytes: Bytes,
    /// Whether it was sent as `application/json`.
    json: bool,
}

impl RawBody {
    /// The body as sent, whatever its type (OCSP's DER).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// No body at all. (Whitespace is a body, and not JSON: 400.)
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The JSON object it holds: 415 for any other content type, 400 for bad JSON.
    pub fn json(&self) -> Result<JsonBody, ApiError> {
        if !self.json {
            return Err(ApiError::UnsupportedMediaType);
        }
        JsonBody::parse(&self.bytes)
    }
}

impl JsonBody {
    /// Reads the whole body, refusing more than `limit` bytes (413) or a body still
    /// arriving after `timeout` (408): a slow client must not hold a worker's attention
    /// forever. The body is read before any other check, so that a refusal leaves the
    /// connection clean for the client's next request (keep-alive).
    pub async fn read_raw(
        req: &HttpRequest,
        payload: Payload,
        limit: usize,
        timeout: std::time::Duration,
    ) -> Result<RawBody, ApiError> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let read = tokio::time::timeout(timeout, payload.to_bytes_limited(limit));
        let bytes: Bytes = match read.await {
            Err(_) => return Err(ApiError::RequestTimeout),
            Ok(Ok(Ok(bytes))) => bytes,
            Ok(Ok(Err(e))) => return Err(ApiError::InvalidJson(format!("cannot read body: {e}"))),
            Ok(Err(_)) => return Err(ApiError::PayloadTooLarge(limit)),
        };
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        Ok(RawBody { bytes, json })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::InvalidJson("body must be a JSON object".into())),
            Err(e) => Err(ApiError::InvalidJson(e.to_string())),
        }
    }

    pub fn device_id(&self) -> Result<DeviceId, ApiError> {
        match self.0.get("device_id") {
            Some(Value::String(id)) => DeviceId::parse_new(id).map_err(ApiError::InvalidDeviceId),
            Some(_) => Err(ApiError::InvalidDeviceId("device_id must be a string")),
            None => Err(ApiError::InvalidDeviceId("device_id is required")),
        }
    }

    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// An optional string field: absent or null is `None`, anything but a string is 400.
    pub fn str_field_or_absent(&self, name: &str) -> Result<Option<&str>, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::InvalidJson(format!("{name} must be a string"))),
        }
    }

    /// The optional `reason` (an RFC 5280 §5.3.1 name, `keyCompromise`), `unspecified`
    /// when absent; an unknown name is 400 `invalid_reason`.
    pub fn reason(&self) -> Result<Reason, ApiError> {
        match self.str_field_or_absent("reason")? {
            None => Ok(Reason::Unspecified),
            Some(name) => Reason::parse(name).ok_or(ApiError::InvalidReason),
        }
    }

    /// An optional boolean field: absent or null is `false`, anything but a boolean 400.
    pub fn bool_field_or_absent(&self, name: &str) -> Result<bool, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::InvalidJson(format!(
                "{name} must be true or false"
            ))),
        }
    }
}
