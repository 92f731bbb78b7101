//! Webhook endpoints: signature verification at the ingress (before any invocation exists) and
//! the idempotency key taken from the sender's own event id, so a redelivered event is one
//! invocation.
//!
//! Three schemes, all HMAC-SHA256 compared in constant time: Stripe ([`Webhook::stripe`]),
//! Standard Webhooks as Svix and others send them ([`Webhook::standard`]) and GitHub
//! ([`Webhook::github`]). The `*_signature` functions sign as the senders do, for tests.
//! Endpoints without signatures are explicit ([`Webhook::unverified`]); the settings of one
//! registered endpoint (rotation, key retention, validation) are in [`WebhookEndpoint`].

mod endpoint;

pub(crate) use endpoint::check_endpoints;
pub use endpoint::{DEFAULT_KEY_RETENTION, WebhookEndpoint};

use crate::mac::same_mac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Sha256;

use crate::mac::hmac_sha256;

/// Where a webhook sender puts its event id.
///
/// ```
/// use restate_runtime::webhook::{EventId, Webhook};
/// // A sender with its own conventions: the event id in `X-Event-Id`, no signature.
/// let hook = Webhook { event_id: EventId::Header("X-Event-Id".into()), signature: None };
/// assert_ne!(hook, Webhook::standard(None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventId {
    /// A top-level field of the JSON body (Stripe: `id`).
    JsonField(String),
    /// A request header (Standard Webhooks: `webhook-id`).
    Header(String),
    /// A SHA-256 digest of the body (GitHub: its `X-GitHub-Delivery` header is not signed,
    /// and a redelivery sends the same body).
    BodyDigest,
}

/// How a webhook sender signs its requests.
///
/// ```
/// use restate_runtime::webhook::{EventId, Signature, Webhook};
/// // A Stripe-style signature on a sender that names its events in a `event_id` field.
/// let hook = Webhook {
///     event_id: EventId::JsonField("event_id".into()),
///     signature: Some(Signature::Stripe { secret: "whsec_test".into() }),
/// };
/// assert!(hook.signature.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// Stripe: `Stripe-Signature: t=<unix>,v1=<hex hmac-sha256 of "t.body">`, 5-minute tolerance.
    Stripe {
        /// The endpoint's signing secret (`whsec_…`), used as is.
        secret: String,
    },
    /// Standard Webhooks (Svix and others): `webhook-id`, `webhook-timestamp` (unix seconds) and
    /// `webhook-signature: v1,<base64 hmac-sha256 of "id.timestamp.body"> ...`, 5-minute
    /// tolerance. The secret is `whsec_<base64 key>`, or the raw key without that prefix.
    Standard {
        /// `whsec_<base64 key>`, or the raw key.
        secret: String,
    },
    /// GitHub: `X-Hub-Signature-256: sha256=<hex hmac-sha256 of body>`. There is no timestamp,
    /// so a captured delivery stays valid; deduplication by a digest of the body limits the harm.
    GitHub {
        /// The webhook's secret, as entered in GitHub's settings.
        secret: String,
    },
}

impl Signature {
    /// The secret this signature is checked with.
    fn secret(&self) -> &str {
        match self {
            Self::Stripe { secret } | Self::Standard { secret } | Self::GitHub { secret } => secret,
        }
    }

    /// The same scheme with another secret (a rotation's older one).
    fn with_secret(&self, secret: &str) -> Self {
        let secret = secret.to_owned();
        match self {
            Self::Stripe { .. } => Self::Stripe { secret },
            Self::Standard { .. } => Self::Standard { secret },
            Self::GitHub { .. } => Self::GitHub { secret },
        }
    }

    /// Whether the secret can be this scheme's key.
    /// Whether the secret can be this scheme's key: a `whsec_` prefix alone, or a Standard
    /// Webhooks key that decodes to nothing, would let anyone sign.
    fn check_secret(&self) -> Result<(), String> {
        let key_len = match self {
            Self::Standard { secret } => standard_key(secret)?.len(),
            Self::Stripe { secret } | Self::GitHub { secret } => secret
                .strip_prefix(STANDARD_SECRET_PREFIX)
                .unwrap_or(secret)
                .trim()
                .len(),
        };
        if key_len == 0 {
            return Err("the webhook secret has no key material after its `whsec_` prefix".into());
        }
        Ok(())
    }
}

/// `sha256:<hex>` of a body: the same delivery body, the same key.
fn body_digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
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
    /// Where the event id is; it becomes the idempotency key (see
    /// [`WebhookEndpoint`] for which ids a verified endpoint trusts).
    pub event_id: EventId,
    /// Signature scheme and secret; `None` accepts unsigned requests (see
    /// [`Webhook::unverified`]).
    pub signature: Option<Signature>,
}

/// Seconds a signed timestamp (Stripe, Standard Webhooks) may differ from now.
const TOLERANCE_SECS: i64 = 300;
/// Prefix of a Standard Webhooks secret whose rest is the base64 key.
const STANDARD_SECRET_PREFIX: &str = "whsec_";

impl Webhook {
    /// Stripe's conventions: the event id in the body's `id`, the `Stripe-Signature` checked
    /// with `secret`. A missing or empty secret fails `build()`: for unsigned local testing
    /// use [`Webhook::unverified`].
    ///
    /// ```
    /// use restate_runtime::webhook::{EventId, Signature, Webhook};
    /// let hook = Webhook::stripe(Some("whsec_test".into()));
    /// assert_eq!(hook.event_id, EventId::JsonField("id".into()));
    /// assert_eq!(hook.signature, Some(Signature::Stripe { secret: "whsec_test".into() }));
    /// ```
    pub fn stripe(secret: Option<String>) -> Self {
        Self {
            event_id: EventId::JsonField("id".into()),
            signature: Some(Signature::Stripe {
                secret: secret.unwrap_or_default(),
            }),
        }
    }

    /// [Standard Webhooks](https://www.standardwebhooks.com/) conventions (Svix and others):
    /// the event id in the signed `webhook-id` header, signatures checked with `secret`. A
    /// missing or empty secret fails `build()`.
    ///
    /// ```
    /// use restate_runtime::webhook::{EventId, Signature, Webhook};
    /// let hook = Webhook::standard(Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()));
    /// assert_eq!(hook.event_id, EventId::Header("webhook-id".into()));
    /// assert!(matches!(hook.signature, Some(Signature::Standard { .. })));
    /// ```
    pub fn standard(secret: Option<String>) -> Self {
        Self {
            event_id: EventId::Header("webhook-id".into()),
            signature: Some(Signature::Standard {
                secret: secret.unwrap_or_default(),
            }),
        }
    }

    /// GitHub's conventions: the `X-Hub-Signature-256` signature checked with `secret`, and
    /// the event identified by a digest of the signed body (`X-GitHub-Delivery` is not signed;
    /// a redelivery sends the same body). A missing or empty secret fails `build()`.
    ///
    /// ```
    /// use restate_runtime::webhook::{EventId, Signature, Webhook};
    /// let hook = Webhook::github(Some("my-secret".into()));
    /// assert_eq!(hook.event_id, EventId::BodyDigest);
    /// assert!(matches!(hook.signature, Some(Signature::GitHub { .. })));
    /// ```
    pub fn github(secret: Option<String>) -> Self {
        Self {
            event_id: EventId::BodyDigest,
            signature: Some(Signature::GitHub {
                secret: secret.unwrap_or_default(),
            }),
        }
    }

    /// Checks the signature over the exact body; the message says what is wrong.
    /// `header` is given lower-case names.
    pub(crate) fn verify(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), String> {
        self.verify_at(header, body, now_ms as i64 / 1000)
    }

    /// [`Self::verify`] against a given clock, so tests can pin `now`.
    fn verify_at(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<(), String> {
        let required =
            |name: &str, shown: &str| header(name).ok_or(format!("missing {shown} header"));
        match &self.signature {
            None => Ok(()),
            Some(Signature::Stripe { secret }) => {
                let value = required("stripe-signature", "Stripe-Signature")?;
                verify_stripe(secret, &value, body, now_secs)
            }
            Some(Signature::Standard { secret }) => {
                let signed = StandardHeaders {
                    id: required("webhook-id", "webhook-id")?,
                    timestamp: required("webhook-timestamp", "webhook-timestamp")?,
                    signatures: required("webhook-signature", "webhook-signature")?,
                };
                verify_standard(secret, &signed, body, now_secs)
            }
            Some(Signature::GitHub { secret }) => {
                let value = required("x-hub-signature-256", "X-Hub-Signature-256")?;
                verify_github(secret, &value, body)
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
            EventId::BodyDigest => Some(body_digest(body)),
            EventId::Header(name) => header(&name.to_ascii_lowercase()),
            EventId::JsonField(field) => json_field(body, field).filter(|s| !s.is_empty()),
        }
    }
}

/// The string in the top-level `field` of a JSON object, read as a handler's typed input reads
/// a body: the other fields are skipped unbuilt, so a lone surrogate escape or deep nesting in
/// a field the handler ignores does not hide the event id (parsing the whole body into a
/// `serde_json::Value` refused both). Of repeated fields the last wins, as in a `Value`.
fn json_field(body: &[u8], field: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

    struct Field<'a>(&'a str);
    impl<'de> DeserializeSeed<'de> for Field<'_> {
        type Value = Option<String>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == self.0 {
                    found = map
                        .next_value::<serde_json::Value>()?
                        .as_str()
                        .map(str::to_owned);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut json = serde_json::Deserializer::from_slice(body);
    let found = Field(field).deserialize(&mut json).ok()?;
    json.end().ok()?;
    found
}

/// Refuses timestamps too far from now either way: old ones are replays, future ones would stay
/// replayable for longer than the tolerance.
fn check_tolerance(header: &str, timestamp: i64, now_secs: i64) -> Result<(), String> {
    if now_secs.abs_diff(timestamp) > TOLERANCE_SECS as u64 {
        return Err(format!(
            "{header} timestamp is outside the 5-minute tolerance"
        ));
    }
    Ok(())
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
    check_tolerance("Stripe-Signature", timestamp, now_secs)?;
    let expected = hmac_sha256(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    let matches = candidates
        .iter()
        .any(|c| hex::decode(c).is_ok_and(|given| same_mac(&given, &expected)));
    if matches {
        Ok(())
    } else {
        Err("Stripe-Signature does not match the body".into())
    }
}

/// The HMAC key of a Standard Webhooks secret: `whsec_` then base64, or raw bytes without the
/// prefix (some senders hand out plain secrets).
fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix(STANDARD_SECRET_PREFIX) {
        Some(encoded) => BASE64.decode(encoded).map_err(|e| {
            format!("the configured webhook secret is not `whsec_` followed by base64: {e}")
        }),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

fn standard_mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    hmac_sha256(
        key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    )
}

/// Signs a body as a Standard Webhooks sender does (for tests and senders): the
/// `webhook-signature` header value for these `webhook-id` and `webhook-timestamp` values.
///
/// # Panics
///
/// If `secret` starts with `whsec_` and the rest is not base64.
///
/// ```
/// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let header = restate_runtime::webhook::standard_signature(secret, "msg_1", 1_700_000_000, b"{}");
/// assert!(header.starts_with("v1,"));
/// ```
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = standard_key(secret).unwrap_or_else(|e| panic!("{e}"));
    format!(
        "v1,{}",
        BASE64.encode(standard_mac(&key, id, timestamp, body))
    )
}

/// The three signed headers of a Standard Webhooks request, as received.
struct StandardHeaders {
    id: String,
    timestamp: String,
    signatures: String,
}

fn verify_standard(
    secret: &str,
    signed: &StandardHeaders,
    body: &[u8],
    now_secs: i64,
) -> Result<(), String> {
    let timestamp = signed
        .timestamp
        .trim()
        .parse::<i64>()
        .map_err(|_| "webhook-timestamp is not a unix time in seconds")?;
    // Space-separated `version,signature` pairs; versions other than v1 (such as the asymmetric
    // v1a) are not ours to check, and a sender rotating secrets sends one per secret.
    let candidates: Vec<&str> = signed
        .signatures
        .split_whitespace()
        .filter_map(|pair| pair.strip_prefix("v1,"))
        .collect();
    if candidates.is_empty() {
        return Err("webhook-signature has no v1 signature".into());
    }
    check_tolerance("webhook-timestamp", timestamp, now_secs)?;
    let expected = standard_mac(&standard_key(secret)?, &signed.id, timestamp, body);
    let matches = candidates.iter().any(|c| {
        BASE64
            .decode(c)
            .is_ok_and(|given| same_mac(&given, &expected))
    });
    if matches {
        Ok(())
    } else {
        Err("webhook-signature does not match the body".into())
    }
}

/// Signs a body as GitHub does (for tests and senders): the `X-Hub-Signature-256` header value.
///
/// ```
/// let header = restate_runtime::webhook::github_signature("my-secret", b"{}");
/// assert!(header.starts_with("sha256="));
/// ```
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

fn verify_github(secret: &str, header: &str, body: &[u8]) -> Result<(), String> {
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or("X-Hub-Signature-256 is not `sha256=` followed by a hex digest")?;
    let expected = hmac_sha256(secret.as_bytes(), &[body]);
    if same_mac(&given, &expected) {
        Ok(())
    } else {
        Err("X-Hub-Signature-256 does not match the body".into())
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

    const NOW: i64 = 1_700_000_000;

    /// A `header` closure over fixed (lower-case) headers, as the ingress passes them.
    fn headers(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn standard_request(
        secret: &str,
        id: &str,
        ts: i64,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                standard_signature(secret, id, ts, body),
            ),
        ]
    }

    #[test]
    fn standard_signature_matches_the_published_example() {
        // The example of the Standard Webhooks specification and Svix's documentation.
        let sig = standard_signature(
            STANDARD_SECRET,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn standard_signatures() {
        let hook = Webhook::standard(Some(STANDARD_SECRET.into()));
        let body = br#"{"type":"invoice.paid"}"#;
        let good = standard_request(STANDARD_SECRET, "msg_1", NOW, body);
        let check =
            |h: &[(&str, String)], body: &[u8], now: i64| hook.verify_at(headers(h), body, now);
        assert_eq!(check(&good, body, NOW + 10), Ok(()));
        assert_eq!(check(&good, body, NOW - 10), Ok(()));
        let mismatch = |r: Result<(), String>| r.unwrap_err().contains("does not match");
        // Tampered body, id or timestamp: all three are signed.
        assert!(mismatch(check(&good, br#"{"type":"invoice.void"}"#, NOW)));
        let mut other_id = good.clone();
        other_id[0].1 = "msg_2".into();
        assert!(mismatch(check(&other_id, body, NOW)));
        let mut other_ts = good.clone();
        other_ts[1].1 = (NOW + 1).to_string();
        assert!(mismatch(check(&other_ts, body, NOW)));
        // Wrong secret.
        let wrong = standard_request("whsec_b3RoZXI=", "msg_1", NOW, body);
        assert!(mismatch(check(&wrong, body, NOW)));
        // Stale, and too far in the future.
        let stale = check(&good, body, NOW + 301).unwrap_err();
        assert!(stale.contains("tolerance"), "{stale}");
        assert!(
            check(&good, body, NOW - 301)
                .unwrap_err()
                .contains("tolerance")
        );
        // Missing headers, each named.
        for (i, name) in ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .into_iter()
            .enumerate()
        {
            let mut partial = good.clone();
            partial.remove(i);
            assert_eq!(
                check(&partial, body, NOW),
                Err(format!("missing {name} header"))
            );
        }
        // Malformed values.
        let mut bad_ts = good.clone();
        bad_ts[1].1 = "yesterday".into();
        assert!(check(&bad_ts, body, NOW).unwrap_err().contains("unix time"));
        let mut no_v1 = good.clone();
        no_v1[2].1 = "v1a,abc v2,def".into();
        assert!(
            check(&no_v1, body, NOW)
                .unwrap_err()
                .contains("no v1 signature")
        );
        let mut not_base64 = good.clone();
        not_base64[2].1 = "v1,%%%".into();
        assert!(mismatch(check(&not_base64, body, NOW)));
        // Several signatures (a sender rotating secrets): one matching is enough.
        let mut rotated = good.clone();
        let other = standard_signature("whsec_b3RoZXI=", "msg_1", NOW, body);
        rotated[2].1 = format!("v1a,xyz {other} {}", good[2].1);
        assert_eq!(check(&rotated, body, NOW), Ok(()));
        rotated[2].1 = format!("{other} v1,AAAA");
        assert!(mismatch(check(&rotated, body, NOW)));
    }

    #[test]
    fn standard_secrets() {
        // Without the prefix the secret is the raw key.
        let hook = Webhook::standard(Some("plain-secret".into()));
        let body = b"{}";
        let h = standard_request("plain-secret", "msg_1", NOW, body);
        assert_eq!(hook.verify_at(headers(&h), body, NOW), Ok(()));
        assert_eq!(standard_key("whsec_b3RoZXI="), Ok(b"other".to_vec()));
        // A misconfigured secret refuses everything, saying why.
        let broken = Webhook::standard(Some("whsec_not base64!".into()));
        let err = broken.verify_at(headers(&h), body, NOW).unwrap_err();
        assert!(err.contains("not `whsec_` followed by base64"), "{err}");
    }

    #[test]
    fn github_signature_matches_the_published_example() {
        // The example of GitHub's "Validating webhook deliveries".
        assert_eq!(
            github_signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn github_signatures() {
        let hook = Webhook::github(Some("gh-secret".into()));
        let body = br#"{"action":"opened"}"#;
        let check = |sig: Option<String>, body: &[u8]| {
            let h: Vec<_> = sig
                .map(|s| ("x-hub-signature-256", s))
                .into_iter()
                .collect();
            hook.verify_at(headers(&h), body, NOW)
        };
        let good = github_signature("gh-secret", body);
        assert_eq!(check(Some(good.clone()), body), Ok(()));
        // Upper-case hex is the same digest; no timestamp, so no staleness.
        assert_eq!(
            check(
                Some(good.to_uppercase().replace("SHA256=", "sha256=")),
                body
            ),
            Ok(())
        );
        assert_eq!(
            hook.verify_at(headers(&[("x-hub-signature-256", good.clone())]), body, 0),
            Ok(())
        );
        let mismatch = |r: Result<(), String>| r.unwrap_err().contains("does not match");
        assert!(mismatch(check(
            Some(good.clone()),
            br#"{"action":"closed"}"#
        )));
        assert!(mismatch(check(Some(github_signature("other", body)), body)));
        assert!(mismatch(check(Some(format!("{good}00")), body)));
        assert_eq!(
            check(None, body),
            Err("missing X-Hub-Signature-256 header".into())
        );
        // The SHA-1 header's format, or no hex: malformed.
        for bad in ["sha1=abc", &good[7..], "sha256=xyz"] {
            assert!(
                check(Some(bad.into()), body)
                    .unwrap_err()
                    .contains("not `sha256=`")
            );
        }
        // GitHub sends one signature; a list is not a valid value.
        let list = format!("{},{good}", github_signature("other", body));
        assert!(check(Some(list), body).is_err());
    }

    #[test]
    fn unverified_hooks_accept_anything() {
        let hook = Webhook::unverified(EventId::Header("x-event-id".into()));
        assert_eq!(hook.verify_at(|_| None, b"x", NOW), Ok(()));
    }

    #[test]
    fn event_ids() {
        let hook = Webhook::stripe(None);
        assert_eq!(
            hook.event_id(|_| None, br#"{"id":"evt_9"}"#).as_deref(),
            Some("evt_9")
        );
        assert_eq!(hook.event_id(|_| None, b"not json"), None);
        assert_eq!(hook.event_id(|_| None, br#"{"id":"evt_9"} x"#), None);
        assert_eq!(hook.event_id(|_| None, br#"{"id":7}"#), None);
        assert_eq!(
            hook.event_id(|_| None, br#"{"id":"a","id":"b"}"#)
                .as_deref(),
            Some("b")
        );
        // What a typed input skips does not hide the id: a lone surrogate (a string cut in
        // the middle of an emoji by JavaScript) and nesting deeper than serde_json's limit.
        let deep = format!(
            r#"{{"id":"evt_9","x":{}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for body in [
            br#"{"note":"\ud83d","id":"evt_9"}"#.as_slice(),
            deep.as_bytes(),
        ] {
            assert!(serde_json::from_slice::<serde_json::Value>(body).is_err());
            assert_eq!(hook.event_id(|_| None, body).as_deref(), Some("evt_9"));
        }
        let custom = Webhook::unverified(EventId::Header("X-Event-Id".into()));
        assert_eq!(
            custom
                .event_id(|h| (h == "x-event-id").then(|| "d1".into()), b"")
                .as_deref(),
            Some("d1")
        );
        let gh = Webhook::github(Some("s".into()));
        assert_eq!(gh.event_id(|_| None, b"a"), gh.event_id(|_| None, b"a"));
        assert_ne!(gh.event_id(|_| None, b"a"), gh.event_id(|_| None, b"b"));
        let std = Webhook::standard(None);
        assert_eq!(
            std.event_id(|h| (h == "webhook-id").then(|| "msg_1".into()), b"")
                .as_deref(),
            Some("msg_1")
        );
    }
}
