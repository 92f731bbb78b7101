//! Collects every error of one expansion, so the user sees all of them at once. It must be
//! consumed by [`Ctxt::check`]: dropping it unchecked panics, so no path can lose an error.

use std::fmt::Display;

use quote::ToTokens;

/// An error collector; `check` turns it into one combined error.
pub(crate) struct Ctxt {
    /// `None` once checked.
    errors: Option<Vec<syn::Error>>,
}

impl Ctxt {
    pub fn new() -> Self {
        Self {
            errors: Some(Vec::new()),
        }
    }

    /// Records an error at the span of `tokens`.
    pub fn error_spanned_by(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error that already has a span.
    pub fn push(&mut self, error: syn::Error) {
        self.errors
            .as_mut()
            .expect("errors recorded after check")
            .push(error);
    }

    /// How many errors so far.
    pub fn len(&self) -> usize {
        self.errors.as_ref().map_or(0, Vec::len)
    }

    /// All errors combined, or `Ok` when there were none.
    pub fn check(mut self) -> Result<(), syn::Error> {
        let mut errors = self.errors.take().expect("checked once").into_iter();
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                first.extend(errors);
                Err(first)
            }
        }
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if self.errors.is_some() && !std::thread::panicking() {
            panic!("an error collector was dropped without `check()`: its errors would be lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;

    #[test]
    fn check_combines_every_error() {
        let mut cx = Ctxt::new();
        assert!(Ctxt::new().check().is_ok());
        cx.error_spanned_by(quote::quote!(a), "first");
        cx.error_spanned_by(quote::quote!(b), "second");
        assert_eq!(cx.len(), 2);
        let messages: Vec<_> = cx
            .check()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    #[should_panic(expected = "dropped without `check()`")]
    fn dropping_unchecked_panics() {
        let mut cx = Ctxt::new();
        cx.error_spanned_by(quote::quote!(a), "lost");
    }
}
