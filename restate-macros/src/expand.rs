//! Generates code from the model: the user's impl block unchanged, the `Service` impl (definition
//! and dispatcher), the `inventory` registration and the typed client. Every path is absolute,
//! so user code that shadows `Result`, `Ok`, `Box` or `Option` does not break the expansion.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::model::{
    ClientMethod, ContextKind, HandlerModel, Input, Options, ServiceKind, ServiceModel,
};

const RT: &str = "::restate_runtime::__private";

fn rt() -> TokenStream {
    RT.parse().expect("valid path")
}

pub(crate) fn expand(model: &ServiceModel) -> TokenStream {
    let item = &model.item;
    let service_impl = service_impl(model);
    let registration = registration(model);
    let client = client(model);
    let guards = cfg_guards(model);
    quote! {
        #item
        #client
        #guards
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #service_impl
            #registration
        };
    }
}

/// The predicates of a handler's `#[cfg(..)]` attributes.
fn cfg_predicates(method: &ClientMethod) -> Vec<TokenStream> {
    method
        .cfgs
        .iter()
        .filter_map(|attr| match &attr.meta {
            syn::Meta::List(list) => Some(list.tokens.clone()),
            _ => None,
        })
        .collect()
}

/// Compile errors for what `#[cfg]`s switch on together that the macro could not judge: two
/// handlers of one name both compiled, or a workflow with every `run` switched off.
fn cfg_guards(model: &ServiceModel) -> TokenStream {
    let service = &model.wire_name;
    let mut guards = Vec::new();
    for (i, a) in model.handlers.iter().enumerate() {
        for b in &model.handlers[i + 1..] {
            if a.client.wire_name != b.client.wire_name {
                continue;
            }
            let both = cfg_predicates(&a.client)
                .into_iter()
                .chain(cfg_predicates(&b.client));
            let message = format!(
                "`{}` and `{}` of `{service}` are both compiled here and share the name `{}`: \
                 their #[cfg]s must exclude each other",
                a.client.ident, b.client.ident, a.client.wire_name
            );
            guards.push(quote!(#[cfg(all(#(#both),*))] ::core::compile_error!(#message);));
        }
    }
    let runs: Vec<_> = model
        .handlers
        .iter()
        .filter(|h| h.client.wire_name == "run")
        .collect();
    // No `run` at all is refused by the validation already.
    let switched = !runs.is_empty() && runs.iter().all(|h| !h.client.cfgs.is_empty());
    if model.kind == ServiceKind::Workflow && switched {
        let each = runs.iter().map(|h| {
            let predicates = cfg_predicates(&h.client);
            quote!(all(#(#predicates),*))
        });
        let message =
            format!("workflow `{service}` has no `run` here: its #[cfg]s switch every `run` off");
        guards.push(quote!(#[cfg(not(any(#(#each),*)))] ::core::compile_error!(#message);));
    }
    quote!(#(#guards)*)
}

fn option_u64(v: Option<u64>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn handler_options(options: &Options, scheduled_time_input: bool) -> TokenStream {
    let rt = rt();
    let ingress_private = options.ingress_private;
    let retention = match options.retention_ms {
        Some(ms) => quote!(::core::option::Option::Some(#rt::duration_ms(#ms))),
        None => quote!(::core::option::Option::None),
    };
    let retry = match &options.retry {
        None => quote!(<#rt::RetryPolicy as ::core::default::Default>::default()),
        Some(r) => {
            let initial = option_u64(r.initial_interval_ms);
            let max = option_u64(r.max_interval_ms);
            let factor = match r.factor {
                Some(f) => quote!(::core::option::Option::Some(#f)),
                None => quote!(::core::option::Option::None),
            };
            let attempts = match r.max_attempts {
                Some(n) => quote!(::core::option::Option::Some(#n)),
                None => quote!(::core::option::Option::None),
            };
            quote! {{
                let d = <#rt::RetryPolicy as ::core::default::Default>::default();
                #rt::RetryPolicy {
                    initial_interval: (#initial).map(#rt::duration_ms).unwrap_or(d.initial_interval),
                    factor: (#factor).unwrap_or(d.factor),
                    max_interval: (#max).map(#rt::duration_ms).unwrap_or(d.max_interval),
                    max_attempts: match #attempts { ::core::option::Option::Some(n) => ::core::option::Option::Some(n), ::core::option::Option::None => d.max_attempts },
                }
            }}
        }
    };
    let on_max_attempts = match options.retry.as_ref().and_then(|r| r.kill_on_max_attempts) {
        Some(true) => quote!(#rt::OnMaxAttempts::Kill),
        _ => quote!(#rt::OnMaxAttempts::Pause),
    };
    let cron = match &options.cron {
        None => quote!(::core::option::Option::None),
        Some(c) => {
            let expression = &c.expression;
            let timezone = c.timezone.as_deref().unwrap_or("UTC");
            let catch_up = format_ident!("{}", capitalized(c.catch_up.as_deref().unwrap_or("one")));
            let overlap = format_ident!("{}", capitalized(c.overlap.as_deref().unwrap_or("skip")));
            quote!(::core::option::Option::Some(#rt::CronOptions {
                expression: #expression,
                timezone: #timezone,
                catch_up: #rt::CatchUp::#catch_up,
                overlap: #rt::Overlap::#overlap,
                scheduled_time_input: #scheduled_time_input,
            }))
        }
    };
    quote! {
        #rt::HandlerOptions {
            ingress_private: #ingress_private,
            retry_policy: #retry,
            retention: #retention,
            on_max_attempts: #on_max_attempts,
            cron: #cron,
        }
    }
}

/// `skip` → `Skip`: a policy's variant.
fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// `Some("<the type as written>")`, for the admin API's view of a handler's input.
fn type_text(ty: &syn::Type) -> TokenStream {
    let text = written(ty);
    quote!(::core::option::Option::Some(#text))
}

/// A type as a person writes it (`Option<Vec<u8>>`), not as tokens print
/// (`Option < Vec < u8 > >`): no space around `<`, `>`, `::`, before `,` or `;`, or after `&`.
pub(crate) fn written(ty: &syn::Type) -> String {
    let printed = quote!(#ty).to_string();
    let words: Vec<&str> = printed.split(' ').collect();
    let mut out = String::with_capacity(printed.len());
    for (i, word) in words.iter().enumerate() {
        let glued = i > 0 && {
            let before = words[i - 1];
            word.starts_with(['<', '>', ',', ';', ')', ']'])
                || word.starts_with("::")
                || before.ends_with(['<', '(', '[', '&'])
                || before.ends_with("::")
        };
        if i > 0 && !glued {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn handler_definition(model: &ServiceModel, h: &HandlerModel) -> TokenStream {
    let rt = rt();
    let name = &h.client.wire_name;
    let kind = match (model.kind, h.context) {
        (ServiceKind::Service, _) => quote!(#rt::HandlerKind::Stateless),
        (_, ContextKind::SharedObjectContext | ContextKind::SharedWorkflowContext) => {
            quote!(#rt::HandlerKind::Shared)
        }
        (_, ContextKind::WorkflowContext) => quote!(#rt::HandlerKind::Workflow),
        _ => quote!(#rt::HandlerKind::Exclusive),
    };
    let (input_type, shape, check) = match &h.client.input {
        Input::None => (
            quote!(::core::option::Option::None),
            quote!(#rt::InputShape::None),
            quote!(#rt::accept_any),
        ),
        Input::Json(ty) => (
            type_text(ty),
            quote!(#rt::InputShape::Json),
            quote_spanned!(ty.span()=> #rt::input::<#ty>().check()),
        ),
        Input::Raw(ty) => (
            type_text(ty),
            quote!(#rt::InputShape::Raw),
            quote!(#rt::accept_any),
        ),
    };
    let output_text = written(&h.client.output);
    let options = handler_options(&h.options, matches!(h.client.input, Input::Json(_)));
    // A scheduled handler's input is the tick's time: checked on the input type's span.
    let scheduled_input = match (&h.options.cron, &h.client.input) {
        (Some(_), Input::Json(ty)) => {
            quote_spanned!(ty.span()=> #rt::scheduled_time_input::<#ty>();)
        }
        _ => quote!(),
    };
    quote! {{
        #scheduled_input
        #rt::HandlerDefinition {
            name: #name,
            kind: #kind,
            input_type: #input_type,
            output_type: #output_text,
            options: #options,
            input: #shape,
            check_input: #check,
        }
    }}
}

fn dispatch_arm(model: &ServiceModel, h: &HandlerModel) -> TokenStream {
    let rt = rt();
    let self_ty = &model.self_ty;
    let name = &h.client.wire_name;
    let ident = &h.client.ident;
    let ctx_ty = &h.context_ty;
    let (decode, arg) = match &h.client.input {
        Input::None => (quote!(), quote!()),
        Input::Json(ty) => (
            quote_spanned!(ty.span()=> let __input = #rt::input::<#ty>().decode(&__bytes, __ctx)?;),
            quote!(, __input),
        ),
        Input::Raw(_) => (
            quote!(let __input = #rt::raw_input(__bytes, __ctx);),
            quote!(, __input),
        ),
    };
    let debounce = debounce_gate(model, h);
    let gate = rate_gate(model, h);
    let permit = concurrency_gate(model, h);
    // Each check sits on the span of what it checks: the input type (above), the handler's
    // name (its future must be `Send`) and its return type (output and error types).
    let future = quote_spanned!(ident.span()=>
        #rt::send_future(<#self_ty>::#ident(self, __typed #arg))
    );
    // The output type the client declares is the one the handler returns: `Result<T>` may
    // be an alias whose `Ok` is not `T`.
    let output_ty = &h.client.output;
    let output = quote_spanned!(h.returns.span()=> #rt::output::<#output_ty, _>({
        #[allow(unused_imports)]
        use #rt::{AnyhowTerminal as _, AsReturned as _};
        (&#rt::ResultProbe::new(__future.await)).probed()
    }));

    let cfgs = &h.client.cfgs;
    quote! {
        #(#cfgs)*
        #name => ::std::boxed::Box::pin(async move {
            #decode
            #debounce
            #gate
            #permit
            let __typed = <#ctx_ty as #rt::FromInvocation<'_>>::from_invocation(__ctx);
            let __future = #future;
            #output
        }),
    }
}

/// `concurrency(..)`: a durable wait for a permit before the handler's body (nothing without
/// it); the permit goes back with the invocation's end.
fn concurrency_gate(model: &ServiceModel, h: &HandlerModel) -> TokenStream {
    let rt = rt();
    let Some(concurrency) = &h.options.concurrency else {
        return quote!();
    };
    let name = concurrency
        .name
        .clone()
        .unwrap_or_else(|| format!("{}/{}", model.wire_name, h.client.wire_name));
    let key = match &concurrency.key {
        Some(path) => quote_spanned!(path.span()=> ::core::option::Option::Some(
            ::std::string::ToString::to_string(&#path(&__input))
        )),
        None => quote!(::core::option::Option::None),
    };
    let limit = match concurrency.limit {
        Some(limit) => quote!(::core::option::Option::Some(#limit)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #rt::concurrency_gate(__ctx, #name, #key, #limit).await?;
    }
}

/// `debounce(..)`: a durable wait for the burst's verdict before the handler's body, first of
/// the gates (only the arrival that runs takes a token or a permit); a superseded arrival
/// ends with the output of the one that ran.
fn debounce_gate(model: &ServiceModel, h: &HandlerModel) -> TokenStream {
    let rt = rt();
    let Some(debounce) = &h.options.debounce else {
        return quote!();
    };
    let name = format!("{}/{}", model.wire_name, h.client.wire_name);
    let key = match &debounce.key {
        Some(path) => quote_spanned!(path.span()=> ::core::option::Option::Some(
            ::std::string::ToString::to_string(&#path(&__input))
        )),
        None => quote!(::core::option::Option::None),
    };
    let period = debounce.period_ms;
    let max_wait = match debounce.max_wait_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        if let ::core::option::Option::Some(__ran) =
            #rt::debounce_gate(__ctx, #name, #key, #period, #max_wait).await?
        {
            return ::core::result::Result::Ok(__ran);
        }
    }
}

/// `rate(..)`: a durable wait for a token before the handler's body (nothing without it).
fn rate_gate(model: &ServiceModel, h: &HandlerModel) -> TokenStream {
    let rt = rt();
    let Some(rate) = &h.options.rate else {
        return quote!();
    };
    let name = rate
        .name
        .clone()
        .unwrap_or_else(|| format!("{}/{}", model.wire_name, h.client.wire_name));
    let key = match &rate.key {
        Some(path) => quote!(::core::option::Option::Some(
            ::std::string::ToString::to_string(&#path(&__input))
        )),
        None => quote!(::core::option::Option::None),
    };
    let limit = match (rate.limit, rate.per_ms) {
        (Some(limit), Some(per)) => {
            let burst = rate.burst.unwrap_or(1);
            quote!(::core::option::Option::Some(
                #rt::RateLimit::new(#limit, #rt::duration_ms(#per)).burst(#burst)
            ))
        }
        _ => quote!(::core::option::Option::None),
    };
    quote! {
        #rt::rate_gate(__ctx, #name, #key, #limit).await?;
    }
}

fn service_impl(model: &ServiceModel) -> TokenStream {
    let rt = rt();
    let self_ty = &model.self_ty;
    let name = &model.wire_name;
    let kind = match model.kind {
        ServiceKind::Service => quote!(#rt::ServiceKind::Service),
        ServiceKind::Object => quote!(#rt::ServiceKind::VirtualObject),
        ServiceKind::Workflow => quote!(#rt::ServiceKind::Workflow),
    };
    let definitions = model.handlers.iter().map(|h| {
        let cfgs = &h.client.cfgs;
        let definition = handler_definition(model, h);
        quote!(#(#cfgs)* __handlers.push(#definition);)
    });
    let arms = model.handlers.iter().map(|h| dispatch_arm(model, h));
    quote! {
        #[automatically_derived]
        impl #rt::Service for #self_ty {
            fn definition() -> #rt::ServiceDefinition {
                #rt::ServiceDefinition {
                    name: #name,
                    kind: #kind,
                    handlers: {
                        #[allow(unused_mut)]
                        let mut __handlers = ::std::vec::Vec::new();
                        #(#definitions)*
                        __handlers
                    },
                }
            }

            fn invoke<'__a>(
                &'__a self,
                __handler: &'__a str,
                __ctx: &'__a #rt::InvocationContext,
                __bytes: ::restate_runtime::Bytes,
            ) -> #rt::BoxFuture<'__a, ::core::result::Result<::restate_runtime::Bytes, ::restate_runtime::HandlerError>> {
                #[allow(unused_variables)]
                let __bytes = __bytes;
                match __handler {
                    #(#arms)*
                    __other => ::std::boxed::Box::pin(async move {
                        ::core::result::Result::Err(#rt::unknown_handler(#name, __other))
                    }),
                }
            }
        }
    }
}

fn registration(model: &ServiceModel) -> TokenStream {
    let rt = rt();
    let self_ty = &model.self_ty;
    quote! {
        #rt::inventory::submit! {
            #rt::Registration {
                definition: <#self_ty as #rt::Service>::definition,
                crate_version: ::core::env!("CARGO_PKG_VERSION"),
                default_instance: || {
                    #[allow(unused_imports)]
                    use #rt::{ViaDefault as _, WithoutDefault as _};
                    (&#rt::DefaultProbe::<#self_ty>::new()).instance()
                },
            }
        }
    }
}

fn client(model: &ServiceModel) -> TokenStream {
    let rt = rt();
    let client = format_ident!("{}Client", model.type_ident);
    let service = &model.wire_name;
    let type_name = &model.type_ident;
    let how = match model.kind {
        ServiceKind::Service => format!("client::<{type_name}>()"),
        ServiceKind::Object => format!("object::<{type_name}>(key)"),
        ServiceKind::Workflow => format!("workflow::<{type_name}>(key)"),
    };
    let doc = format!(
        "Typed client of `{service}`: one method per handler, each returning a request to `.call()`, `.send()` or `.send_after(..)`.\n\nGet one with `ctx.{how}` in a handler, or `handle.{how}` on a `RuntimeHandle` outside any handler; a clone (one on a `RuntimeHandle` moves into a spawned task) reaches the same target."
    );
    let client_methods = model
        .handlers
        .iter()
        .map(|h| &h.client)
        .chain(&model.client_only);
    let methods = client_methods.map(|h: &ClientMethod| {
        let ident = &h.ident;
        let name = &h.wire_name;
        let docs = &h.docs;
        let cfgs = &h.cfgs;
        let output = &h.output;
        let (param, input_ty, encode) = match &h.input {
            Input::None => (
                quote!(),
                quote!(()),
                quote!(::core::result::Result::Ok(::restate_runtime::Bytes::new())),
            ),
            Input::Json(ty) => (
                quote!(, input: #ty),
                quote!(#ty),
                quote_spanned!(ty.span()=> #rt::input::<#ty>().encode(&input)),
            ),
            Input::Raw(ty) => (
                quote!(, input: #ty),
                quote!(#ty),
                quote!(::core::result::Result::Ok(::core::clone::Clone::clone(input.body()))),
            ),
        };
        quote! {
            #(#docs)*
            #(#cfgs)*
            pub fn #ident(&self #param) -> C::Request<#input_ty, #output> {
                #rt::Caller::request(
                    &self.caller,
                    #rt::parts(#service, ::core::option::Option::as_deref(&self.key), #name, #encode),
                )
            }
        }
    });
    let self_ty = &model.self_ty;
    let has_client = match model.kind {
        ServiceKind::Service => quote!(HasServiceClient),
        ServiceKind::Object => quote!(HasObjectClient),
        ServiceKind::Workflow => quote!(HasWorkflowClient),
    };
    let constructor = match model.kind {
        ServiceKind::Service => quote! {
            impl<'a, C: #rt::Caller> ::restate_runtime::IntoServiceClient<C> for #client<'a, C> {
                fn create(caller: C) -> Self {
                    Self { caller, key: ::core::option::Option::None, _lifetime: ::core::marker::PhantomData }
                }
            }
        },
        ServiceKind::Object | ServiceKind::Workflow => {
            let trait_name = if model.kind == ServiceKind::Object {
                quote!(IntoObjectClient)
            } else {
                quote!(IntoWorkflowClient)
            };
            quote! {
                impl<'a, C: #rt::Caller> ::restate_runtime::#trait_name<C> for #client<'a, C> {
                    fn create(caller: C, key: ::std::string::String) -> Self {
                        Self { caller, key: ::core::option::Option::Some(key), _lifetime: ::core::marker::PhantomData }
                    }
                }
            }
        }
    };
    quote! {
        #[doc = #doc]
        pub struct #client<'a, C = ::restate_runtime::HandlerCaller<'a>> {
            caller: C,
            key: ::core::option::Option<::std::string::String>,
            _lifetime: ::core::marker::PhantomData<&'a ()>,
        }

        #constructor

        // By hand: a derive would ask `'a` of nothing but `C: Clone`, and that is all it needs.
        #[automatically_derived]
        impl<'a, C: ::core::clone::Clone> ::core::clone::Clone for #client<'a, C> {
            fn clone(&self) -> Self {
                Self {
                    caller: self.caller.clone(),
                    key: self.key.clone(),
                    _lifetime: ::core::marker::PhantomData,
                }
            }
        }

        #[automatically_derived]
        impl ::restate_runtime::#has_client for #self_ty {
            type Client<'a, C: #rt::Caller + 'a> = #client<'a, C>;
        }

        #[allow(dead_code)]
        impl<'a, C: #rt::Caller> #client<'a, C> {
            #(#methods)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::written;

    #[test]
    fn types_are_shown_as_written() {
        for (ty, shown) in [
            ("Option<String>", "Option<String>"),
            ("HashMap<String, Vec<u8>>", "HashMap<String, Vec<u8>>"),
            ("Vec<(u32, String)>", "Vec<(u32, String)>"),
            ("serde_json::Value", "serde_json::Value"),
            ("&'static str", "&'static str"),
            ("[u8; 4]", "[u8; 4]"),
            ("Result<(), String>", "Result<(), String>"),
        ] {
            let parsed: syn::Type = syn::parse_str(ty).unwrap();
            assert_eq!(written(&parsed), shown, "{ty}");
        }
    }
}
