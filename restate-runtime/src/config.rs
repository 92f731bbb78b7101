//! Runtime settings: builder values are defaults, `RESTATE_*` environment variables override them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Headers kept out of invocations by default: credentials, cookies and the webhook signature
/// headers (checked before they are dropped).
///
/// ```
/// assert!(restate_runtime::DEFAULT_SECRET_HEADERS.contains(&"authorization"));
/// ```
pub const DEFAULT_SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "stripe-signature",
    "webhook-signature",
    "x-hub-signature",
    "x-hub-signature-256",
];

/// Every setting of a runtime.
///
/// ```
/// use restate_runtime::Config;
/// let config = Config::default();
/// assert_eq!(config.ingress_addr.to_string(), "127.0.0.1:8080");
/// assert_eq!(config.default_retention.as_secs(), 24 * 3600);
/// assert_eq!(config.admin_token, None); // the admin API is open unless a token is set
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Data folder (`RESTATE_DATA_DIR`, default `./data`), unless a database is set.
    pub data_dir: PathBuf,
    /// A PostgreSQL database instead of the data folder (`RESTATE_DATABASE_URL`, such as
    /// `postgres://user:password@host:5432/app`; needs the `postgres` feature). With it set,
    /// `data_dir` is not used.
    pub database_url: Option<String>,
    /// With a database: how long this process's lease on it lasts without a renewal
    /// (`RESTATE_LEASE_TTL`, default 10s). A paused or cut-off process is taken over this long
    /// after its last commit, and then commits nothing more.
    pub lease_ttl: Duration,
    /// Ingress listen address (`RESTATE_INGRESS_ADDR`, default `127.0.0.1:8080`).
    pub ingress_addr: SocketAddr,
    /// With a database: the `http://` URL the other processes reach this one's ingress at
    /// (`RESTATE_ADVERTISED_INGRESS_URL`); they relay the calls for the partitions this one
    /// runs to it. Unset: `http://` and the bound address, unless that is every interface
    /// (`0.0.0.0`, `::`): such a process is reached through the inboxes only.
    pub advertised_ingress_url: Option<String>,
    /// The public webhook listener (`RESTATE_WEBHOOK_ADDR`, off unless set): only verified
    /// webhooks are served there, every other path is a 404.
    pub webhook_addr: Option<SocketAddr>,
    /// When set, the ingress requires `Authorization: Bearer <token>` on every route but
    /// `/restate/health` (`RESTATE_INGRESS_TOKEN`).
    pub ingress_token: Option<String>,
    /// Admin listen address (`RESTATE_ADMIN_ADDR`, default `127.0.0.1:9070`; an address that
    /// is not loopback needs an admin token).
    pub admin_addr: SocketAddr,
    /// When set, the admin API requires `Authorization: Bearer <token>` on every route but
    /// `/health` (`RESTATE_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// Request headers never stored with an invocation nor shown to its handler
    /// (`RESTATE_SECRET_HEADERS`, comma-separated, adds to it; default
    /// [`DEFAULT_SECRET_HEADERS`]).
    pub secret_headers: Vec<String>,
    /// Largest accepted request body in bytes (`RESTATE_MAX_BODY_BYTES`, default 10 MiB).
    pub max_body_bytes: usize,
    /// Largest body the public webhook listener reads (`RESTATE_WEBHOOK_MAX_BODY_BYTES`,
    /// default 1 MiB, never above `max_body_bytes`): it reads a body before the signature can
    /// be checked, from anyone.
    pub webhook_max_body_bytes: usize,
    /// Connections each listener serves at once (`RESTATE_MAX_CONNECTIONS`, default 4096,
    /// kept below the open-file limit): more are answered `429` and closed.
    pub max_connections: usize,
    /// Requests each listener serves at once (`RESTATE_MAX_IN_FLIGHT`, default 128): more are
    /// answered `429` with `Retry-After`. With the body limit, this bounds the memory that
    /// request bodies take.
    pub max_in_flight: usize,
    /// Time for a request head to arrive, and for an idle keep-alive connection to send the
    /// next one (`RESTATE_HEADER_TIMEOUT`, default 10s).
    pub header_timeout: Duration,
    /// Time for a request body to arrive (`RESTATE_BODY_TIMEOUT`, default 30s): a slower one
    /// is answered `408`.
    pub body_timeout: Duration,
    /// How long finished invocations keep their result (`RESTATE_RETENTION`, default 24 h).
    pub default_retention: Duration,
    /// How often expired invocations are purged (`RESTATE_PURGE_INTERVAL`, default 1 s): an
    /// idempotency key is forgotten at most this long after its retention ends.
    pub purge_interval: Duration,
    /// How long a handler waits (timer, call, awakeable, promise) before it is suspended: its
    /// task and memory released until the wait completes (`RESTATE_SUSPEND_AFTER`, default 10s).
    pub suspend_after: Duration,
    /// redb page cache in bytes (`RESTATE_CACHE_BYTES`, default 64 MiB).
    pub cache_bytes: usize,
    /// Partitions of a new data folder (`RESTATE_PARTITIONS`, default 256; an existing folder
    /// keeps its own).
    pub partitions: u32,
    /// Free disk space kept for work already accepted (`RESTATE_MIN_FREE_DISK_BYTES`, default
    /// 32 MiB; 0 turns the check off): below it new invocations are refused with 503, and a
    /// start waits, logging why, until that much is free.
    pub min_free_disk_bytes: u64,
    /// Bytes of writes waiting for the journal writer above which new invocations from
    /// outside are answered 429 (`RESTATE_WRITER_QUEUE_BYTES`, default 64 MiB).
    pub writer_queue_bytes: usize,
    /// Bytes one journal commit takes at most (`RESTATE_COMMIT_GROUP_BYTES`, default 8 MiB).
    pub commit_group_bytes: usize,
    /// Invocations found unfinished at start that may be back in memory at once
    /// (`RESTATE_RECOVERY_CONCURRENCY`, default 256); the rest are restored as those finish or
    /// suspend.
    pub recovery_concurrency: usize,
    /// Attempts of one invocation in a row that the process may end during (a crash, the OOM
    /// killer, a machine lost, a takeover) before it is paused instead of run again
    /// (`RESTATE_MAX_INTERRUPTED_ATTEMPTS`, default 20; 0: never paused for it). An attempt
    /// whose journal got further than the one before it starts the count afresh.
    pub max_interrupted_attempts: u32,
    /// Input bytes the invocations in memory may hold before new invocations from outside are
    /// answered `429` (`RESTATE_MAX_INVOCATION_BYTES`, default 128 MiB).
    pub max_invocation_bytes: usize,
    /// Bytes of response bodies each listener holds until their clients take them
    /// (`RESTATE_UNSENT_RESPONSE_BYTES`, default 128 MiB): beyond it an attach or an output
    /// of more than 16 KiB is answered `429` with `Retry-After` (an invocation's result is
    /// always sent); a body no client takes for the body timeout closes its connection.
    pub unsent_response_bytes: usize,
    /// How far ahead timers (delayed starts, suspended sleeps) are held in memory
    /// (`RESTATE_TIMER_WINDOW`, default 60s); later ones wait in the store's due-time index.
    pub timer_window: Duration,
    /// The application version recorded on every invocation this process accepts
    /// (`RESTATE_APP_VERSION`); `None`: the declaring crates' version plus a hash of the
    /// registered services and their handlers' signatures.
    pub app_version: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            lease_ttl: Duration::from_secs(10),
            ingress_addr: ([127, 0, 0, 1], 8080).into(),
            advertised_ingress_url: None,
            webhook_addr: None,
            ingress_token: None,
            admin_addr: ([127, 0, 0, 1], 9070).into(),
            admin_token: None,
            secret_headers: DEFAULT_SECRET_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            max_body_bytes: 10 * 1024 * 1024,
            webhook_max_body_bytes: 1024 * 1024,
            max_connections: 4096,
            max_in_flight: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            default_retention: Duration::from_secs(24 * 3600),
            purge_interval: Duration::from_secs(1),
            suspend_after: Duration::from_secs(10),
            cache_bytes: 64 * 1024 * 1024,
            partitions: 256,
            min_free_disk_bytes: crate::storage::DEFAULT_MIN_FREE_BYTES,
            writer_queue_bytes: crate::storage::DEFAULT_MAX_QUEUED_BYTES,
            commit_group_bytes: crate::storage::DEFAULT_MAX_GROUP_BYTES,
            recovery_concurrency: crate::engine::DEFAULT_RECOVERY_CONCURRENCY,
            max_interrupted_attempts: crate::engine::DEFAULT_MAX_INTERRUPTED_ATTEMPTS,
            max_invocation_bytes: 128 * 1024 * 1024,
            unsent_response_bytes: 128 * 1024 * 1024,
            timer_window: crate::engine::DEFAULT_TIMER_WINDOW,
            app_version: None,
        }
    }
}

/// Variables whose values are secrets: logged as set, never shown.
const SECRET_VARIABLES: &[&str] = &[
    "RESTATE_INGRESS_TOKEN",
    "RESTATE_ADMIN_TOKEN",
    "RESTATE_DATABASE_URL",
];

/// `NAME=value` pairs for the log, secrets masked (not even their length is shown).
fn describe_overrides(applied: &[(&'static str, String)]) -> String {
    applied
        .iter()
        .map(|(name, value)| {
            if SECRET_VARIABLES.contains(name) {
                format!("{name}=<set>")
            } else {
                format!("{name}={value:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `RESTATE_*` variable that does not parse, or a setting (from its variable or from the
/// builder) outside its bounds.
///
/// ```
/// use std::time::Duration;
/// let refused = restate_runtime::Runtime::builder()
///     .purge_interval(Duration::ZERO)
///     .build();
/// let err = refused.err().expect("a purge that never pauses is refused").to_string();
/// assert!(err.contains("RESTATE_PURGE_INTERVAL") && err.contains("builder method"), "{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{origin} {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    origin: Origin,
    name: &'static str,
    value: String,
    reason: String,
}

/// Where a refused value came from, as its error names it.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A variable that did not parse.
    Variable,
    /// A value checked after the builder's and the variables' were merged: either set it.
    Setting,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Variable => "environment variable",
            Origin::Setting => "setting (environment variable or builder method)",
        })
    }
}

impl Config {
    /// Applies the `RESTATE_*` environment variables over these values.
    ///
    /// ```
    /// let mut config = restate_runtime::Config::default();
    /// // A typo such as RESTATE_RETENTION=1 (no unit) is an error, not a silent default.
    /// if let Err(e) = config.apply_env() {
    ///     eprintln!("{e}");
    /// }
    /// ```
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply(|name| std::env::var(name).ok()).map(drop)
    }

    /// Like [`apply_env`](Self::apply_env), and logs once which variables it applied, with
    /// their values (tokens masked): a value that overrides the builder's is never a surprise.
    pub(crate) fn apply_env_logged(&mut self) -> Result<(), ConfigError> {
        let applied = self.apply(|name| std::env::var(name).ok())?;
        if !applied.is_empty() {
            tracing::info!(
                variables = %describe_overrides(&applied),
                "settings from the environment (over the builder's values)"
            );
        }
        Ok(())
    }

    /// Applies the variables `var` finds; returns the names and values it applied, in order.
    fn apply(
        &mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(&'static str, String)>, ConfigError> {
        let applied = std::cell::RefCell::new(Vec::new());
        let var = |name: &'static str| {
            let value = var(name);
            if let Some(v) = &value {
                applied.borrow_mut().push((name, v.clone()));
            }
            value
        };
        fn parse<T>(
            name: &'static str,
            value: String,
            f: impl FnOnce(&str) -> Result<T, String>,
        ) -> Result<T, ConfigError> {
            f(&value).map_err(|reason| ConfigError {
                origin: Origin::Variable,
                name,
                value,
                reason,
            })
        }
        let addr = |s: &str| s.parse::<SocketAddr>().map_err(|e| e.to_string());
        let int = |s: &str| s.parse::<u64>().map_err(|e| e.to_string());
        let size = |s: &str| s.parse::<usize>().map_err(|e| e.to_string());
        if let Some(v) = var("RESTATE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("RESTATE_APP_VERSION").filter(|v| !v.is_empty()) {
            self.app_version = Some(v);
        }
        if let Some(v) = var("RESTATE_DATABASE_URL").filter(|v| !v.is_empty()) {
            self.database_url = Some(v);
        }
        if let Some(v) = var("RESTATE_LEASE_TTL") {
            self.lease_ttl = parse("RESTATE_LEASE_TTL", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_INGRESS_ADDR") {
            self.ingress_addr = parse("RESTATE_INGRESS_ADDR", v, addr)?;
        }
        if let Some(v) = var("RESTATE_ADVERTISED_INGRESS_URL").filter(|v| !v.is_empty()) {
            self.advertised_ingress_url = Some(v);
        }
        if let Some(v) = var("RESTATE_WEBHOOK_ADDR").filter(|v| !v.is_empty()) {
            self.webhook_addr = Some(parse("RESTATE_WEBHOOK_ADDR", v, addr)?);
        }
        // Set but empty is kept, for `check` to refuse: dropped, the log would say it is set
        // while the port is open.
        if let Some(v) = var("RESTATE_INGRESS_TOKEN") {
            self.ingress_token = Some(v);
        }
        if let Some(v) = var("RESTATE_ADMIN_ADDR") {
            self.admin_addr = parse("RESTATE_ADMIN_ADDR", v, addr)?;
        }
        if let Some(v) = var("RESTATE_ADMIN_TOKEN") {
            self.admin_token = Some(v);
        }
        // Added to the list, never replacing it: naming one more header must not store the
        // credentials and signatures the defaults keep out.
        if let Some(v) = var("RESTATE_SECRET_HEADERS") {
            for header in v.split(',').map(|h| h.trim().to_ascii_lowercase()) {
                if !header.is_empty() && !self.secret_headers.contains(&header) {
                    self.secret_headers.push(header);
                }
            }
        }
        if let Some(v) = var("RESTATE_MAX_BODY_BYTES") {
            self.max_body_bytes = parse("RESTATE_MAX_BODY_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_WEBHOOK_MAX_BODY_BYTES") {
            self.webhook_max_body_bytes = parse("RESTATE_WEBHOOK_MAX_BODY_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_MAX_CONNECTIONS") {
            self.max_connections = parse("RESTATE_MAX_CONNECTIONS", v, size)?;
        }
        if let Some(v) = var("RESTATE_MAX_IN_FLIGHT") {
            self.max_in_flight = parse("RESTATE_MAX_IN_FLIGHT", v, size)?;
        }
        if let Some(v) = var("RESTATE_HEADER_TIMEOUT") {
            self.header_timeout = parse("RESTATE_HEADER_TIMEOUT", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_BODY_TIMEOUT") {
            self.body_timeout = parse("RESTATE_BODY_TIMEOUT", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_RETENTION") {
            self.default_retention = parse("RESTATE_RETENTION", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_PURGE_INTERVAL") {
            self.purge_interval = parse("RESTATE_PURGE_INTERVAL", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_SUSPEND_AFTER") {
            self.suspend_after = parse("RESTATE_SUSPEND_AFTER", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_CACHE_BYTES") {
            self.cache_bytes = parse("RESTATE_CACHE_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_MIN_FREE_DISK_BYTES") {
            self.min_free_disk_bytes = parse("RESTATE_MIN_FREE_DISK_BYTES", v, int)?;
        }
        if let Some(v) = var("RESTATE_WRITER_QUEUE_BYTES") {
            self.writer_queue_bytes = parse("RESTATE_WRITER_QUEUE_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_COMMIT_GROUP_BYTES") {
            self.commit_group_bytes = parse("RESTATE_COMMIT_GROUP_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_RECOVERY_CONCURRENCY") {
            self.recovery_concurrency = parse("RESTATE_RECOVERY_CONCURRENCY", v, size)?;
        }
        if let Some(v) = var("RESTATE_MAX_INTERRUPTED_ATTEMPTS") {
            self.max_interrupted_attempts = parse("RESTATE_MAX_INTERRUPTED_ATTEMPTS", v, |s| {
                s.parse::<u32>().map_err(|e| e.to_string())
            })?;
        }
        if let Some(v) = var("RESTATE_MAX_INVOCATION_BYTES") {
            self.max_invocation_bytes = parse("RESTATE_MAX_INVOCATION_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_UNSENT_RESPONSE_BYTES") {
            self.unsent_response_bytes = parse("RESTATE_UNSENT_RESPONSE_BYTES", v, size)?;
        }
        if let Some(v) = var("RESTATE_TIMER_WINDOW") {
            self.timer_window = parse("RESTATE_TIMER_WINDOW", v, crate::duration::parse)?;
        }
        if let Some(v) = var("RESTATE_PARTITIONS") {
            self.partitions = parse("RESTATE_PARTITIONS", v, |s| {
                s.parse::<u32>().map_err(|e| e.to_string())
            })?;
        }
        self.check_bounds()?;
        Ok(applied.into_inner())
    }

    /// Where invocations are stored, for the log: the data folder, or the database without
    /// its password.
    pub(crate) fn store_description(&self) -> String {
        match &self.database_url {
            Some(url) => redact_password(url),
            None => self.data_dir.display().to_string(),
        }
    }

    /// Refuses values out of their bounds, and settings that would expose what must stay
    /// private: an admin API off loopback without a token.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        self.check_bounds()?;
        for (name, token) in [
            ("RESTATE_ADMIN_TOKEN", &self.admin_token),
            ("RESTATE_INGRESS_TOKEN", &self.ingress_token),
        ] {
            let refused = token.as_deref().and_then(|t| {
                if t.trim().is_empty() {
                    Some("an empty token would let anyone in: set a secret, or none")
                } else if t.trim() != t || t.chars().any(char::is_control) {
                    // Found from outside: a secret file's final newline started a process
                    // that then refused every request, its own CLI's too.
                    Some(
                        "a token with spaces or a line break around it, or a control character \
                         in it, cannot be sent in an `Authorization` header: remove them (a \
                         secret file's final newline, say)",
                    )
                } else {
                    None
                }
            });
            if let Some(reason) = refused {
                return Err(ConfigError {
                    origin: Origin::Setting,
                    name,
                    value: String::new(),
                    reason: reason.into(),
                });
            }
        }
        if let Some(url) = &self.advertised_ingress_url
            && let Err(reason) = advertised_url(url)
        {
            return Err(ConfigError {
                origin: Origin::Setting,
                name: "RESTATE_ADVERTISED_INGRESS_URL",
                value: url.clone(),
                reason,
            });
        }
        if !self.admin_addr.ip().is_loopback() && self.admin_token.is_none() {
            return Err(ConfigError {
                origin: Origin::Setting,
                name: "RESTATE_ADMIN_ADDR",
                value: self.admin_addr.to_string(),
                reason: "not a loopback address: the admin API controls every invocation, so \
                         set RESTATE_ADMIN_TOKEN to expose it"
                    .into(),
            });
        }
        Ok(())
    }

    /// Refuses values out of their bounds, set by a variable or in code alike: no limit of
    /// zero, a purge that pauses, a lease between 100 ms and 24 h.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("RESTATE_MAX_CONNECTIONS", self.max_connections),
            ("RESTATE_MAX_IN_FLIGHT", self.max_in_flight),
            ("RESTATE_WRITER_QUEUE_BYTES", self.writer_queue_bytes),
            ("RESTATE_COMMIT_GROUP_BYTES", self.commit_group_bytes),
            ("RESTATE_RECOVERY_CONCURRENCY", self.recovery_concurrency),
            ("RESTATE_MAX_INVOCATION_BYTES", self.max_invocation_bytes),
            ("RESTATE_UNSENT_RESPONSE_BYTES", self.unsent_response_bytes),
            ("RESTATE_PARTITIONS", self.partitions as usize),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    origin: Origin::Setting,
                    name,
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.purge_interval.is_zero() {
            // A purge loop without a pause would spin on a core.
            return Err(ConfigError {
                origin: Origin::Setting,
                name: "RESTATE_PURGE_INTERVAL",
                value: "0s".into(),
                reason: "must be more than zero".into(),
            });
        }
        if self.lease_ttl < Duration::from_millis(100)
            || self.lease_ttl > Duration::from_secs(24 * 3600)
        {
            return Err(ConfigError {
                origin: Origin::Setting,
                name: "RESTATE_LEASE_TTL",
                value: format!("{:?}", self.lease_ttl),
                reason: "must be between 100ms and 24h".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_set_in_code_are_bounded_as_their_variables_are() {
        assert!(Config::default().check().is_ok());
        let zero_connections = Config {
            max_connections: 0,
            ..Config::default()
        };
        let err = zero_connections.check().unwrap_err().to_string();
        assert!(
            err.contains("RESTATE_MAX_CONNECTIONS") && err.contains("at least 1"),
            "{err}"
        );
        let no_pause = Config {
            purge_interval: Duration::ZERO,
            ..Config::default()
        };
        let err = no_pause.check().unwrap_err().to_string();
        assert!(err.contains("RESTATE_PURGE_INTERVAL"), "{err}");
        // Not blamed on a variable that may not be set at all.
        assert!(
            err.starts_with("setting (environment variable or builder method)"),
            "{err}"
        );
        let no_partitions = Config {
            partitions: 0,
            ..Config::default()
        };
        assert!(no_partitions.check().is_err());
        let tiny_lease = Config {
            lease_ttl: Duration::from_millis(1),
            ..Config::default()
        };
        let err = tiny_lease.check().unwrap_err().to_string();
        assert!(err.contains("RESTATE_LEASE_TTL"), "{err}");
    }

    #[test]
    fn an_admin_address_off_loopback_needs_a_token() {
        let mut c = Config::default();
        assert!(c.check().is_ok());
        c.admin_addr = ([0, 0, 0, 0], 9070).into();
        let err = c.check().unwrap_err().to_string();
        assert!(err.contains("RESTATE_ADMIN_TOKEN"), "{err}");
        c.admin_token = Some(" ".into());
        assert!(c.check().is_err(), "a blank token is no token");
        c.admin_token = Some("t".into());
        assert!(c.check().is_ok());
    }

    #[test]
    fn a_token_no_request_could_carry_is_refused_at_start() {
        for token in ["s3cret\n", " s3cret", "s3cret ", "s3\tcret", "s3\rcret"] {
            let c = Config {
                ingress_token: Some(token.into()),
                ..Config::default()
            };
            let err = c.check().unwrap_err().to_string();
            assert!(
                err.contains("RESTATE_INGRESS_TOKEN") && err.contains("line break"),
                "{token:?}: {err}"
            );
        }
        let inner_space = Config {
            admin_token: Some("s3 cret".into()),
            ..Config::default()
        };
        assert!(inner_space.check().is_ok());
    }

    #[test]
    fn env_overrides_defaults_and_reports_bad_values() {
        let mut c = Config::default();
        c.apply(|n| match n {
            "RESTATE_INGRESS_ADDR" => Some("127.0.0.1:1234".into()),
            "RESTATE_RETENTION" => Some("1h".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.ingress_addr.port(), 1234);
        assert_eq!(
            c.apply(|n| match n {
                "RESTATE_ADMIN_TOKEN" => Some("s3cret-token".into()),
                "RESTATE_SUSPEND_AFTER" => Some("50ms".into()),
                _ => None,
            })
            .map(|applied| describe_overrides(&applied))
            .unwrap(),
            "RESTATE_ADMIN_TOKEN=<set> RESTATE_SUSPEND_AFTER=\"50ms\""
        );
        assert_eq!(c.default_retention, Duration::from_secs(3600));
        assert_eq!(c.admin_addr.port(), 9070);
        assert_eq!(c.purge_interval, Duration::from_secs(1));
        c.apply(|n| (n == "RESTATE_PURGE_INTERVAL").then(|| "250ms".into()))
            .unwrap();
        assert_eq!(c.purge_interval, Duration::from_millis(250));
        assert_eq!(c.max_interrupted_attempts, 20);
        c.apply(|n| (n == "RESTATE_MAX_INTERRUPTED_ATTEMPTS").then(|| "0".into()))
            .unwrap();
        assert_eq!(c.max_interrupted_attempts, 0);
        let zero = Config::default()
            .apply(|n| (n == "RESTATE_PURGE_INTERVAL").then(|| "0".into()))
            .unwrap_err();
        assert!(
            zero.to_string().contains("RESTATE_PURGE_INTERVAL"),
            "{zero}"
        );
        let err = Config::default()
            .apply(|n| (n == "RESTATE_ADMIN_ADDR").then(|| "nope".into()))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable RESTATE_ADMIN_ADDR=\"nope\" is invalid"),
            "{err}"
        );
    }

    #[test]
    fn secret_headers_from_the_environment_add_to_the_list() {
        let mut c = Config::default();
        c.apply(|n| (n == "RESTATE_SECRET_HEADERS").then(|| "X-Api-Key, cookie".into()))
            .unwrap();
        for header in DEFAULT_SECRET_HEADERS.iter().chain(&["x-api-key"]) {
            assert!(c.secret_headers.iter().any(|h| h == header), "{header}");
        }
        assert_eq!(c.secret_headers.len(), DEFAULT_SECRET_HEADERS.len() + 1);
    }

    #[test]
    fn a_token_variable_set_but_empty_is_refused_not_dropped() {
        for name in ["RESTATE_INGRESS_TOKEN", "RESTATE_ADMIN_TOKEN"] {
            let mut c = Config::default();
            c.apply(|n| (n == name).then(String::new)).unwrap();
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("empty token"), "{err}");
        }
    }
}

/// A database URL (`postgres://user:password@host/db?password=…`) or key-value string
/// (`host=… password=…`) with its passwords replaced by `***`.
pub(crate) fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The user info is what comes before the authority's last `@`; the authority ends at
        // the first `/`, `?` or `#` (a password holds those percent-encoded).
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (user_info, after) = match rest[..authority_end].rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at..]),
            None => (None, rest),
        };
        let user = user_info.map(|info| match info.split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => info.to_owned(),
        });
        let after = match after.split_once('?') {
            Some((place, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some(("password", _)) => "password=***".to_owned(),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{place}?{}", query.join("&"))
            }
            None => after.to_owned(),
        };
        return format!("{scheme}://{}{after}", user.unwrap_or_default());
    }
    // Key-value form: values may be quoted and hold spaces, so everything from the password on
    // is dropped.
    match url.find("password") {
        Some(at) => format!("{}password=***", &url[..at]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::redact_password;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_password("postgres://app:s3cr@t@db:5432/shop?sslmode=require"),
            "postgres://app:***@db:5432/shop?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://app@db/shop"),
            "postgres://app@db/shop"
        );
        assert_eq!(
            redact_password("postgres://app:a%2Fb%40c@db/shop"),
            "postgres://app:***@db/shop"
        );
        assert_eq!(
            redact_password("postgres://db/shop?password=p@ss"),
            "postgres://db/shop?password=***"
        );
        assert_eq!(
            redact_password("postgres://db/shop?user=app&password=hunter2&sslmode=require"),
            "postgres://db/shop?user=app&password=***&sslmode=require"
        );
        assert_eq!(
            redact_password("host=db user=app password = 'a b' dbname=shop"),
            "host=db user=app password=***"
        );
    }
}

/// An advertised ingress URL: `http://host[:port][/path]` (the relay speaks plain HTTP, as
/// the processes of one deployment reach each other inside its network), its trailing `/`
/// dropped.
fn advertised_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.query().is_some() {
        return Err("expected http://host[:port][/path], without a query".into());
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The ingress URL the other processes are told when none is configured: the bound address,
/// unless it is every interface (nobody can tell which of them the others reach).
pub(crate) fn default_advertised_url(bound: SocketAddr) -> Option<String> {
    (!bound.ip().is_unspecified()).then(|| format!("http://{bound}"))
}

#[cfg(test)]
mod advertised_tests {
    use super::*;

    #[test]
    fn advertised_urls_are_plain_http_without_a_query() {
        assert_eq!(
            advertised_url("http://10.0.0.5:8080/durable/").unwrap(),
            "http://10.0.0.5:8080/durable"
        );
        assert!(advertised_url("https://10.0.0.5").is_err());
        assert!(advertised_url("10.0.0.5:8080").is_err());
        assert!(advertised_url("http://h/?x=1").is_err());
        assert_eq!(
            default_advertised_url("[::1]:8081".parse().unwrap()).as_deref(),
            Some("http://[::1]:8081")
        );
        assert_eq!(
            default_advertised_url("0.0.0.0:8080".parse().unwrap()),
            None
        );
    }
}
