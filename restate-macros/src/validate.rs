//! Stage 2 of 3 (parse → validate → expand): checks every rule on the syntax, one function
//! per rule, collecting every violation with the span of the offending tokens, and builds the
//! [`ServiceModel`] that expansion reads. What cannot be checked on syntax (serde traits, the
//! error conversion, `Send` futures) is checked by the expansion, on the user's spans.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemImpl, PathArguments, ReturnType, Signature, Type};

use crate::ast::{Container, HandlerAst};
use crate::ctxt::Ctxt;
use crate::expand::written;
use crate::model::{
    ClientMethod, ContextKind, CronArgs, DebounceArgs, HandlerModel, Input, Options, ServiceKind,
    ServiceModel,
};
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
    /// Nothing: the block cannot stand even without the macro (an impl of a type that is not
    /// a path, such as `impl [u8; 4]`), and emitting it would add the compiler's own error.
    Nothing,
    /// The impl block without the `#[handler]` attributes (a trait impl or a generic impl, for
    /// which no code can be generated).
    Item(TokenStream),
    /// The full expansion for the handlers that are valid (duplicates dropped), and client
    /// methods for the broken ones whose signature can be read: the client and the `Service`
    /// impl exist, so their uses type-check.
    Partial(Box<ServiceModel>),
}

/// What checking one handler gives.
enum Verdict {
    Valid(Box<HandlerModel>),
    /// Broken, but its input and output can be read: it still gets a client method.
    ClientOnly(ClientMethod),
    Unusable,
}

pub(crate) fn validate(container: Container) -> Result<ServiceModel, Failure> {
    let Container {
        kind,
        options,
        item,
        handlers: asts,
        misplaced,
    } = container;
    let mut cx = Ctxt::new();
    let options = match options {
        Ok(metas) => parse_options(&mut cx, &metas),
        Err(e) => {
            cx.push(e);
            Options::default()
        }
    };
    if let Some(cron) = &options.cron {
        cx.error_spanned_by(
            &cron.expression,
            "`cron` schedules one handler: put it on `#[handler(cron = \"...\")]`",
        );
    }
    if let Some(concurrency) = &options.concurrency {
        cx.error_spanned_by(
            &concurrency.attr,
            "`concurrency` limits one handler: put it on `#[handler(concurrency = ..)]`, or \
             share a named limit between handlers with `concurrency(name = \"...\")`",
        );
    }
    if let Some(rate) = &options.rate {
        cx.error_spanned_by(
            &rate.attr,
            "`rate` limits one handler: put it on `#[handler(rate(..))]`, or share a named limit \
             between handlers with `rate(name = \"...\")`",
        );
    }
    if let Some(debounce) = &options.debounce {
        cx.error_spanned_by(
            &debounce.attr,
            "`debounce` goes on one handler: put it on `#[handler(debounce(..))]`",
        );
    }
    impl_is_inherent(&mut cx, kind, &item);
    impl_is_not_generic(&mut cx, &item);
    let Some(type_ident) = self_type_is_named(&mut cx, &item) else {
        let errors = cx.check().expect_err("an error was recorded");
        return Err(Failure {
            errors,
            recovery: Recovery::Nothing,
        });
    };
    let wire_name = options
        .name
        .clone()
        .unwrap_or_else(|| type_ident.unraw().to_string());
    if wire_name == "restate" {
        cx.error_spanned_by(
            &item.self_ty,
            "the name `restate` is taken by the ingress's own routes (`/restate/..`): \
             name the service otherwise, `#[service(name = \"...\")]`",
        );
    }
    for attr in &misplaced {
        cx.error_spanned_by(
            attr,
            "#[handler] marks an `async fn` of this impl block: `async fn name(&self, ctx: .., ..)`",
        );
    }

    let mut handlers = Vec::new();
    let mut client_only = Vec::new();
    for ast in &asts {
        let handler_options = handler_options(&mut cx, ast);
        match handler(
            &mut cx,
            kind,
            &item.self_ty,
            ast,
            merge(&options, &handler_options),
        ) {
            Verdict::Valid(h) => handlers.push(*h),
            Verdict::ClientOnly(m) => client_only.push(m),
            Verdict::Unusable => {}
        }
    }
    wire_names_are_unique(&mut cx, &handlers);
    if kind == ServiceKind::Workflow {
        only_run_is_exclusive(&mut cx, &handlers);
        // Only when every handler is valid: a broken `run` is reported for what is wrong.
        if handlers.len() == asts.len() {
            workflow_has_run(&mut cx, &item, &handlers);
        }
    }
    let model = ServiceModel {
        kind,
        wire_name,
        self_ty: item.self_ty.clone(),
        type_ident,
        handlers,
        client_only,
        item,
    };
    let errors = match cx.check() {
        Ok(()) => return Ok(model),
        Err(errors) => errors,
    };
    // Code is generated only for an inherent impl of a concrete type.
    let recovery = if model.item.trait_.is_some() || has_generics(&model.item) {
        Recovery::Item(model.item.to_token_stream())
    } else {
        // A duplicate keeps its client method (its Rust name is its own) but no dispatch.
        let mut model = model;
        let mut kept: Vec<HandlerModel> = Vec::new();
        for h in std::mem::take(&mut model.handlers) {
            if kept
                .iter()
                .any(|k| k.client.wire_name == h.client.wire_name)
            {
                model.client_only.push(h.client);
            } else {
                kept.push(h);
            }
        }
        model.handlers = kept;
        Recovery::Partial(Box::new(model))
    };
    Err(Failure { errors, recovery })
}

// ---------------------------------------------------------------------------------------------
// The impl block.

fn impl_is_inherent(cx: &mut Ctxt, kind: ServiceKind, item: &ItemImpl) {
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            format!(
                "{} goes on an inherent impl block (`impl MyType {{ .. }}`), not on a trait impl",
                kind.attribute()
            ),
        );
    }
}

fn has_generics(item: &ItemImpl) -> bool {
    !item.generics.params.is_empty() || item.generics.where_clause.is_some()
}

/// The generics as written, `where` clause included (syn prints only the `<..>` list, which
/// is empty for a bare `where`: the error would fall back to the attribute).
fn written_generics(generics: &syn::Generics) -> proc_macro2::TokenStream {
    let mut tokens = generics.to_token_stream();
    generics.where_clause.to_tokens(&mut tokens);
    tokens
}

fn impl_is_not_generic(cx: &mut Ctxt, item: &ItemImpl) {
    if has_generics(item) {
        cx.error_spanned_by(
            written_generics(&item.generics),
            "generic services are not supported: the runtime registers and dispatches one concrete type per service",
        );
    }
}

/// The type's name, which names its client (`GreeterClient`).
fn self_type_is_named(cx: &mut Ctxt, item: &ItemImpl) -> Option<proc_macro2::Ident> {
    let name = last_segment(&item.self_ty).map(|s| s.ident.clone());
    if name.is_none() {
        cx.error_spanned_by(
            &item.self_ty,
            "the impl block must be for a named type, e.g. `impl MyService`",
        );
    }
    name
}

// ---------------------------------------------------------------------------------------------
// One handler.

/// The options of `#[handler(..)]`.
fn handler_options(cx: &mut Ctxt, ast: &HandlerAst) -> Options {
    match &ast.attr {
        syn::Meta::Path(_) => Options::default(),
        syn::Meta::List(list) => match list.parse_args::<MetaList>() {
            Ok(metas) => parse_options(cx, &metas),
            Err(e) => {
                cx.push(e);
                Options::default()
            }
        },
        syn::Meta::NameValue(nv) => {
            cx.error_spanned_by(
                nv,
                "`#[handler = ..]` is not a form of this attribute: write `#[handler]`, or \
                 `#[handler(name = \"...\")]` to give the handler another name",
            );
            Options::default()
        }
    }
}

fn handler(
    cx: &mut Ctxt,
    kind: ServiceKind,
    self_ty: &Type,
    ast: &HandlerAst,
    options: Options,
) -> Verdict {
    let sig = &ast.sig;
    let errors_before = cx.len();
    if let Some(repeated) = &ast.repeated {
        cx.error_spanned_by(
            repeated,
            "a handler takes one `#[handler]` attribute: put all its options in it, \
             `#[handler(name = \"...\", retry(..))]`",
        );
    }
    is_async(cx, sig);
    is_safe(cx, sig);
    is_not_generic(cx, sig);
    let has_receiver = takes_shared_self(cx, sig);
    let context = context_fits_kind(cx, kind, sig, has_receiver);
    let input = at_most_one_input(cx, sig, has_receiver);
    let output = returns_result(cx, sig);
    // No client method for types that name nothing outside the handler: its code would
    // repeat the error in the compiler's words (for `impl Trait`, at great length).
    let mut unnamed = false;
    if let Input::Json(ty) | Input::Raw(ty) = &input {
        unnamed |= names_a_type(cx, ty, "input", "decoded from the request into");
        // A context out of place was reported as such: not also as an input.
        unnamed |= is_context(ty);
    }
    if let Some(ty) = &output {
        unnamed |= names_a_type(cx, ty, "output", "encoded for the caller from");
    }
    // No client method either: its encoding would repeat the error in the compiler's words.
    let borrowed = match &input {
        Input::Json(ty) | Input::Raw(ty) => match &**ty {
            Type::Reference(borrowed) => {
                cx.error_spanned_by(ty, borrowed_input(borrowed));
                true
            }
            _ => false,
        },
        Input::None => false,
    };
    if let Some(cron) = &options.cron {
        schedule_fits(cx, kind, cron, &input);
    }
    if let Some(concurrency) = &options.concurrency
        && concurrency.key.is_some()
        && matches!(input, Input::None)
    {
        cx.error_spanned_by(
            &concurrency.attr,
            "`key` is a function of the handler's input, and this handler takes none: drop \
             `key` (one limit over every invocation)",
        );
    }
    if let Some(rate) = &options.rate
        && rate.key.is_some()
        && matches!(input, Input::None)
    {
        cx.error_spanned_by(
            &rate.attr,
            "`key` is a function of the handler's input, and this handler takes none: drop \
             `key` (one bucket for every invocation), or limit a step per object key with \
             `ctx.run(..).rate_limit_key(name, ctx.key())`",
        );
    }
    if let Some(debounce) = &options.debounce {
        debounce_fits(cx, kind, debounce, &input);
        if options.cron.is_some() {
            cx.error_spanned_by(
                &debounce.attr,
                "a schedule's ticks are no burst: drop `debounce` from a handler with `cron` \
                 (its `overlap` policy says what a tick does while the last run goes on)",
            );
        }
    }
    // `r#type` is served as `type`.
    let wire_name = options
        .name
        .clone()
        .unwrap_or_else(|| sig.ident.unraw().to_string());
    // A generic handler's types mean nothing outside it: no client method either.
    let generic = !sig.generics.params.is_empty();
    let (Some(output), ReturnType::Type(_, returns), false) =
        (output, &sig.output, generic || borrowed || unnamed)
    else {
        return Verdict::Unusable;
    };
    // The client's methods are in the client's impl, where `Self` is the client.
    let input = match input {
        Input::Json(ty) => Input::Json(self_named(ty, self_ty)),
        Input::Raw(ty) => Input::Raw(self_named(ty, self_ty)),
        Input::None => Input::None,
    };
    let client = ClientMethod {
        ident: sig.ident.clone(),
        wire_name,
        input,
        output: self_named(output, self_ty),
        docs: ast.docs.clone(),
        cfgs: ast.cfgs.clone(),
    };
    match context {
        Some((context, context_ty)) if cx.len() == errors_before => {
            Verdict::Valid(Box::new(HandlerModel {
                client,
                context,
                context_ty,
                returns: returns.clone(),
                options,
            }))
        }
        _ => Verdict::ClientOnly(client),
    }
}

/// A declared schedule invokes a keyless handler with no input or with the tick's time.
fn schedule_fits(cx: &mut Ctxt, kind: ServiceKind, cron: &CronArgs, input: &Input) {
    if kind != ServiceKind::Service {
        cx.error_spanned_by(
            &cron.expression,
            "`cron` goes on a handler of a `#[service]`: an object's or a workflow's handler \
             needs a key, so create its schedule at run time with \
             `handle.schedules().create(ScheduleSpec::new(..).object(name, key, handler))`",
        );
    }
    if let Input::Raw(ty) = input {
        cx.error_spanned_by(
            ty,
            "a scheduled handler takes no input, or the tick's time as `ScheduledTime`",
        );
    }
}

/// A debounced handler waits for its burst's verdict before its body, which only a service's
/// handler can do without holding a key; its `key` reads an input.
fn debounce_fits(cx: &mut Ctxt, kind: ServiceKind, debounce: &DebounceArgs, input: &Input) {
    if kind != ServiceKind::Service {
        cx.error_spanned_by(
            &debounce.attr,
            "`debounce` goes on a handler of a `#[service]`: an object's or a workflow's handler \
             would hold its key while its burst stays open; debounce a service handler that \
             calls the object",
        );
    }
    if debounce.key.is_some() && matches!(input, Input::None) {
        cx.error_spanned_by(
            &debounce.attr,
            "`key` is a function of the handler's input, and this handler takes none: drop \
             `key` (one burst over every invocation)",
        );
    }
}

fn is_async(cx: &mut Ctxt, sig: &Signature) {
    if sig.asyncness.is_none() {
        cx.error_spanned_by(sig.fn_token, "a handler must be an `async fn`");
    }
}

fn is_safe(cx: &mut Ctxt, sig: &Signature) {
    if let Some(unsafety) = sig.unsafety {
        cx.error_spanned_by(
            unsafety,
            "a handler cannot be an `unsafe fn`: the runtime calls it as any caller would; \
             put the unsafe code in an `unsafe` block inside it",
        );
    }
}

fn is_not_generic(cx: &mut Ctxt, sig: &Signature) {
    let lifetimes_only = sig
        .generics
        .params
        .iter()
        .all(|p| matches!(p, syn::GenericParam::Lifetime(_)));
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        cx.error_spanned_by(
            written_generics(&sig.generics),
            if lifetimes_only && sig.generics.where_clause.is_none() {
                "a handler takes no lifetime parameters: write `&self` and `Context<'_>`"
            } else {
                "a handler cannot be generic: the runtime dispatches to one concrete signature"
            },
        );
    }
}

/// Whether `ty` names a type (no `impl Trait` in it); reports it where it does not.
fn names_a_type(cx: &mut Ctxt, ty: &Type, what: &str, coded: &str) -> bool {
    fn has_impl(tokens: TokenStream) -> bool {
        tokens.into_iter().any(|tree| match tree {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => has_impl(group.stream()),
            _ => false,
        })
    }
    let unnamed = has_impl(ty.to_token_stream());
    if unnamed {
        cx.error_spanned_by(
            ty,
            format!(
                "a handler's {what} is {coded} a type it names: write the concrete type \
                 instead of `impl Trait`"
            ),
        );
    }
    unnamed
}

/// Whether `ty` is one of the context types, written as imported or by the runtime's path (a
/// user's own type of the same name in another module is an input).
fn is_context(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    let segments = &path.path.segments;
    let ours = segments.len() == 1
        || segments
            .first()
            .is_some_and(|first| first.ident == "restate_runtime");
    ours && context_named(ty).is_some()
}

/// The context kind whose name `ty` ends with, wherever it is from.
fn context_named(ty: &Type) -> Option<ContextKind> {
    let seg = last_segment(ty)?;
    ContextKind::ALL.into_iter().find(|c| seg.ident == c.name())
}

/// `ty` with `Self` written as the service's type.
fn self_named(ty: Box<Type>, self_ty: &Type) -> Box<Type> {
    fn replace(tokens: TokenStream, self_ty: &TokenStream) -> TokenStream {
        tokens
            .into_iter()
            .flat_map(|tree| match tree {
                proc_macro2::TokenTree::Ident(ident) if ident == "Self" => {
                    let mut spanned = TokenStream::new();
                    for mut tree in self_ty.clone() {
                        tree.set_span(ident.span());
                        spanned.extend([tree]);
                    }
                    spanned
                }
                proc_macro2::TokenTree::Group(group) => {
                    let mut inner = proc_macro2::Group::new(
                        group.delimiter(),
                        replace(group.stream(), self_ty),
                    );
                    inner.set_span(group.span());
                    TokenStream::from(proc_macro2::TokenTree::Group(inner))
                }
                tree => TokenStream::from(tree),
            })
            .collect()
    }
    let replaced = replace(ty.to_token_stream(), &self_ty.to_token_stream());
    syn::parse2(replaced).map_or(ty, Box::new)
}

/// Whether the first argument is a receiver; it must be `&self`.
fn takes_shared_self(cx: &mut Ctxt, sig: &Signature) -> bool {
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            if r.reference.is_none() || r.mutability.is_some() {
                cx.error_spanned_by(
                    r,
                    "a handler takes `&self`: concurrent invocations share the value; keep mutable data in state or behind a lock",
                );
            }
            true
        }
        // Without a receiver the first argument is read as the context, so a missing `&self`
        // is one error, not also a misplaced context.
        first => {
            cx.error_spanned_by(
                first.map_or_else(|| sig.ident.to_token_stream(), ToTokens::to_token_stream),
                "a handler takes `&self` as its first argument: `async fn name(&self, ctx: .., ..)`",
            );
            false
        }
    }
}

/// The context argument, one of the kinds this macro allows.
fn context_fits_kind(
    cx: &mut Ctxt,
    kind: ServiceKind,
    sig: &Signature,
    has_receiver: bool,
) -> Option<(ContextKind, Box<Type>)> {
    let allowed = kind.allowed_contexts();
    let allowed_names: Vec<_> = allowed
        .iter()
        .map(|c| format!("`{}<'_>`", c.name()))
        .collect();
    match sig.inputs.iter().nth(usize::from(has_receiver)) {
        Some(FnArg::Typed(pat)) => match context_named(&pat.ty) {
            Some(c) if allowed.contains(&c) => Some((c, pat.ty.clone())),
            None if sig
                .inputs
                .iter()
                .skip(usize::from(has_receiver) + 1)
                .any(|arg| matches!(arg, FnArg::Typed(later) if is_context(&later.ty))) =>
            {
                cx.error_spanned_by(
                    &pat.ty,
                    "a handler's context comes right after `&self`, before its input: \
                         `async fn name(&self, ctx: .., input: ..)`",
                );
                None
            }
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
        },
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
    }
}

/// The input after the context, if any: at most one.
fn at_most_one_input(cx: &mut Ctxt, sig: &Signature, has_receiver: bool) -> Input {
    let mut rest = sig.inputs.iter().skip(usize::from(has_receiver) + 1);
    let input = match rest.next() {
        None => Input::None,
        Some(FnArg::Typed(pat)) => {
            let context_before = matches!(
                sig.inputs.iter().nth(usize::from(has_receiver)),
                Some(FnArg::Typed(first)) if is_context(&first.ty)
            );
            if context_before && is_context(&pat.ty) {
                cx.error_spanned_by(&pat.ty, "a handler takes one context");
            }
            if last_segment(&pat.ty).is_some_and(|s| s.ident == "RawInput") {
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
    for extra in rest {
        cx.error_spanned_by(
            extra,
            "a handler takes at most one input after its context; put several values in one struct",
        );
    }
    input
}

/// Why a borrowed input cannot be taken, and the owned type to take instead: the input is
/// decoded from the invocation's stored bytes into a value the handler owns (it is replayed
/// after a restart, when the request that brought it is long gone).
fn borrowed_input(borrowed: &syn::TypeReference) -> String {
    let owned = match &*borrowed.elem {
        Type::Path(p) if p.path.is_ident("str") => "String".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", written(&slice.elem)),
        elem => written(elem),
    };
    format!(
        "a handler's input is decoded into a value it owns: take `{owned}` instead of `{}`",
        written(&Type::Reference(borrowed.clone()))
    )
}

/// `T` of the returned `Result<T, E>`, `Result<T>` or `HandlerResult<T>`.
fn returns_result(cx: &mut Ctxt, sig: &Signature) -> Option<Box<Type>> {
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
            "a handler returns `Result<T, E>` (or `HandlerResult<T>`, `anyhow::Result<T>`) with `T: Serialize` and `E: Into<HandlerError>`",
        );
    }
    output
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

fn result_ok_type(ty: &Type) -> Option<Box<Type>> {
    let seg = last_segment(ty)?;
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
        // `Result<T>`: an alias with its error fixed (`anyhow::Result`, `std::io::Result`).
        ("Result", [ok, _] | [ok]) | ("HandlerResult", [ok]) => Some(Box::new((*ok).clone())),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Across handlers.

/// Two handlers behind one URL cannot be told apart.
fn wire_names_are_unique(cx: &mut Ctxt, handlers: &[HandlerModel]) {
    for (i, h) in handlers.iter().enumerate() {
        // Under different `#[cfg]`s they may never be compiled together (a handler switched
        // by a feature); the expansion makes it a compile error if they are (`cfg_guards`).
        let Some(first) = handlers[..i]
            .iter()
            .filter(|o| !switched_apart(&o.client, &h.client))
            .find(|o| o.client.wire_name == h.client.wire_name)
        else {
            continue;
        };
        let fix = if h.options.name.is_some() {
            "give one of them another `name = \"...\"`"
        } else {
            "rename the method or set `#[handler(name = \"...\")]`"
        };
        cx.error_spanned_by(
            &h.client.ident,
            format!(
                "duplicate handler name `{}`, already used by `{}`: every handler of a service needs its own name; {fix}",
                h.client.wire_name, first.client.ident
            ),
        );
    }
}

/// Whether two handlers carry different `#[cfg]`s, so that they may exclude each other.
fn switched_apart(a: &ClientMethod, b: &ClientMethod) -> bool {
    let text = |m: &ClientMethod| -> Vec<String> {
        m.cfgs
            .iter()
            .map(|c| c.to_token_stream().to_string())
            .collect()
    };
    !a.cfgs.is_empty() && !b.cfgs.is_empty() && text(a) != text(b)
}

/// A workflow's `run` alone takes the exclusive context.
fn only_run_is_exclusive(cx: &mut Ctxt, handlers: &[HandlerModel]) {
    for h in handlers {
        let is_run = h.client.wire_name == "run";
        match (is_run, h.context) {
            (true, ContextKind::WorkflowContext) | (false, ContextKind::SharedWorkflowContext) => {}
            (true, _) => cx.error_spanned_by(
                &h.context_ty,
                "a workflow's `run` handler takes `WorkflowContext<'_>`",
            ),
            (false, _) => cx.error_spanned_by(
                &h.context_ty,
                "only a workflow's `run` handler takes `WorkflowContext`; other handlers take `SharedWorkflowContext<'_>`",
            ),
        }
    }
}

fn workflow_has_run(cx: &mut Ctxt, item: &ItemImpl, handlers: &[HandlerModel]) {
    if !handlers.iter().any(|h| h.client.wire_name == "run") {
        cx.push(syn::Error::new(
            item.self_ty.span(),
            "a workflow needs a `run` handler: `#[handler] async fn run(&self, ctx: WorkflowContext<'_>, ..)`",
        ));
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::{ToTokens, quote};

    use super::{Failure, Recovery, validate};
    use crate::model::{ContextKind, Input, RetryArgs, ServiceKind, ServiceModel};

    /// Both stages, as the macros run them.
    fn analyze(
        kind: ServiceKind,
        attr: TokenStream,
        item: TokenStream,
    ) -> Result<ServiceModel, Failure> {
        let container = crate::parse::parse(kind, attr, item).map_err(|errors| Failure {
            errors,
            recovery: Recovery::Original,
        })?;
        validate(container)
    }

    fn model(kind: ServiceKind, attr: TokenStream, item: TokenStream) -> ServiceModel {
        match analyze(kind, attr, item) {
            Ok(model) => model,
            Err(failure) => panic!("unexpected errors: {:?}", messages(&failure.errors)),
        }
    }

    fn failure(kind: ServiceKind, attr: TokenStream, item: TokenStream) -> (Vec<String>, Recovery) {
        match analyze(kind, attr, item) {
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
        let names: Vec<_> = m
            .handlers
            .iter()
            .map(|h| h.client.wire_name.as_str())
            .collect();
        assert_eq!(names, ["greet", "maybe", "raw", "ping"]);
        assert!(m.handlers.iter().all(|h| h.context == ContextKind::Context));
        let inputs: Vec<_> = m.handlers.iter().map(|h| input(&h.client.input)).collect();
        assert_eq!(
            inputs,
            ["json String", "json Option < u64 >", "raw RawInput", "none"]
        );
        let outputs: Vec<_> = m
            .handlers
            .iter()
            .map(|h| h.client.output.to_token_stream().to_string())
            .collect();
        assert_eq!(outputs, ["String", "u64", "()", "()"]);
        assert_eq!(m.handlers[0].client.docs.len(), 1);

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
            .map(|h| {
                (
                    h.client.ident.to_string(),
                    h.client.wire_name.as_str(),
                    h.context,
                )
            })
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
            .map(|h| h.client.wire_name.as_str())
            .collect();
        assert_eq!(names, ["fine"]);
        // The broken ones whose input and output can be read keep a client method.
        let client_only: Vec<_> = partial
            .client_only
            .iter()
            .map(|m| m.ident.to_string())
            .collect();
        assert_eq!(
            client_only,
            ["not_async", "mutable", "two_inputs", "wrong_context"]
        );
    }

    #[test]
    fn raw_identifiers_are_served_by_their_name() {
        let m = model(
            ServiceKind::Service,
            quote!(),
            quote! {
                impl Kinds {
                    #[handler]
                    async fn r#type(&self, ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
                }
            },
        );
        assert_eq!(m.handlers[0].client.wire_name, "type");
        assert_eq!(m.handlers[0].client.ident.to_string(), "r#type");
    }

    #[test]
    fn a_generic_handler_gets_no_client_method() {
        let (_, recovery) = failure(
            ServiceKind::Service,
            quote!(),
            quote! {
                impl Greeter {
                    #[handler]
                    async fn echo<U>(&self, ctx: Context<'_>, u: U) -> HandlerResult<U> { Ok(u) }
                }
            },
        );
        let Recovery::Partial(partial) = recovery else {
            panic!("expected a partial model");
        };
        assert!(partial.handlers.is_empty() && partial.client_only.is_empty());
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
