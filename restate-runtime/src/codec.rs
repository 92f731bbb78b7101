//! Wire rules for handler payloads: JSON by default, `()` as an empty body, raw bytes on request.

use std::any::TypeId;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// Why a payload could not be decoded: the message is what the caller sees in a 400.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub(crate) String);

/// Why a value could not be encoded as JSON.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot encode value as JSON: {0}")]
pub struct EncodeError(pub(crate) String);

/// Decodes a JSON payload; an empty body decodes as JSON `null`, so `()` and `Option<T>` accept it.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
}

/// Encodes a value as JSON; `()` becomes an empty payload, as Restate's clients expect.
pub(crate) fn encode_json<T: Serialize + 'static>(value: &T) -> Result<Bytes, EncodeError> {
    if TypeId::of::<T>() == TypeId::of::<()>() {
        return Ok(Bytes::new());
    }
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| EncodeError(e.to_string()))
}

/// The exact request body and headers, for handlers that verify signatures over the raw bytes.
///
/// Declare it as the handler's input type; the macro recognises it by name and passes the body
/// through untouched.
///
/// ```
/// use restate_runtime::RawInput;
/// let raw = RawInput::new(restate_runtime::Bytes::from_static(b"{}"), vec![("stripe-signature".into(), "t=1".into())]);
/// assert_eq!(raw.header("Stripe-Signature"), Some("t=1"));
/// assert_eq!(&raw.body()[..], b"{}");
/// ```
#[derive(Debug, Clone, Default)]
pub struct RawInput {
    body: Bytes,
    headers: Vec<(String, String)>,
}

impl RawInput {
    /// Builds a raw input (useful in tests that call handlers directly).
    pub fn new(body: Bytes, headers: Vec<(String, String)>) -> Self {
        Self { body, headers }
    }

    /// The body, byte for byte as it arrived.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request headers, in arrival order, names in lower case.
    pub fn headers(&self) -> &crate::Headers {
        crate::Headers::new(&self.headers)
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name)
    }

    /// Decodes the body as JSON.
    ///
    /// ```
    /// let raw = restate_runtime::RawInput::new(restate_runtime::Bytes::from_static(b"[1,2]"), vec![]);
    /// let v: Vec<u32> = raw.json().unwrap();
    /// assert_eq!(v, vec![1, 2]);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_json(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_is_null() {
        assert_eq!(decode_json::<Option<u32>>(b"").unwrap(), None);
        decode_json::<()>(b"").unwrap();
        assert!(decode_json::<u32>(b"").is_err());
    }

    #[test]
    fn unit_encodes_empty() {
        assert!(encode_json(&()).unwrap().is_empty());
        assert_eq!(&encode_json(&5u8).unwrap()[..], b"5");
    }
}
