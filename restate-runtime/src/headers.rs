//! [`Headers`]: the headers an invocation was sent with, looked up by name (case-insensitive)
//! or converted to an [`http::HeaderMap`]; it derefs to the `(name, value)` pairs that
//! `ctx.headers()` returned before, so code written against the pairs keeps compiling.

use std::ops::Deref;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The headers of an invocation, in arrival order, names in lower case.
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Tenants;
/// #[service]
/// impl Tenants {
///     #[handler]
///     async fn tenant(&self, ctx: Context<'_>) -> HandlerResult<Option<String>> {
///         let headers = ctx.headers();
///         // By name, any case; or as an `http::HeaderMap`; or as the pairs themselves.
///         assert_eq!(headers.get("X-Tenant"), headers.to_header_map().get("x-tenant").and_then(|v| v.to_str().ok()));
///         assert_eq!(headers.len(), headers.iter().count());
///         Ok(headers.get("x-tenant").map(str::to_owned))
///     }
/// }
/// ```
#[repr(transparent)]
pub struct Headers([(String, String)]);

impl Headers {
    pub(crate) fn new(pairs: &[(String, String)]) -> &Self {
        // SAFETY: `Headers` is a `repr(transparent)` wrapper of the slice, so the two
        // references have the same layout and the same lifetime.
        unsafe { &*(pairs as *const [(String, String)] as *const Self) }
    }

    /// The first value of `name` (compared without regard to case).
    ///
    /// ```
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)] pub struct S;
    /// # #[service] impl S { #[handler] async fn h(&self, ctx: Context<'_>) -> HandlerResult<()> {
    /// let request_id = ctx.headers().get("x-request-id").unwrap_or("none");
    /// # Ok(()) } }
    /// ```
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in arrival order.
    ///
    /// ```
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)] pub struct S;
    /// # #[service] impl S { #[handler] async fn h(&self, ctx: Context<'_>) -> HandlerResult<()> {
    /// let forwarded: Vec<&str> = ctx.headers().get_all("x-forwarded-for").collect();
    /// # Ok(()) } }
    /// ```
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The headers as an [`http::HeaderMap`] (a pair whose name or value is not valid HTTP,
    /// which the ingress never stores, is left out).
    ///
    /// ```
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)] pub struct S;
    /// # #[service] impl S { #[handler] async fn h(&self, ctx: Context<'_>) -> HandlerResult<()> {
    /// let map: http::HeaderMap = ctx.headers().to_header_map();
    /// let json = map.get(http::header::CONTENT_TYPE).is_some_and(|v| v == "application/json");
    /// # Ok(()) } }
    /// ```
    pub fn to_header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

impl Deref for Headers {
    type Target = [(String, String)];

    fn deref(&self) -> &[(String, String)] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn lookup_by_name_map_and_pairs() {
        let pairs = vec![
            ("x-tenant".to_owned(), "acme".to_owned()),
            ("x-forwarded-for".to_owned(), "10.0.0.1".to_owned()),
            ("x-forwarded-for".to_owned(), "10.0.0.2".to_owned()),
            ("bad header".to_owned(), "dropped".to_owned()),
        ];
        let headers = Headers::new(&pairs);
        assert_eq!(headers.get("X-TENANT"), Some("acme"));
        assert_eq!(headers.get("missing"), None);
        let all: Vec<_> = headers.get_all("x-forwarded-for").collect();
        assert_eq!(all, ["10.0.0.1", "10.0.0.2"]);
        let map = headers.to_header_map();
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 2);
        assert_eq!(map.len(), 3, "the invalid name is left out");
        // The pairs, as before.
        let pairs_again: &[(String, String)] = headers;
        assert_eq!(pairs_again.len(), 4);
        assert_eq!(headers[0].0, "x-tenant");
    }
}
