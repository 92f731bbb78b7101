//! The syntax the macros read, before any rule is checked: the impl block with the
//! `#[handler]` attributes taken off, and each handler's attribute, signature and docs.

use syn::{Attribute, ImplItem, ItemImpl, Meta, Signature};

use crate::model::ServiceKind;
use crate::options::MetaList;

/// An annotated impl block.
pub(crate) struct Container {
    pub kind: ServiceKind,
    /// The service attribute's options, or why they do not parse.
    pub options: syn::Result<MetaList>,
    /// The impl block without the `#[handler]` attributes, emitted as it is.
    pub item: ItemImpl,
    /// The methods marked `#[handler]`, in order.
    pub handlers: Vec<HandlerAst>,
    /// `#[handler]` attributes found on items that are no methods (taken off them).
    pub misplaced: Vec<Attribute>,
}

/// A method marked `#[handler]`.
pub(crate) struct HandlerAst {
    /// The attribute as written (`#[handler]`, `#[handler(..)]`, or a wrong form).
    pub attr: Meta,
    pub sig: Signature,
    pub docs: Vec<Attribute>,
    /// Its `#[cfg(..)]` attributes: whatever is generated for it is switched with it.
    pub cfgs: Vec<Attribute>,
    /// A second `#[handler]` attribute on the method, if any (refused: one takes all options).
    pub repeated: Option<Attribute>,
}

/// Whether an attribute is ours (`#[handler]` or `#[restate_runtime::handler]`).
pub(crate) fn is_handler_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "handler")
}

impl Container {
    /// Splits the handlers off the impl block.
    pub fn new(kind: ServiceKind, options: syn::Result<MetaList>, mut item: ItemImpl) -> Self {
        let mut handlers = Vec::new();
        let mut misplaced = Vec::new();
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                if let Some(attrs) = item_attrs(impl_item) {
                    misplaced.extend(attrs.iter().filter(|a| is_handler_attr(a)).cloned());
                    attrs.retain(|a| !is_handler_attr(a));
                }
                continue;
            };
            let Some(at) = method.attrs.iter().position(is_handler_attr) else {
                continue;
            };
            // Ours, not a real attribute: it must not stay on the emitted method.
            let attr = method.attrs.remove(at);
            let repeated = method.attrs.iter().find(|a| is_handler_attr(a)).cloned();
            method.attrs.retain(|a| !is_handler_attr(a));
            handlers.push(HandlerAst {
                attr: attr.meta,
                repeated,
                sig: method.sig.clone(),
                docs: attrs_named(&method.attrs, "doc"),
                cfgs: attrs_named(&method.attrs, "cfg"),
            });
        }
        Self {
            kind,
            options,
            item,
            handlers,
            misplaced,
        }
    }
}

/// The attributes of an impl item that is no method, if it has any.
fn item_attrs(item: &mut ImplItem) -> Option<&mut Vec<Attribute>> {
    match item {
        ImplItem::Const(c) => Some(&mut c.attrs),
        ImplItem::Type(t) => Some(&mut t.attrs),
        ImplItem::Macro(m) => Some(&mut m.attrs),
        _ => None,
    }
}

fn attrs_named(attrs: &[Attribute], name: &str) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident(name))
        .cloned()
        .collect()
}
