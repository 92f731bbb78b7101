//! The macros' expansion names everything by absolute path: a module that shadows the prelude
//! (`Result`, `Ok`, `Box`, `Option`, `String`, ...), the standard macros and even the crate
//! names `core`, `std` and `restate_runtime` still compiles a `#[service]`, an `#[object]` and a
//! `#[workflow]`, and what they generate describes the handlers as written.

use std::time::Duration;

use restate_runtime::{HandlerKind, InputShape, RetryPolicy, Service, ServiceKind};

#[allow(dead_code, unused_macros, non_camel_case_types, clippy::all)]
mod shadowed {
    // Prelude types, variants and traits.
    pub type Result = ();
    pub struct Ok;
    pub struct Err;
    pub type Box = ();
    pub type Option = ();
    pub struct Some;
    pub struct None;
    pub type Vec = ();
    pub type String = ();
    pub trait Default {}
    pub trait Clone {}
    pub trait Into {}
    pub trait From {}
    pub trait Send {}
    pub trait Sync {}
    pub trait Fn {}
    pub trait FnOnce {}
    pub trait Future {}
    pub trait Iterator {}
    pub trait ToString {}

    // Crate names, as relative paths.
    pub mod core {}
    pub mod std {}
    pub mod alloc {}
    pub mod restate_runtime {}
    pub mod inventory {}
    pub mod serde {}
    pub mod futures {}

    // Standard macros.
    macro_rules! vec {
        ($($t:tt)*) => {
            compile_error!("the shadowed `vec!` was used")
        };
    }
    macro_rules! stringify {
        ($($t:tt)*) => {
            compile_error!("the shadowed `stringify!` was used")
        };
    }
    macro_rules! format {
        ($($t:tt)*) => {
            compile_error!("the shadowed `format!` was used")
        };
    }
    macro_rules! concat {
        ($($t:tt)*) => {
            compile_error!("the shadowed `concat!` was used")
        };
    }
    macro_rules! panic {
        ($($t:tt)*) => {
            compile_error!("the shadowed `panic!` was used")
        };
    }

    // `#[handler]` needs no import: the service attribute consumes it before name resolution.
    use ::restate_runtime::{
        Context, HandlerResult, ObjectContext, RawInput, SharedObjectContext,
        SharedWorkflowContext, TerminalError, WorkflowContext, object, service, workflow,
    };

    #[derive(::core::default::Default)]
    pub struct Greeter;

    #[service(
        name = "HygieneGreeter",
        retention = "1 day",
        retry(
            initial_interval = "100ms",
            factor = 2.0,
            max_interval = "10s",
            max_attempts = 5
        )
    )]
    impl Greeter {
        /// Greets by name.
        #[handler]
        async fn greet(
            &self,
            _ctx: Context<'_>,
            name: ::std::string::String,
        ) -> HandlerResult<::std::string::String> {
            ::core::result::Result::Ok(::std::format!("Hello {name}"))
        }

        #[handler(
            name = "maybeDouble",
            ingress_private,
            retry(factor = 3.0, max_attempts = 2)
        )]
        async fn maybe_double(
            &self,
            _ctx: Context<'_>,
            n: ::core::option::Option<u64>,
        ) -> ::core::result::Result<u64, TerminalError> {
            ::core::result::Result::Ok(n.unwrap_or_default() * 2)
        }

        #[handler(retention = "2h")]
        async fn raw(&self, _ctx: Context<'_>, input: RawInput) -> HandlerResult<usize> {
            ::core::result::Result::Ok(input.body().len())
        }
    }

    #[derive(::core::default::Default)]
    pub struct Counter;

    #[object(ingress_private)]
    impl Counter {
        #[handler]
        async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
            ::core::result::Result::Ok(n + ctx.key().len() as u64)
        }

        #[handler]
        async fn peek(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<::std::string::String> {
            ::core::result::Result::Ok(::std::borrow::ToOwned::to_owned(ctx.key()))
        }
    }

    pub struct Signup;

    #[workflow]
    impl Signup {
        #[handler]
        async fn run(
            &self,
            ctx: WorkflowContext<'_>,
            email: ::std::string::String,
        ) -> HandlerResult<::std::string::String> {
            ::core::result::Result::Ok(::std::format!("{} signed up as {email}", ctx.key()))
        }

        #[handler(name = "getStatus")]
        async fn status(&self, _ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> {
            ::core::result::Result::Ok(())
        }
    }

    /// The generated clients are usable here too.
    pub fn clients(
        greeter: GreeterClient<'_>,
        counter: CounterClient<'_>,
        signup: SignupClient<'_>,
    ) {
        let _ = greeter.greet(::std::string::String::from("Ada"));
        let _ = greeter.maybe_double(::core::option::Option::Some(2));
        let _ = counter.add(1);
        let _ = counter.peek();
        let _ = signup.run(::std::string::String::from("ada@example.com"));
        let _ = signup.status();
    }
}

use shadowed::{Counter, Greeter, Signup};

fn names(def: &restate_runtime::ServiceDefinition) -> Vec<&'static str> {
    def.handlers.iter().map(|h| h.name).collect()
}

#[test]
fn service_definition_reflects_the_impl_block() {
    let def = <Greeter as Service>::definition();
    assert_eq!(def.name, "HygieneGreeter");
    assert_eq!(def.kind, ServiceKind::Service);
    assert_eq!(names(&def), ["greet", "maybeDouble", "raw"]);
    assert!(
        def.handlers
            .iter()
            .all(|h| h.kind == HandlerKind::Stateless)
    );

    // Service-level options are every handler's defaults.
    let service_retry = RetryPolicy {
        initial_interval: Duration::from_millis(100),
        factor: 2.0,
        max_interval: Duration::from_secs(10),
        max_attempts: Some(5),
    };
    let greet = def.handler("greet").expect("greet");
    assert!(!greet.options.ingress_private);
    assert_eq!(greet.options.retention, Some(Duration::from_secs(86_400)));
    assert_eq!(greet.options.retry_policy, service_retry);
    assert_eq!(greet.input, InputShape::Json);
    assert!((greet.check_input)(br#""Ada""#).is_ok());
    assert!((greet.check_input)(b"42").is_err());
    assert!(greet.output_type.contains("String"));

    // Handler-level options win field by field.
    let maybe = def.handler("maybeDouble").expect("maybeDouble");
    // Types shown as written, not as tokens print.
    assert_eq!(maybe.input_type, Some("::core::option::Option<u64>"));
    assert!(maybe.options.ingress_private);
    assert_eq!(maybe.options.retention, Some(Duration::from_secs(86_400)));
    assert_eq!(
        maybe.options.retry_policy,
        RetryPolicy {
            factor: 3.0,
            max_attempts: Some(2),
            ..service_retry
        }
    );
    assert_eq!(maybe.input, InputShape::Json);
    assert!((maybe.check_input)(b"null").is_ok());
    assert!((maybe.check_input)(b"3").is_ok());
    assert!((maybe.check_input)(br#""three""#).is_err());

    let raw = def.handler("raw").expect("raw");
    assert_eq!(raw.input, InputShape::Raw);
    assert_eq!(raw.options.retention, Some(Duration::from_secs(7_200)));
    assert!((raw.check_input)(b"not json at all").is_ok());
    assert!(raw.input_type.is_some_and(|t| t.contains("RawInput")));
}

#[test]
fn object_definition_has_exclusive_and_shared_handlers() {
    let def = <Counter as Service>::definition();
    assert_eq!(def.name, "Counter");
    assert_eq!(def.kind, ServiceKind::VirtualObject);
    assert_eq!(names(&def), ["add", "peek"]);
    let add = def.handler("add").expect("add");
    assert_eq!(add.kind, HandlerKind::Exclusive);
    assert!(add.options.ingress_private);
    assert_eq!(add.options.retry_policy, RetryPolicy::default());
    assert_eq!(add.options.retention, None);
    assert!((add.check_input)(b"7").is_ok());
    assert!((add.check_input)(b"-7").is_err());
    let peek = def.handler("peek").expect("peek");
    assert_eq!(peek.kind, HandlerKind::Shared);
    assert!(peek.options.ingress_private);
    assert_eq!(peek.input, InputShape::None);
    assert_eq!(peek.input_type, None);
}

#[test]
fn workflow_definition_has_run_and_shared_handlers() {
    let def = <Signup as Service>::definition();
    assert_eq!(def.name, "Signup");
    assert_eq!(def.kind, ServiceKind::Workflow);
    assert_eq!(names(&def), ["run", "getStatus"]);
    assert_eq!(def.handler("run").expect("run").kind, HandlerKind::Workflow);
    let status = def.handler("getStatus").expect("getStatus");
    assert_eq!(status.kind, HandlerKind::Shared);
    assert!(!status.options.ingress_private);
    assert_eq!(status.options, Default::default());
    assert!(def.handler("status").is_none());
}
