//! The item under the attribute, read only as far as the macro needs it: attributes,
//! visibility and signature, with the body kept as raw tokens (as tracing-attributes does).
//! A body with a syntax error mid-edit is then passed on untouched, and rustc reports the real
//! error instead of the macro hiding it.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Signature, Visibility};

/// A function whose body has not been parsed.
pub struct MaybeItemFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    /// The body, braces included.
    pub body: TokenStream,
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let body: proc_macro2::Group = input.parse()?;
        if body.delimiter() != proc_macro2::Delimiter::Brace || !input.is_empty() {
            return Err(input.error("expected the function's body"));
        }
        Ok(MaybeItemFn {
            attrs,
            vis,
            sig,
            body: body.into_token_stream(),
        })
    }
}
