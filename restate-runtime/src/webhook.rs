//! Webhook endpoints: signature verification at the ingress (before any invocation exists) and
//! the idempotency key taken from the sender's own event id, so a redelivered event is one
//! invocation.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::clock::now_ms;

/// Where a webhook sender puts its event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventId {
    /// A top-level field of the JSON body (Stripe: `id`).
    JsonField(String),
    /// A request header (Standard Webhooks: `webhook-id`; GitHub: `X-GitHub-Delivery`).
    Header(String),
}

/// How a webhook sender signs its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex hmac-sha256 of "t.body">`, 5-minute tolerance.
    Stripe { secret: String },
}

/// A handler that receives webhooks.
///
/// ```
/// use restate_runtime::webhook::Webhook;
/// let hook = Webhook::stripe(Some("whsec_test".into()));
/// assert!(hook.signature.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where the event id is; it becomes the idempotency key when no header gives one.
    pub event_id: EventId,
    /// Signature scheme and secret; `None` accepts unsigned requests.
    pub signature: Option<Signature>,
}

/// Seconds a Stripe timestamp may differ from now.
const STRIPE_TOLERANCE_SECS: i64 = 300;

impl Webhook {
    /// Stripe's conventions: the event id in the body's `id`, signatures checked when a secret
    /// is given.
    pub fn stripe(secret: Option<String>) -> Self {
        Self {
            event_id: EventId::JsonField("id".into()),
            signature: secret.map(|secret| Signature::Stripe { secret }),
        }
    }

    /// Checks the signature over the exact body; the message says what is wrong.
    pub(crate) fn verify(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Result<(), String> {
        match &self.signature {
            None => Ok(()),
            Some(Signature::Stripe { secret }) => {
                let value = header("stripe-signature").ok_or("missing Stripe-Signature header")?;
                verify_stripe(secret, &value, body, now_ms() as i64 / 1000)
            }
        }
    }

    /// The event id of a request, if the sender gave one.
    pub(crate) fn event_id(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> Option<String> {
        match &self.event_id {
            EventId::Header(name) => header(&name.to_ascii_lowercase()),
            EventId::JsonField(field) => serde_json::from_slice::<serde_json::Value>(body)
                .ok()?
                .get(field)?
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }
    }
}

fn hmac_sha256(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Signs a body as Stripe does (for tests and senders): the `Stripe-Signature` header value.
///
/// ```
/// let header = restate_runtime::webhook::stripe_signature("whsec_x", 1_700_000_000, b"{}");
/// assert!(header.starts_with("t=1700000000,v1="));
/// ```
pub fn stripe_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    format!("t={timestamp},v1={}", hex::encode(mac))
}

fn verify_stripe(secret: &str, header: &str, body: &[u8], now_secs: i64) -> Result<(), String> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", sig)) => candidates.push(sig.to_owned()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("Stripe-Signature has no valid timestamp")?;
    if candidates.is_empty() {
        return Err("Stripe-Signature has no v1 signature".into());
    }
    if (now_secs - timestamp).abs() > STRIPE_TOLERANCE_SECS {
        return Err("Stripe-Signature timestamp is outside the 5-minute tolerance".into());
    }
    let expected = hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    let matches = candidates.iter().any(|c| {
        hex::decode(c)
            .is_ok_and(|given| given.len() == expected.len() && bool::from(given.ct_eq(&expected)))
    });
    if matches {
        Ok(())
    } else {
        Err("Stripe-Signature does not match the body".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_signatures() {
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000;
        let good = stripe_signature("s", now, body);
        assert!(verify_stripe("s", &good, body, now + 10).is_ok());
        assert!(
            verify_stripe("other", &good, body, now)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(verify_stripe("s", &good, br#"{"id":"evt_2"}"#, now).is_err());
        assert!(
            verify_stripe("s", &good, body, now + 301)
                .unwrap_err()
                .contains("tolerance")
        );
        assert!(verify_stripe("s", "t=abc,v1=00", body, now).is_err());
        assert!(verify_stripe("s", &format!("t={now}"), body, now).is_err());
    }

    #[test]
    fn event_ids() {
        let hook = Webhook::stripe(None);
        assert_eq!(
            hook.event_id(|_| None, br#"{"id":"evt_9"}"#).as_deref(),
            Some("evt_9")
        );
        assert_eq!(hook.event_id(|_| None, b"not json"), None);
        let gh = Webhook {
            event_id: EventId::Header("X-GitHub-Delivery".into()),
            signature: None,
        };
        assert_eq!(
            gh.event_id(|h| (h == "x-github-delivery").then(|| "d1".into()), b"")
                .as_deref(),
            Some("d1")
        );
    }
}
