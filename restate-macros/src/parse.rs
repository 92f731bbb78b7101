//! Turns the annotated impl block into a [`ServiceModel`], checking every rule and collecting
//! every violation with the span of the offending tokens.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, PathArguments, ReturnType, Type,
};

use crate::ctxt::Ctxt;
use crate::model::{ContextKind, HandlerModel, Input, ServiceKind, ServiceModel};
use crate::options::{MetaList, merge, parse_options};

/// Every violation found, and what to emit next to them.
pub(crate) struct Failure {
    pub errors: syn::Error,
    pub recovery: Recovery,
}

/// What the macro emits next to its errors, so that one mistake is reported once rather than
/// again by every use of the service.
pub(crate) enum Recovery {
    /// The input as given (it is not an impl block).
    Original,
    /// The impl block without the `#[handler]` attributes (a trait impl or a generic impl, for
    /// which no code can be generated).
    Item(TokenStream),
    /// The full expansion for the handlers that are valid (duplicates dropped): the client and
    /// the `Service` impl exist, so their uses type-check.
    Partial(Box<ServiceModel>),
}

pub(crate) fn parse(
    kind: ServiceKind,
    attr: TokenStream,
    item: TokenStream,
) -> Result<ServiceModel, Failure> {
    let mut item: ItemImpl = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => {
            let message = format!(
                "{} goes on an inherent impl block: `impl MyType {{ #[handler] async fn .. }}` ({e})",
                kind.attribute()
            );
            return Err(Failure {
                errors: syn::Error::new(e.span(), message),
                recovery: Recovery::Original,
            });
        }
    };
    let mut cx = Ctxt::default();
    let metas: MetaList = syn::parse2(attr).unwrap_or_else(|e| {
        cx.push(e);
        MetaList(Default::default())
    });
    let options = parse_options(&mut cx, &metas);

    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            format!(
                "{} goes on an inherent impl block (`impl MyType {{ .. }}`), not on a trait impl",
                kind.attribute()
            ),
        );
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &item.generics,
            "generic services are not supported: the runtime registers and dispatches one concrete type per service",
        );
    }
    let type_ident = match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    };
    let Some(type_ident) = type_ident else {
        cx.error_spanned_by(
            &item.self_ty,
            "the impl block must be for a named type, e.g. `impl MyService`",
        );
        let errors = cx.check().expect_err("an error was recorded");
        return Err(Failure {
            errors,
            recovery: Recovery::Item(strip_handler_attrs(&mut item)),
        });
    };
    let wire_name = options
        .name
        .clone()
        .unwrap_or_else(|| type_ident.to_string());

    let mut handlers = Vec::new();
    let mut annotated = 0;
    for impl_item in &item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let Some(attr) = method.attrs.iter().find(|a| is_handler_attr(a)) else {
            continue;
        };
        annotated += 1;
        let handler_options = match &attr.meta {
            syn::Meta::Path(_) => Default::default(),
            syn::Meta::List(list) => match list.parse_args::<MetaList>() {
                Ok(metas) => parse_options(&mut cx, &metas),
                Err(e) => {
                    cx.push(e);
                    Default::default()
                }
            },
            syn::Meta::NameValue(nv) => {
                cx.error_spanned_by(nv, "write `#[handler]` or `#[handler(option, ..)]`");
                Default::default()
            }
        };
        if let Some(handler) =
            parse_handler(&mut cx, kind, method, merge(&options, &handler_options))
        {
            handlers.push(handler);
        }
    }
    validate(&mut cx, kind, &item, &handlers, annotated);
    // Code is generated only for an inherent impl of a concrete type.
    let generated = item.trait_.is_none()
        && item.generics.params.is_empty()
        && item.generics.where_clause.is_none();
    let tokens = strip_handler_attrs(&mut item);
    let errors = match cx.check() {
        Ok(()) => {
            return Ok(ServiceModel {
                kind,
                wire_name,
                self_ty: item.self_ty.clone(),
                type_ident,
                handlers,
                item,
            });
        }
        Err(errors) => errors,
    };
    let recovery = if generated {
        let mut seen = Vec::new();
        handlers.retain(|h| {
            let first = !seen.contains(&h.wire_name);
            seen.push(h.wire_name.clone());
            first
        });
        Recovery::Partial(Box::new(ServiceModel {
            kind,
            wire_name,
            self_ty: item.self_ty.clone(),
            type_ident,
            handlers,
            item,
        }))
    } else {
        Recovery::Item(tokens)
    };
    Err(Failure { errors, recovery })
}

fn is_handler_attr(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "handler")
}

/// Removes `#[handler]` attributes (they are ours, not real attributes) and returns the item.
fn strip_handler_attrs(item: &mut ItemImpl) -> TokenStream {
    for impl_item in &mut item.items {
        if let ImplItem::Fn(method) = impl_item {
            method.attrs.retain(|a| !is_handler_attr(a));
        }
    }
    item.to_token_stream()
}

fn last_ident(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

fn parse_handler(
    cx: &mut Ctxt,
    kind: ServiceKind,
    method: &ImplItemFn,
    options: crate::model::Options,
) -> Option<HandlerModel> {
    let sig = &method.sig;
    let errors_before = cx.len();
    if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, "a handler must be an `async fn`");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            &sig.generics,
            "a handler cannot be generic: the runtime dispatches to one concrete signature",
        );
    }
    let mut args = sig.inputs.iter().peekable();
    match args.peek() {
        Some(FnArg::Receiver(r)) => {
            if r.reference.is_none() || r.mutability.is_some() {
                cx.error_spanned_by(
                    r,
                    "a handler takes `&self`: concurrent invocations share the value; keep mutable data in state or behind a lock",
                );
            }
            args.next();
        }
        // Without a receiver the first argument is read as the context, so a missing `&self`
        // is one error, not also a misplaced context.
        first => cx.error_spanned_by(
            first.map_or_else(|| sig.ident.to_token_stream(), ToTokens::to_token_stream),
            "a handler takes `&self` as its first argument: `async fn name(&self, ctx: .., ..)`",
        ),
    }
    let allowed = kind.allowed_contexts();
    let allowed_names: Vec<_> = allowed
        .iter()
        .map(|c| format!("`{}<'_>`", c.name()))
        .collect();
    let ctx_arg = args.next();
    let context = match ctx_arg {
        Some(FnArg::Typed(pat)) => {
            let found = last_ident(&pat.ty)
                .and_then(|seg| ContextKind::ALL.into_iter().find(|c| seg.ident == c.name()));
            match found {
                Some(c) if allowed.contains(&c) => Some((c, pat.ty.clone())),
                _ => {
                    cx.error_spanned_by(
                        &pat.ty,
                        format!(
                            "the second argument of a {} handler is its context: {}",
                            kind.attribute(),
                            allowed_names.join(" or ")
                        ),
                    );
                    None
                }
            }
        }
        _ => {
            cx.error_spanned_by(
                &sig.ident,
                format!(
                    "a handler takes a context after `&self`: {}",
                    allowed_names.join(" or ")
                ),
            );
            None
        }
    };
    let input = match args.next() {
        None => Input::None,
        Some(FnArg::Typed(pat)) => {
            if last_ident(&pat.ty).is_some_and(|s| s.ident == "RawInput") {
                Input::Raw(pat.ty.clone())
            } else {
                Input::Json(pat.ty.clone())
            }
        }
        Some(other) => {
            cx.error_spanned_by(other, "unexpected receiver");
            Input::None
        }
    };
    for extra in args {
        cx.error_spanned_by(
            extra,
            "a handler takes at most one input after its context; put several values in one struct",
        );
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => result_ok_type(ty),
        ReturnType::Default => None,
    };
    if output.is_none() {
        let span: &dyn ToTokens = match &sig.output {
            ReturnType::Type(_, ty) => ty,
            ReturnType::Default => &sig.ident,
        };
        cx.error_spanned_by(
            span,
            "a handler returns `Result<T, E>` (or `HandlerResult<T>`) with `T: Serialize` and `E: Into<HandlerError>`",
        );
    }
    if cx.len() > errors_before {
        return None;
    }
    let (context, context_ty) = context?;
    let docs = method
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Some(HandlerModel {
        wire_name: options
            .name
            .clone()
            .unwrap_or_else(|| sig.ident.to_string()),
        ident: sig.ident.clone(),
        context,
        context_ty,
        input,
        output: output?,
        options,
        docs,
    })
}

/// `T` of `Result<T, E>` or `HandlerResult<T>`.
fn result_ok_type(ty: &Type) -> Option<Box<Type>> {
    let seg = last_ident(ty)?;
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match (seg.ident.to_string().as_str(), types.as_slice()) {
        ("Result", [ok, _]) | ("HandlerResult", [ok]) => Some(Box::new((*ok).clone())),
        _ => None,
    }
}

/// Rules across handlers. `annotated` counts the methods marked `#[handler]`, valid or not.
fn validate(
    cx: &mut Ctxt,
    kind: ServiceKind,
    item: &ItemImpl,
    handlers: &[HandlerModel],
    annotated: usize,
) {
    // Wire names must be unique: two handlers behind one URL cannot be told apart.
    for (i, h) in handlers.iter().enumerate() {
        if let Some(first) = handlers[..i].iter().find(|o| o.wire_name == h.wire_name) {
            let fix = if h.options.name.is_some() {
                "give one of them another `name = \"...\"`"
            } else {
                "rename the method or set `#[handler(name = \"...\")]`"
            };
            cx.error_spanned_by(
                &h.ident,
                format!(
                    "duplicate handler name `{}`, already used by `{}`: every handler of a service needs its own name; {fix}",
                    h.wire_name, first.ident
                ),
            );
        }
    }
    if kind == ServiceKind::Workflow {
        // Exactly one `run`, the only handler with the exclusive workflow context.
        for h in handlers {
            let is_run = h.wire_name == "run";
            match (is_run, h.context) {
                (true, ContextKind::WorkflowContext) | (false, ContextKind::SharedWorkflowContext) => {}
                (true, _) => cx.error_spanned_by(&h.context_ty, "a workflow's `run` handler takes `WorkflowContext<'_>`"),
                (false, _) => cx.error_spanned_by(
                    &h.context_ty,
                    "only a workflow's `run` handler takes `WorkflowContext`; other handlers take `SharedWorkflowContext<'_>`",
                ),
            }
        }
        // Only when every handler parsed: a `run` with another error is reported for that.
        if handlers.len() == annotated && !handlers.iter().any(|h| h.wire_name == "run") {
            cx.push(syn::Error::new(
                item.self_ty.span(),
                "a workflow needs a `run` handler: `#[handler] async fn run(&self, ctx: WorkflowContext<'_>, ..)`",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::{ToTokens, quote};

    use super::{Recovery, parse};
    use crate::model::{ContextKind, Input, RetryArgs, ServiceKind, ServiceModel};

    fn model(kind: ServiceKind, attr: TokenStream, item: TokenStream) -> ServiceModel {
        match parse(kind, attr, item) {
            Ok(model) => model,
            Err(failure) => panic!("unexpected errors: {:?}", messages(&failure.errors)),
        }
    }

    fn failure(kind: ServiceKind, attr: TokenStream, item: TokenStream) -> (Vec<String>, Recovery) {
        match parse(kind, attr, item) {
            Ok(_) => panic!("expected errors"),
            Err(failure) => (messages(&failure.errors), failure.recovery),
        }
    }

    fn messages(errors: &syn::Error) -> Vec<String> {
        errors.clone().into_iter().map(|e| e.to_string()).collect()
    }

    fn input(input: &Input) -> String {
        match input {
            Input::None => "none".into(),
            Input::Json(ty) => format!("json {}", ty.to_token_stream()),
            Input::Raw(ty) => format!("raw {}", ty.to_token_stream()),
        }
    }

    #[test]
    fn service_handlers_contexts_inputs_and_merged_options() {
        let m = model(
            ServiceKind::Service,
            quote!(
                name = "greeter-v1",
                retention = "1 day",
                retry(initial_interval = "100ms", max_attempts = 5)
            ),
            quote! {
                impl Greeter {
                    /// Says hello.
                    #[handler]
                    async fn greet(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
                        Ok(name)
                    }
                    #[handler(name = "maybe", ingress_private, retention = "2h", retry(factor = 3, max_attempts = 2))]
                    async fn maybe(&self, ctx: restate_runtime::Context<'_>, n: Option<u64>) -> Result<u64, TerminalError> {
                        Ok(0)
                    }
                    #[restate_runtime::handler]
                    async fn raw(&self, ctx: Context<'_>, input: RawInput) -> HandlerResult<()> {
                        Ok(())
                    }
                    #[handler]
                    async fn ping(&self, ctx: Context<'_>) -> HandlerResult<()> {
                        Ok(())
                    }
                    fn helper(&self) {}
                }
            },
        );
        assert_eq!(m.kind, ServiceKind::Service);
        assert_eq!(m.wire_name, "greeter-v1");
        assert_eq!(m.type_ident, "Greeter");
        let names: Vec<_> = m.handlers.iter().map(|h| h.wire_name.as_str()).collect();
        assert_eq!(names, ["greet", "maybe", "raw", "ping"]);
        assert!(m.handlers.iter().all(|h| h.context == ContextKind::Context));
        let inputs: Vec<_> = m.handlers.iter().map(|h| input(&h.input)).collect();
        assert_eq!(
            inputs,
            ["json String", "json Option < u64 >", "raw RawInput", "none"]
        );
        let outputs: Vec<_> = m
            .handlers
            .iter()
            .map(|h| h.output.to_token_stream().to_string())
            .collect();
        assert_eq!(outputs, ["String", "u64", "()", "()"]);
        assert_eq!(m.handlers[0].docs.len(), 1);

        // Service options are the defaults; handler options win field by field.
        let greet = &m.handlers[0].options;
        assert_eq!(greet.name, None);
        assert!(!greet.ingress_private);
        assert_eq!(greet.retention_ms, Some(86_400_000));
        let service_retry = RetryArgs {
            initial_interval_ms: Some(100),
            factor: None,
            max_interval_ms: None,
            max_attempts: Some(5),
            kill_on_max_attempts: None,
        };
        assert_eq!(greet.retry, Some(service_retry.clone()));
        let maybe = &m.handlers[1].options;
        assert_eq!(maybe.name.as_deref(), Some("maybe"));
        assert!(maybe.ingress_private);
        assert_eq!(maybe.retention_ms, Some(7_200_000));
        assert_eq!(
            maybe.retry,
            Some(RetryArgs {
                factor: Some(3.0),
                max_attempts: Some(2),
                ..service_retry
            })
        );

        // The emitted item no longer carries the `#[handler]` attributes.
        let item = m.item.to_token_stream().to_string();
        assert!(!item.contains("handler"), "{item}");
        assert!(item.contains("fn helper"));
    }

    #[test]
    fn object_and_workflow_contexts() {
        let m = model(
            ServiceKind::Object,
            quote!(),
            quote! {
                impl Counter {
                    #[handler]
                    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> { Ok(n) }
                    #[handler]
                    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> { Ok(0) }
                }
            },
        );
        assert_eq!(m.wire_name, "Counter");
        let contexts: Vec<_> = m.handlers.iter().map(|h| h.context).collect();
        assert_eq!(
            contexts,
            [ContextKind::ObjectContext, ContextKind::SharedObjectContext]
        );

        let m = model(
            ServiceKind::Workflow,
            quote!(ingress_private),
            quote! {
                impl crate::flows::Signup {
                    #[handler]
                    async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<()> { Ok(()) }
                    #[handler(name = "getStatus")]
                    async fn status(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        assert_eq!(m.wire_name, "Signup");
        let handlers: Vec<_> = m
            .handlers
            .iter()
            .map(|h| (h.ident.to_string(), h.wire_name.as_str(), h.context))
            .collect();
        assert_eq!(
            handlers,
            [
                ("run".to_string(), "run", ContextKind::WorkflowContext),
                (
                    "status".to_string(),
                    "getStatus",
                    ContextKind::SharedWorkflowContext
                ),
            ]
        );
        assert!(m.handlers.iter().all(|h| h.options.ingress_private));
    }

    #[test]
    fn reports_every_violation_at_once() {
        let (errors, recovery) = failure(
            ServiceKind::Service,
            quote!(retention = "soon", colour = "blue"),
            quote! {
                impl Greeter {
                    #[handler]
                    fn not_async(&self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                    #[handler]
                    async fn mutable(&mut self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                    #[handler]
                    async fn two_inputs(&self, ctx: Context<'_>, a: u32, b: u32) -> HandlerResult<()> { Ok(()) }
                    #[handler]
                    async fn wrong_context(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> { Ok(()) }
                    #[handler]
                    async fn no_result(&self, ctx: Context<'_>) -> String { String::new() }
                    #[handler]
                    async fn fine(&self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        let expected = [
            "invalid duration for `retention`",
            "unknown option `colour`",
            "a handler must be an `async fn`",
            "a handler takes `&self`",
            "at most one input",
            "the second argument of a #[service] handler is its context: `Context<'_>`",
            "a handler returns `Result<T, E>`",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
        // The valid handler is still generated, so uses of it and of the client compile.
        let Recovery::Partial(partial) = recovery else {
            panic!("expected a partial model");
        };
        let names: Vec<_> = partial
            .handlers
            .iter()
            .map(|h| h.wire_name.as_str())
            .collect();
        assert_eq!(names, ["fine"]);
    }

    #[test]
    fn missing_self_is_one_error() {
        let (errors, _) = failure(
            ServiceKind::Service,
            quote!(),
            quote! {
                impl Greeter {
                    #[handler]
                    async fn greet(ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("`&self` as its first argument"));
    }

    #[test]
    fn cross_handler_rules() {
        let (errors, recovery) = failure(
            ServiceKind::Service,
            quote!(),
            quote! {
                impl Greeter {
                    #[handler(name = "x")]
                    async fn first(&self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                    #[handler(name = "x")]
                    async fn second(&self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("duplicate handler name `x`, already used by `first`"));
        let Recovery::Partial(partial) = recovery else {
            panic!("expected a partial model");
        };
        assert_eq!(partial.handlers.len(), 1, "duplicates are dropped");

        let (errors, _) = failure(
            ServiceKind::Workflow,
            quote!(),
            quote! {
                impl Signup {
                    #[handler]
                    async fn run(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> { Ok(()) }
                    #[handler]
                    async fn status(&self, ctx: WorkflowContext<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].contains("`run` handler takes `WorkflowContext<'_>`"));
        assert!(errors[1].contains("other handlers take `SharedWorkflowContext<'_>`"));

        // A workflow without `run`, including one without any handler.
        for item in [
            quote!(impl Signup {
                #[handler]
                async fn status(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> { Ok(()) }
            }),
            quote!(impl Signup {}),
        ] {
            let (errors, _) = failure(ServiceKind::Workflow, quote!(), item);
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert!(errors[0].contains("a workflow needs a `run` handler"));
        }

        // A `run` that fails on its own is not also reported missing.
        let (errors, _) = failure(
            ServiceKind::Workflow,
            quote!(),
            quote!(impl Signup {
                #[handler]
                fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<()> { Ok(()) }
            }),
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("`async fn`"));
    }

    #[test]
    fn impl_block_shape() {
        let (errors, recovery) = failure(
            ServiceKind::Service,
            quote!(),
            quote! {
                impl<T> SomeTrait for Greeter<T> {
                    #[handler]
                    async fn greet<U>(&self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].contains("not on a trait impl"));
        assert!(errors[1].contains("generic services are not supported"));
        assert!(errors[2].contains("a handler cannot be generic"));
        // No code can be generated for it: the block is emitted without `#[handler]`.
        let Recovery::Item(tokens) = recovery else {
            panic!("expected the bare item");
        };
        assert!(!tokens.to_string().contains("handler"));

        let (errors, recovery) = failure(
            ServiceKind::Object,
            quote!(),
            quote!(
                struct Counter;
            ),
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("#[object] goes on an inherent impl block"));
        assert!(matches!(recovery, Recovery::Original));
    }

    #[test]
    fn option_errors() {
        let (errors, _) = failure(
            ServiceKind::Service,
            quote!(
                name = "not a url segment",
                ingress_private = true,
                retention,
                retry(max_attempts = 0, factor = 0.5, backoff = "1s"),
                name = "again"
            ),
            quote!(impl Greeter {}),
        );
        let expected = [
            "a name must be non-empty",
            "`ingress_private` is a flag",
            "write `retention = \"...\"`",
            "`max_attempts` must be an integer of at least 1",
            "`factor` must be a number of at least 1.0",
            "unknown retry option",
            "duplicate option `name`",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
