//! The validated model of an annotated impl block: all that code generation reads.

use proc_macro2::Ident;
use syn::{Attribute, ItemImpl, Type};

/// Which macro was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceKind {
    Service,
    Object,
    Workflow,
}

impl ServiceKind {
    pub fn attribute(self) -> &'static str {
        match self {
            Self::Service => "#[service]",
            Self::Object => "#[object]",
            Self::Workflow => "#[workflow]",
        }
    }

    /// The context types a handler of this kind may take.
    pub fn allowed_contexts(self) -> &'static [ContextKind] {
        match self {
            Self::Service => &[ContextKind::Context],
            Self::Object => &[ContextKind::ObjectContext, ContextKind::SharedObjectContext],
            Self::Workflow => &[
                ContextKind::WorkflowContext,
                ContextKind::SharedWorkflowContext,
            ],
        }
    }
}

/// The context type a handler takes, which fixes how it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextKind {
    Context,
    ObjectContext,
    SharedObjectContext,
    WorkflowContext,
    SharedWorkflowContext,
}

impl ContextKind {
    pub const ALL: [ContextKind; 5] = [
        Self::Context,
        Self::ObjectContext,
        Self::SharedObjectContext,
        Self::WorkflowContext,
        Self::SharedWorkflowContext,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Context => "Context",
            Self::ObjectContext => "ObjectContext",
            Self::SharedObjectContext => "SharedObjectContext",
            Self::WorkflowContext => "WorkflowContext",
            Self::SharedWorkflowContext => "SharedWorkflowContext",
        }
    }
}

/// Retry policy literals, already validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RetryArgs {
    pub initial_interval_ms: Option<u64>,
    pub factor: Option<f64>,
    pub max_interval_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    /// `Some(true)` for `on_max_attempts = "kill"`, `Some(false)` for `"pause"`.
    pub kill_on_max_attempts: Option<bool>,
}

/// `cron = ".."` and its companions, already validated (the time zone is checked by the
/// runtime, which has the time zone database).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CronArgs {
    pub expression: syn::LitStr,
    pub timezone: Option<String>,
    /// `skip`, `one` or `all`.
    pub catch_up: Option<String>,
    /// `skip`, `queue` or `allow`.
    pub overlap: Option<String>,
}

/// `rate(..)`, already validated: a limit (`limit` and `per`, maybe `burst`), a name, or both;
/// maybe a key function.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RateArgs {
    pub name: Option<String>,
    pub limit: Option<u32>,
    pub per_ms: Option<u64>,
    pub burst: Option<u32>,
    pub key: Option<syn::ExprPath>,
    /// The attribute, to point errors at.
    pub attr: syn::Meta,
}

/// `concurrency = N` or `concurrency(..)`, already validated: a limit, a name, or both; maybe
/// a key function.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConcurrencyArgs {
    pub name: Option<String>,
    pub limit: Option<u32>,
    pub key: Option<syn::ExprPath>,
    /// The attribute, to point errors at.
    pub attr: syn::Meta,
}

/// `debounce(..)`, already validated: the quiet period, maybe a bound on the wait and a key
/// function.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DebounceArgs {
    pub period_ms: u64,
    pub max_wait_ms: Option<u64>,
    pub key: Option<syn::ExprPath>,
    /// The attribute, to point errors at.
    pub attr: syn::Meta,
}

/// Options on the service attribute or on `#[handler(..)]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Options {
    pub name: Option<String>,
    pub ingress_private: bool,
    pub retention_ms: Option<u64>,
    pub retry: Option<RetryArgs>,
    pub cron: Option<CronArgs>,
    pub rate: Option<RateArgs>,
    pub concurrency: Option<ConcurrencyArgs>,
    pub debounce: Option<DebounceArgs>,
}

/// How the handler takes its input.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    None,
    Json(Box<Type>),
    Raw(Box<Type>),
}

/// What a client method needs of a handler: also generated for a handler with errors whose
/// input and output can be read, so code calling it reports nothing more.
pub(crate) struct ClientMethod {
    pub ident: Ident,
    pub wire_name: String,
    pub input: Input,
    /// `T` of the returned `Result<T, E>`.
    pub output: Box<Type>,
    pub docs: Vec<Attribute>,
    /// The method's `#[cfg(..)]` attributes, put on everything generated for it.
    pub cfgs: Vec<Attribute>,
}

/// A valid handler: its client method, and what its definition and dispatch need.
pub(crate) struct HandlerModel {
    pub client: ClientMethod,
    pub context: ContextKind,
    pub context_ty: Box<Type>,
    /// The whole return type: output and error types are checked on its span.
    pub returns: Box<Type>,
    pub options: Options,
}

pub(crate) struct ServiceModel {
    pub kind: ServiceKind,
    pub wire_name: String,
    pub self_ty: Box<Type>,
    pub type_ident: Ident,
    pub handlers: Vec<HandlerModel>,
    /// Client methods of handlers with errors (only in a failed expansion's recovery).
    pub client_only: Vec<ClientMethod>,
    /// The user's impl block with the `#[handler]` attributes removed, emitted unchanged.
    pub item: ItemImpl,
}
