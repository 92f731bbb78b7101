//! A webhook as registered on a handler: the sender's conventions ([`Webhook`]), the older
//! secrets that still verify during a rotation, how long its event ids stay deduplicated, and
//! the checks that make a misconfigured endpoint a build error instead of an open door.

use std::time::Duration;

use super::{EventId, Signature, Webhook, body_digest};
use crate::registry::Registry;

/// How long a webhook's results, and so its event ids, are kept by default: Stripe retries a
/// delivery for up to three days, and a retry after the key is gone would run again.
pub const DEFAULT_KEY_RETENTION: Duration = Duration::from_secs(3 * 24 * 3600);

/// A webhook endpoint: what [`RuntimeBuilder::webhook`](crate::RuntimeBuilder::webhook) takes.
/// A [`Webhook`] converts into one with the defaults.
///
/// ```
/// use std::time::Duration;
/// use restate_runtime::webhook::{Webhook, WebhookEndpoint};
/// // During a secret rotation both secrets verify; event ids are kept for a week.
/// let endpoint: WebhookEndpoint = Webhook::stripe(Some("whsec_new".into()))
///     .also_accept_secret("whsec_old")
///     .keep_keys_for(Duration::from_secs(7 * 24 * 3600));
/// assert!(endpoint.is_verified());
/// assert_eq!(endpoint.key_retention().as_secs(), 7 * 24 * 3600);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    webhook: Webhook,
    /// Secrets that verify besides the webhook's own (a rotation in progress).
    previous_secrets: Vec<String>,
    key_retention: Duration,
}

impl From<Webhook> for WebhookEndpoint {
    fn from(webhook: Webhook) -> Self {
        Self {
            webhook,
            previous_secrets: Vec::new(),
            key_retention: DEFAULT_KEY_RETENTION,
        }
    }
}

impl Webhook {
    /// An endpoint that takes unsigned requests, deduplicated by `event_id` (or a client's
    /// `idempotency-key` header). It is logged at WARN at start, marked in the admin API's
    /// services listing, and never served on the public webhook listener.
    ///
    /// ```
    /// use restate_runtime::webhook::{EventId, Webhook};
    /// // Local testing of a Stripe handler without a signing secret.
    /// let hook = Webhook::unverified(EventId::JsonField("id".into()));
    /// assert!(hook.signature.is_none());
    /// ```
    pub fn unverified(event_id: EventId) -> Self {
        Self {
            event_id,
            signature: None,
        }
    }

    /// See [`WebhookEndpoint::also_accept_secret`].
    ///
    /// ```
    /// use restate_runtime::webhook::Webhook;
    /// let endpoint = Webhook::github(Some("new".into())).also_accept_secret("old");
    /// assert!(endpoint.is_verified());
    /// ```
    pub fn also_accept_secret(self, secret: impl Into<String>) -> WebhookEndpoint {
        WebhookEndpoint::from(self).also_accept_secret(secret)
    }

    /// See [`WebhookEndpoint::keep_keys_for`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use restate_runtime::webhook::Webhook;
    /// let endpoint = Webhook::standard(Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()))
    ///     .keep_keys_for(Duration::from_secs(24 * 3600));
    /// assert_eq!(endpoint.key_retention().as_secs(), 24 * 3600);
    /// ```
    pub fn keep_keys_for(self, retention: Duration) -> WebhookEndpoint {
        WebhookEndpoint::from(self).keep_keys_for(retention)
    }
}

impl WebhookEndpoint {
    /// Also accepts requests signed with `secret` (the old one while a sender rotates).
    ///
    /// ```
    /// use restate_runtime::webhook::{Webhook, WebhookEndpoint};
    /// let endpoint = WebhookEndpoint::from(Webhook::stripe(Some("whsec_new".into())))
    ///     .also_accept_secret("whsec_old");
    /// assert!(endpoint.is_verified());
    /// ```
    pub fn also_accept_secret(mut self, secret: impl Into<String>) -> Self {
        self.previous_secrets.push(secret.into());
        self
    }

    /// How long this endpoint's results, and so its event ids, are kept (default three days,
    /// [`DEFAULT_KEY_RETENTION`]): a redelivery within that time is the same invocation. A
    /// handler's own longer `retention` still counts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use restate_runtime::webhook::{Webhook, WebhookEndpoint};
    /// let endpoint = WebhookEndpoint::from(Webhook::stripe(Some("whsec_x".into())))
    ///     .keep_keys_for(Duration::from_secs(4 * 24 * 3600));
    /// assert_eq!(endpoint.key_retention().as_secs(), 4 * 24 * 3600);
    /// ```
    pub fn keep_keys_for(mut self, retention: Duration) -> Self {
        self.key_retention = retention;
        self
    }

    /// The sender's conventions.
    ///
    /// ```
    /// use restate_runtime::webhook::{EventId, Webhook, WebhookEndpoint};
    /// let endpoint = WebhookEndpoint::from(Webhook::stripe(Some("whsec_x".into())));
    /// assert_eq!(endpoint.webhook().event_id, EventId::JsonField("id".into()));
    /// ```
    pub fn webhook(&self) -> &Webhook {
        &self.webhook
    }

    /// Whether requests must carry a valid signature (and so whether the public webhook
    /// listener may serve the endpoint).
    ///
    /// ```
    /// use restate_runtime::webhook::{EventId, Webhook, WebhookEndpoint};
    /// assert!(!WebhookEndpoint::from(Webhook::unverified(EventId::JsonField("id".into()))).is_verified());
    /// ```
    pub fn is_verified(&self) -> bool {
        self.webhook.signature.is_some()
    }

    /// How long results and event ids are kept.
    ///
    /// ```
    /// use restate_runtime::webhook::{DEFAULT_KEY_RETENTION, Webhook, WebhookEndpoint};
    /// let endpoint = WebhookEndpoint::from(Webhook::stripe(Some("whsec_x".into())));
    /// assert_eq!(endpoint.key_retention(), DEFAULT_KEY_RETENTION);
    /// ```
    pub fn key_retention(&self) -> Duration {
        self.key_retention
    }

    /// The signature scheme's name, `unverified` without one (the admin API shows it).
    pub(crate) fn scheme(&self) -> &'static str {
        match &self.webhook.signature {
            None => "unverified",
            Some(Signature::Stripe { .. }) => "stripe",
            Some(Signature::Standard { .. }) => "standard-webhooks",
            Some(Signature::GitHub { .. }) => "github",
        }
    }

    /// Refuses a configuration that would accept forged requests: a verifying scheme without
    /// a secret, a secret that cannot be a key, an extra secret on an unverified endpoint.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let Some(signature) = &self.webhook.signature else {
            if self.previous_secrets.is_empty() {
                return Ok(());
            }
            return Err("an unverified webhook takes no secrets".into());
        };
        let scheme = self.scheme();
        for secret in std::iter::once(signature.secret())
            .chain(self.previous_secrets.iter().map(String::as_str))
        {
            if secret.trim().is_empty() {
                return Err(format!(
                    "the {scheme} webhook has no signing secret (missing or empty): pass the \
                     secret, or use Webhook::unverified(..) for an endpoint that accepts \
                     unsigned requests"
                ));
            }
            signature.with_secret(secret).check_secret()?;
        }
        Ok(())
    }

    /// Checks the signature with each accepted secret at `now_ms` (the engine's clock); the
    /// first secret's error when none matches. `header` is given lower-case names.
    pub(crate) fn verify(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<(), String> {
        let first = self.webhook.verify(&header, body, now_ms);
        if first.is_ok() {
            return first;
        }
        let Some(signature) = &self.webhook.signature else {
            return first;
        };
        for secret in &self.previous_secrets {
            let older = Webhook {
                event_id: self.webhook.event_id.clone(),
                signature: Some(signature.with_secret(secret)),
            };
            if older.verify(&header, body, now_ms).is_ok() {
                return Ok(());
            }
        }
        first
    }

    /// The idempotency key of a request that passed [`Self::verify`]. A verified endpoint
    /// takes it only from what the signature covers, so a replayed request with fresh
    /// `idempotency-key` headers stays one invocation: the signed event id, else a digest of
    /// the signed body (a redelivery sends the same body). An unverified endpoint takes the
    /// client's header, else the event id, else the body's digest: an event whose id cannot be
    /// read is still processed once per distinct body, never once per delivery.
    pub(crate) fn idempotency_key(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        client_key: Option<String>,
    ) -> Option<String> {
        let hook = &self.webhook;
        let Some(signature) = &hook.signature else {
            return client_key
                .or_else(|| hook.event_id(header, body))
                .or_else(|| Some(body_digest(body)));
        };
        let signed = match (&hook.event_id, signature) {
            (EventId::JsonField(_) | EventId::BodyDigest, _) => true,
            (EventId::Header(name), Signature::Standard { .. }) => {
                name.eq_ignore_ascii_case("webhook-id")
            }
            _ => false,
        };
        signed
            .then(|| hook.event_id(header, body))
            .flatten()
            .or_else(|| Some(body_digest(body)))
    }
}

/// Checks every endpoint against the registered services and its own settings; the error
/// names the endpoint and, for a misspelt target, the closest registered names.
pub(crate) fn check_endpoints<'a>(
    endpoints: impl IntoIterator<Item = (&'a (String, String), &'a WebhookEndpoint)>,
    registry: &Registry,
) -> Result<(), String> {
    for ((service, handler), endpoint) in endpoints {
        let Some(registered) = registry.public(service) else {
            let names: Vec<&str> = registry.definitions().iter().map(|d| d.name).collect();
            return Err(format!(
                "webhook on {service}/{handler}: no service named '{service}'{}",
                closest(service, names)
            ));
        };
        let definition = &registered.definition;
        if endpoint.is_verified() && definition.kind.is_keyed() {
            // The key is in the path, which no scheme signs: a captured event posted to other
            // keys would become other invocations.
            return Err(format!(
                "webhook on {service}/{handler}: '{service}' is a {}, and its key comes from the \
                 request path, which the signature does not cover; receive the event on a \
                 service handler and call the {} from there",
                definition.kind.as_str(),
                definition.kind.as_str()
            ));
        }
        if definition.handler(handler).is_none() {
            let names = definition.handlers.iter().map(|h| h.name);
            return Err(format!(
                "webhook on {service}/{handler}: '{service}' has no handler '{handler}'{}",
                closest(handler, names)
            ));
        }
        endpoint
            .validate()
            .map_err(|e| format!("webhook on {service}/{handler}: {e}"))?;
    }
    Ok(())
}

/// `; did you mean 'a' or 'b'?` for the names nearest to `wanted` (case ignored), or the
/// registered names when none is near.
fn closest<'n>(wanted: &str, names: impl IntoIterator<Item = &'n str>) -> String {
    let wanted_lower = wanted.to_lowercase();
    let mut scored: Vec<(usize, &str)> = names
        .into_iter()
        .map(|n| (strsim::levenshtein(&wanted_lower, &n.to_lowercase()), n))
        .collect();
    scored.sort();
    let near: Vec<String> = scored
        .iter()
        .filter(|(d, _)| *d <= wanted.len().div_ceil(3).max(2))
        .take(3)
        .map(|(_, n)| format!("'{n}'"))
        .collect();
    if near.is_empty() {
        let all: Vec<String> = scored.iter().map(|(_, n)| format!("'{n}'")).collect();
        return format!(" (registered: {})", all.join(", "));
    }
    format!("; did you mean {}?", near.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::super::github_signature;
    use super::*;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn missing_or_empty_secrets_are_refused() {
        for hook in [
            Webhook::stripe(None),
            Webhook::stripe(Some(String::new())),
            Webhook::standard(Some("  ".into())),
            Webhook::github(None),
        ] {
            let err = WebhookEndpoint::from(hook).validate().unwrap_err();
            assert!(err.contains("no signing secret"), "{err}");
            assert!(err.contains("Webhook::unverified"), "{err}");
        }
        for weak in [
            Webhook::standard(Some("whsec_***".into())),
            Webhook::standard(Some("whsec_".into())),
            Webhook::stripe(Some("whsec_".into())),
        ] {
            assert!(WebhookEndpoint::from(weak).validate().is_err());
        }
        let empty_old = Webhook::stripe(Some("whsec_x".into())).also_accept_secret("");
        assert!(empty_old.validate().is_err());
        let unverified = Webhook::unverified(EventId::JsonField("id".into()));
        assert_eq!(WebhookEndpoint::from(unverified.clone()).validate(), Ok(()));
        assert!(unverified.also_accept_secret("x").validate().is_err());
    }

    #[test]
    fn a_rotation_accepts_both_secrets_and_nothing_else() {
        let endpoint = Webhook::github(Some("new".into())).also_accept_secret("old");
        let body = b"{}";
        for (secret, ok) in [("new", true), ("old", true), ("other", false)] {
            let signature = github_signature(secret, body);
            let header = |name: &str| (name == "x-hub-signature-256").then(|| signature.clone());
            let now = crate::clock::now_ms();
            assert_eq!(endpoint.verify(header, body, now).is_ok(), ok, "{secret}");
        }
    }

    #[test]
    fn verified_keys_come_from_signed_material_only() {
        let body = br#"{"id":"evt_1"}"#;
        let stripe = WebhookEndpoint::from(Webhook::stripe(Some("whsec_x".into())));
        // The client's header is ignored: the signed body's id decides.
        let key = stripe.idempotency_key(no_headers, body, Some("fresh".into()));
        assert_eq!(key.as_deref(), Some("evt_1"));
        // No id in the body: a digest of it, the same for a redelivery.
        let digest = stripe.idempotency_key(no_headers, b"{}", Some("fresh".into()));
        assert_eq!(digest, stripe.idempotency_key(no_headers, b"{}", None));
        assert!(digest.unwrap().starts_with("sha256:"));
        // GitHub's delivery id is not signed: the body's digest, whatever the headers say.
        let github = WebhookEndpoint::from(Webhook::github(Some("s".into())));
        let delivery = |id: &'static str| {
            move |name: &str| (name == "x-github-delivery").then(|| id.to_owned())
        };
        assert_eq!(
            github.idempotency_key(delivery("a"), body, None),
            github.idempotency_key(delivery("b"), body, None)
        );
        // Standard Webhooks signs webhook-id.
        let standard = WebhookEndpoint::from(Webhook::standard(Some(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        )));
        let id = |name: &str| (name == "webhook-id").then(|| "msg_1".to_owned());
        assert_eq!(
            standard
                .idempotency_key(id, body, Some("x".into()))
                .as_deref(),
            Some("msg_1")
        );
        // A custom header under a Stripe signature is not signed.
        let custom = WebhookEndpoint::from(Webhook {
            event_id: EventId::Header("x-event-id".into()),
            signature: Some(Signature::Stripe {
                secret: "whsec_x".into(),
            }),
        });
        let forged = |name: &str| (name == "x-event-id").then(|| "chosen".to_owned());
        assert_ne!(
            custom.idempotency_key(forged, body, None).as_deref(),
            Some("chosen")
        );
    }

    #[test]
    fn closest_names_are_suggested() {
        let names = ["WebhookCallbackRouter", "PaymentTracker"];
        assert_eq!(
            closest("WebhookCallbackRouterr", names),
            "; did you mean 'WebhookCallbackRouter'?"
        );
        assert_eq!(
            closest("Zzz", names),
            " (registered: 'PaymentTracker', 'WebhookCallbackRouter')"
        );
    }

    #[test]
    fn unverified_keys_prefer_the_client_header() {
        let hook = WebhookEndpoint::from(Webhook::unverified(EventId::JsonField("id".into())));
        let body = br#"{"id":"evt_1"}"#;
        assert_eq!(
            hook.idempotency_key(no_headers, body, Some("k".into()))
                .as_deref(),
            Some("k")
        );
        assert_eq!(
            hook.idempotency_key(no_headers, body, None).as_deref(),
            Some("evt_1")
        );
        // No readable id: the body's digest, so each redelivery is the same invocation.
        let no_id = br#"{"type":"ping"}"#;
        let key = hook.idempotency_key(no_headers, no_id, None);
        assert_eq!(key, hook.idempotency_key(no_headers, no_id, None));
        assert!(key.is_some());
        assert_ne!(
            key,
            hook.idempotency_key(no_headers, br#"{"type":"pong"}"#, None)
        );
    }
}
