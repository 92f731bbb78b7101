//! Attribute macros of `restate-runtime`: `#[service]`, `#[object]`, `#[workflow]` on an inherent
//! impl block, and `#[handler]` on its methods. Each entry point runs three stages: `parse`
//! reads the syntax (`ast`), `validate` checks every rule (one function each, errors collected
//! in a `Ctxt` that cannot be dropped unchecked) into a `model`, and `expand` generates code
//! from the model. Documentation for users lives on the re-exports in `restate-runtime`.

mod ast;
mod ctxt;
mod duration;
mod expand;
mod model;
mod options;
mod parse;
mod validate;

use proc_macro::TokenStream;

use model::ServiceKind;
use validate::Recovery;

/// See `restate_runtime::service`.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_with(ServiceKind::Service, attr, item)
}

/// See `restate_runtime::object`.
#[proc_macro_attribute]
pub fn object(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_with(ServiceKind::Object, attr, item)
}

/// See `restate_runtime::workflow`.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_with(ServiceKind::Workflow, attr, item)
}

/// See `restate_runtime::handler`. On its own (outside a service impl) it is an error: the
/// service attribute consumes it.
#[proc_macro_attribute]
pub fn handler(_attr: TokenStream, item: TokenStream) -> TokenStream {
    // The item is kept as it is; the error points at the `#[handler]` attribute itself.
    let mut out = proc_macro2::TokenStream::from(item);
    out.extend(
        syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[handler] marks a method of an impl block annotated with #[service], #[object] or #[workflow]: \
             move this function into such a block, as `async fn name(&self, ctx: .., ..)`",
        )
        .to_compile_error(),
    );
    out.into()
}

fn expand_with(kind: ServiceKind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let attr = proc_macro2::TokenStream::from(attr);
    let item = proc_macro2::TokenStream::from(item);
    let analyzed = parse::parse(kind, attr, item.clone()).map_err(|errors| validate::Failure {
        errors,
        recovery: Recovery::Original,
    });
    match analyzed.and_then(validate::validate) {
        Ok(model) => expand::expand(&model).into(),
        Err(failure) => {
            // Emit what still stands next to the errors, so that code using the service (its
            // client, its `Service` impl, its other handlers) does not fail in turn.
            let mut out = match failure.recovery {
                Recovery::Original => item,
                Recovery::Nothing => proc_macro2::TokenStream::new(),
                Recovery::Item(tokens) => tokens,
                Recovery::Partial(model) => expand::expand(&model),
            };
            out.extend(failure.errors.to_compile_error());
            out.into()
        }
    }
}
