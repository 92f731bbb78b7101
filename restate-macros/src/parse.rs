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

type Failure = (syn::Error, Option<TokenStream>);

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
            return Err((syn::Error::new(e.span(), message), None));
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
        let err = cx.check().expect_err("an error was recorded");
        return Err((err, Some(strip_handler_attrs(&mut item))));
    };
    let wire_name = options
        .name
        .clone()
        .unwrap_or_else(|| type_ident.to_string());

    let mut handlers = Vec::new();
    for impl_item in &item.items {
        let ImplItem::Fn(method) = impl_item else {
            continue;
        };
        let Some(attr) = method.attrs.iter().find(|a| is_handler_attr(a)) else {
            continue;
        };
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
    validate(&mut cx, kind, &item, &handlers);
    let fallback = strip_handler_attrs(&mut item);
    match cx.check() {
        Ok(()) => Ok(ServiceModel {
            kind,
            wire_name,
            self_ty: item.self_ty.clone(),
            type_ident,
            handlers,
            item,
        }),
        Err(e) => Err((e, Some(fallback))),
    }
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
    let mut args = sig.inputs.iter();
    match args.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        Some(FnArg::Receiver(r)) => cx.error_spanned_by(
            r,
            "a handler takes `&self`: concurrent invocations share the value; keep mutable data in state or behind a lock",
        ),
        _ => cx.error_spanned_by(&sig.ident, "a handler takes `&self` as its first argument"),
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

/// Rules across handlers.
fn validate(cx: &mut Ctxt, kind: ServiceKind, item: &ItemImpl, handlers: &[HandlerModel]) {
    // Wire names must be unique: two handlers behind one URL cannot be told apart.
    for (i, h) in handlers.iter().enumerate() {
        if handlers[..i].iter().any(|o| o.wire_name == h.wire_name) {
            cx.error_spanned_by(
                &h.ident,
                format!(
                    "duplicate handler name `{}`: every handler of a service needs its own name",
                    h.wire_name
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
        if !handlers.iter().any(|h| h.wire_name == "run") && !handlers.is_empty() {
            cx.push(syn::Error::new(
                item.self_ty.span(),
                "a workflow needs a `run` handler: `#[handler] async fn run(&self, ctx: WorkflowContext<'_>, ..)`",
            ));
        }
    }
}
