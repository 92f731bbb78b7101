//! Stage 1 of 3 (parse → validate → expand): reads the attribute and the annotated item into
//! syntax ([`Container`]) without judging it. Only an item that is not an impl block at all is
//! refused here; every rule is checked by `validate`.

use proc_macro2::TokenStream;
use syn::ItemImpl;

use crate::ast::Container;
use crate::model::ServiceKind;
use crate::options::MetaList;

pub(crate) fn parse(
    kind: ServiceKind,
    attr: TokenStream,
    item: TokenStream,
) -> Result<Container, syn::Error> {
    let item: ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!(
                "{} goes on an inherent impl block: `impl MyType {{ #[handler] async fn .. }}` ({e})",
                kind.attribute()
            ),
        )
    })?;
    Ok(Container::new(kind, syn::parse2::<MetaList>(attr), item))
}
