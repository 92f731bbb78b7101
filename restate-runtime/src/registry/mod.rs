//! The service registry: what the macros declare, collected at link time through `inventory`,
//! plus values bound explicitly on the builder.

mod options;
mod stand_in;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

pub(crate) use options::attempts_made;
pub use options::{HandlerOptions, OnMaxAttempts, RetryPolicy};

use crate::context::InvocationContext;
use crate::error::HandlerError;
use crate::maps::FastMap;

/// The three kinds of service.
///
/// ```
/// use restate_runtime::ServiceKind;
/// assert_eq!(ServiceKind::VirtualObject.as_str(), "VirtualObject");
/// assert!(ServiceKind::Workflow.is_keyed());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ServiceKind {
    /// Stateless handlers.
    Service,
    /// Keyed handlers with K/V state and one exclusive handler at a time per key.
    VirtualObject,
    /// A `run` handler executed once per key, plus shared handlers.
    Workflow,
}

impl ServiceKind {
    /// The name Restate uses for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "Service",
            Self::VirtualObject => "VirtualObject",
            Self::Workflow => "Workflow",
        }
    }

    /// Whether invocations of this kind carry a key.
    pub fn is_keyed(self) -> bool {
        !matches!(self, Self::Service)
    }
}

/// How a handler runs relative to others on the same key.
///
/// ```
/// use restate_runtime::prelude::*;
/// use restate_runtime::{HandlerKind, Service};
/// #[derive(Default)]
/// pub struct Counter;
/// #[object]
/// impl Counter {
///     #[handler]
///     async fn add(&self, _ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> { Ok(n) }
///     #[handler]
///     async fn get(&self, _ctx: SharedObjectContext<'_>) -> HandlerResult<u64> { Ok(0) }
/// }
/// // The context type decides the kind.
/// let definition = Counter::definition();
/// assert_eq!(definition.handler("add").unwrap().kind, HandlerKind::Exclusive);
/// assert_eq!(definition.handler("get").unwrap().kind, HandlerKind::Shared);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HandlerKind {
    /// A plain service handler.
    Stateless,
    /// One at a time per key (objects), with write access to state.
    Exclusive,
    /// Concurrent with anything, read-only state.
    Shared,
    /// A workflow's `run` handler.
    Workflow,
}

/// The static description of one handler, produced by the macros.
#[derive(Debug, Clone)]
pub struct HandlerDefinition {
    /// The name on the wire.
    pub name: &'static str,
    /// Exclusive, shared, workflow or stateless.
    pub kind: HandlerKind,
    /// The input type's name, for the admin API (`None` without input).
    pub input_type: Option<&'static str>,
    /// The output type's name.
    pub output_type: &'static str,
    /// Options from `#[handler(..)]` merged over the service's.
    pub options: HandlerOptions,
    /// How the input is read off the wire.
    pub input: InputShape,
    /// Checks that a payload decodes as the input type, so the ingress can refuse bad input
    /// with a 400 before any invocation exists.
    pub check_input: fn(&[u8]) -> Result<(), crate::codec::DecodeError>,
}

/// How a handler takes its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputShape {
    /// No input: the body must be empty (any content-type is accepted, as Restate's clients send one).
    None,
    /// A JSON value (an empty body reads as `null`, which `Option<T>` and `()` accept).
    Json,
    /// Raw bytes and headers ([`RawInput`](crate::RawInput)), any content-type.
    Raw,
}

/// The static description of one service, produced by the macros.
///
/// ```
/// use restate_runtime::prelude::*;
/// use restate_runtime::{Service, ServiceKind};
/// #[derive(Default)]
/// pub struct Greeter;
/// #[service(name = "greeter")]
/// impl Greeter {
///     #[handler(name = "sayHello")]
///     async fn say_hello(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
///         Ok(format!("Hello {name}"))
///     }
/// }
/// let definition = Greeter::definition();
/// assert_eq!((definition.name, definition.kind), ("greeter", ServiceKind::Service));
/// assert_eq!(definition.handler("sayHello").unwrap().input_type, Some("String"));
/// ```
#[derive(Debug, Clone)]
pub struct ServiceDefinition {
    /// The name on the wire.
    pub name: &'static str,
    /// Service, object or workflow.
    pub kind: ServiceKind,
    /// Every handler.
    pub handlers: Vec<HandlerDefinition>,
}

impl ServiceDefinition {
    /// The handler with this wire name.
    pub fn handler(&self, name: &str) -> Option<&HandlerDefinition> {
        self.handlers.iter().find(|h| h.name == name)
    }
}

/// Implemented by the macros for every annotated type: its definition and its dispatcher.
///
/// Not implemented by hand; use `#[service]`, `#[object]` or `#[workflow]`.
pub trait Service: Send + Sync + 'static {
    /// The static description.
    fn definition() -> ServiceDefinition
    where
        Self: Sized;

    /// Runs handler `handler` with its input bytes and returns its output bytes.
    fn invoke<'a>(
        &'a self,
        handler: &'a str,
        ctx: &'a InvocationContext,
        input: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>>;
}

/// The object-safe form of [`Service`] the engine holds.
pub(crate) type DynService = Arc<dyn Service>;

/// One link-time registration, submitted by the macros through `inventory`.
#[doc(hidden)]
pub struct Registration {
    /// The definition.
    pub definition: fn() -> ServiceDefinition,
    /// The version of the crate that declares the service (part of the default app version).
    pub crate_version: &'static str,
    /// A value built with `Default`, or `None` when the type has no `Default` and must be bound.
    pub default_instance: fn() -> Option<Arc<dyn Service>>,
}

inventory::collect!(Registration);

/// A registered service: definition plus the value its handlers run on.
#[derive(Clone)]
pub(crate) struct RegisteredService {
    pub definition: Arc<ServiceDefinition>,
    pub instance: DynService,
}

/// Every service the runtime serves.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    services: FastMap<&'static str, RegisteredService>,
    /// Versions of the crates that declare the services, sorted, each once.
    crate_versions: Vec<&'static str>,
}

/// Why the registry could not be assembled.
///
/// ```no_run
/// use restate_runtime::{BuildError, RegistryError, Runtime};
/// # async fn demo() -> anyhow::Result<()> {
/// match Runtime::builder().build() {
///     // A service type without `Default` needs `.bind(value)` on the builder.
///     Err(BuildError::Registry(RegistryError::Unbound(service))) => {
///         anyhow::bail!("bind a value for {service}")
///     }
///     other => other?.serve().await?,
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Two types declare the same service name.
    #[error("two services are named `{0}`: service names must be unique in a binary")]
    DuplicateName(String),
    /// A service takes a name the runtime keeps for its own objects.
    #[error(
        "service name `{0}`: names starting with `restate.` are the runtime's own, choose another"
    )]
    Reserved(String),
    /// A `#[handler(cron = ..)]` names a time zone (or an expression) that cannot be used.
    #[error("the schedule of `{service}/{handler}`: {reason}")]
    Cron {
        /// The service.
        service: String,
        /// The handler.
        handler: String,
        /// What is wrong.
        reason: String,
    },
    /// A service type has no `Default` and was not bound.
    #[error(
        "service `{0}` has no value: derive or implement `Default` for its type, or bind a value with `Runtime::builder().bind(..)`"
    )]
    Unbound(String),
}

/// What becomes of a registered service type with no `Default` that was not bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Unbound {
    /// The build is refused ([`RegistryError::Unbound`]): a runtime must serve everything
    /// its binary declares.
    #[default]
    Refused,
    /// Its calls fail, saying how to bind it (a test runtime: see `stand_in`).
    StoodIn,
}

impl Registry {
    /// Collects every link-time registration, with explicitly bound values taking precedence,
    /// and `unbound` saying what becomes of types without `Default` that were not bound.
    pub(crate) fn assemble(
        bound: Vec<(ServiceDefinition, DynService)>,
        unbound: Unbound,
    ) -> Result<Self, RegistryError> {
        let mut services: FastMap<&'static str, RegisteredService> = FastMap::default();
        for (definition, instance) in bound {
            let name = definition.name;
            if is_internal(name) {
                return Err(RegistryError::Reserved(name.to_owned()));
            }
            check_cron(&definition)?;
            let entry = RegisteredService {
                definition: Arc::new(definition),
                instance,
            };
            if services.insert(name, entry).is_some() {
                return Err(RegistryError::DuplicateName(name.to_owned()));
            }
        }
        for (definition, instance) in internal_services() {
            services.insert(
                definition.name,
                RegisteredService {
                    definition: Arc::new(definition),
                    instance,
                },
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut crate_versions = std::collections::BTreeSet::new();
        for registration in inventory::iter::<Registration> {
            let definition = (registration.definition)();
            let name = definition.name;
            if !seen.insert(name) {
                return Err(RegistryError::DuplicateName(name.to_owned()));
            }
            if is_internal(name) {
                return Err(RegistryError::Reserved(name.to_owned()));
            }
            check_cron(&definition)?;
            crate_versions.insert(registration.crate_version);
            if services.contains_key(name) {
                continue;
            }
            let instance = match ((registration.default_instance)(), unbound) {
                (Some(instance), _) => instance,
                (None, Unbound::StoodIn) => Arc::new(stand_in::StandIn(name)),
                (None, Unbound::Refused) => return Err(RegistryError::Unbound(name.to_owned())),
            };
            services.insert(
                name,
                RegisteredService {
                    definition: Arc::new(definition),
                    instance,
                },
            );
        }
        Ok(Self {
            services,
            crate_versions: crate_versions.into_iter().collect(),
        })
    }

    /// The application version when none is configured (see [`shape_version`]).
    pub(crate) fn default_version(&self) -> String {
        shape_version(&self.crate_versions, &self.definitions())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredService> {
        self.services.get(name)
    }

    /// A user's service (none of the runtime's own): what the admin API shows and what
    /// webhooks and schedules may target.
    pub(crate) fn public(&self, name: &str) -> Option<&RegisteredService> {
        self.get(name).filter(|_| !is_internal(name))
    }

    /// The users' services sorted by name (the runtime's own are left out).
    pub(crate) fn definitions(&self) -> Vec<Arc<ServiceDefinition>> {
        let mut all: Vec<_> = self
            .services
            .values()
            .filter(|s| !is_internal(s.definition.name))
            .map(|s| s.definition.clone())
            .collect();
        all.sort_by_key(|d| d.name);
        all
    }
}

/// The runtime's own objects (schedules, rate and concurrency limits, debounce), served beside the users' services, reachable only
/// from inside the process and left out of listings and the default version.
fn internal_services() -> Vec<(ServiceDefinition, DynService)> {
    use crate::schedules::{ScheduleIndex, ScheduleObject};
    vec![
        (ScheduleObject::definition(), Arc::new(ScheduleObject)),
        (ScheduleIndex::definition(), Arc::new(ScheduleIndex)),
        (
            crate::rate::RateLimiterObject::definition(),
            Arc::new(crate::rate::RateLimiterObject),
        ),
        (
            crate::concurrency::LimiterObject::definition(),
            Arc::new(crate::concurrency::LimiterObject),
        ),
        (
            crate::debounce::DebouncerObject::definition(),
            Arc::new(crate::debounce::DebouncerObject),
        ),
    ]
}

/// A handler of the runtime's own limit and debounce objects: reachable only from inside the
/// process, retried forever (see `always_retried`: a bucket must not stop on a failure), kept
/// for no time once done (nobody attaches to it), its JSON input checked by its dispatcher.
pub(crate) fn internal_handler(
    name: &'static str,
    kind: HandlerKind,
    input: Option<&'static str>,
    output: &'static str,
) -> HandlerDefinition {
    HandlerDefinition {
        name,
        kind,
        input_type: input,
        output_type: output,
        options: HandlerOptions {
            ingress_private: true,
            retry_policy: RetryPolicy::default().forever(),
            retention: Some(std::time::Duration::ZERO),
            ..HandlerOptions::default()
        },
        input: match input {
            Some(_) => InputShape::Json,
            None => InputShape::None,
        },
        check_input: crate::__private::accept_any,
    }
}

/// The prefix of the runtime's own service names, kept from users' services.
const INTERNAL_PREFIX: &str = "restate.";

/// Whether a service name is (or may become) one of the runtime's own.
pub(crate) fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// A declared schedule's time zone (the macro checked the expression) must exist here.
fn check_cron(definition: &ServiceDefinition) -> Result<(), RegistryError> {
    for handler in &definition.handlers {
        if let Some(cron) = handler.options.cron {
            crate::schedules::CronTimes::parse(cron.expression, cron.timezone).map_err(
                |reason| RegistryError::Cron {
                    service: definition.name.to_owned(),
                    handler: handler.name.to_owned(),
                    reason,
                },
            )?;
        }
    }
    Ok(())
}

/// The declaring crates' versions, then a hash of every service's name and kind and its
/// handlers' names, kinds and signatures (`1.4.0+9c1e07a2`): a build whose services changed
/// shape gets a new version even when nobody bumped the crate's.
fn shape_version(crate_versions: &[&str], definitions: &[Arc<ServiceDefinition>]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for definition in definitions {
        hash.update(format!(
            "{}\0{}\0",
            definition.name,
            definition.kind.as_str()
        ));
        let mut handlers: Vec<_> = definition.handlers.iter().collect();
        handlers.sort_by_key(|h| h.name);
        for h in handlers {
            hash.update(format!(
                "{}\0{:?}\0{}\0{}\n",
                h.name,
                h.kind,
                h.input_type.unwrap_or(""),
                h.output_type
            ));
        }
    }
    let versions = match crate_versions {
        [] => env!("CARGO_PKG_VERSION").to_owned(),
        versions => versions.join("_"),
    };
    format!("{versions}+{}", hex::encode(&hash.finalize()[..4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(output_type: &'static str) -> Arc<ServiceDefinition> {
        Arc::new(ServiceDefinition {
            name: "Orders",
            kind: ServiceKind::VirtualObject,
            handlers: vec![HandlerDefinition {
                name: "complete",
                kind: HandlerKind::Exclusive,
                input_type: Some("String"),
                output_type,
                options: HandlerOptions::default(),
                input: InputShape::Json,
                check_input: |_| Ok(()),
            }],
        })
    }

    #[test]
    fn the_default_version_changes_with_a_handler_signature_and_the_crate_version() {
        let v1 = shape_version(&["1.0.0"], &[service("u64")]);
        assert!(
            v1.starts_with("1.0.0+") && v1.len() == "1.0.0+".len() + 8,
            "{v1}"
        );
        assert_eq!(v1, shape_version(&["1.0.0"], &[service("u64")]));
        let changed = shape_version(&["1.0.0"], &[service("String")]);
        assert_ne!(v1[6..], changed[6..]);
        assert_eq!(
            shape_version(&["1.1.0"], &[service("u64")]),
            format!("1.1.0+{}", &v1[6..])
        );
    }
}
