//! Parsing the attribute's arguments: `name = "value"` pairs. Problems are collected, not
//! returned at the first one.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitStr, MetaNameValue, Token};

/// The options accepted, for messages.
pub const NAMES: &[&str] = &["chroot", "scope", "crate"];

/// What the attribute said, before validation.
#[derive(Default)]
pub struct Raw {
    pub chroot: Option<LitStr>,
    pub scope: Option<LitStr>,
    pub krate: Option<LitStr>,
    /// `chroot` was written, even if with a bad value, or the arguments did not parse: an
    /// omitted chroot is then not worth a second error.
    pub chroot_attempted: bool,
    pub errors: Vec<syn::Error>,
}

/// Reads `name = "value", ...`. Unknown names, duplicates and values that are not string
/// literals become errors on the offending tokens.
pub fn parse(args: TokenStream) -> Raw {
    let mut raw = Raw::default();
    let pairs = match Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args.clone())
    {
        Ok(p) => p,
        Err(_) => {
            raw.errors.push(syn::Error::new_spanned(
                &args,
                format!(
                    "expected `name = \"value\"` pairs; valid options: {}",
                    NAMES.join(", ")
                ),
            ));
            raw.chroot_attempted = true;
            return raw;
        }
    };
    for pair in pairs {
        let name = pair
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        raw.chroot_attempted |= name == "chroot";
        let slot = match name.as_str() {
            "chroot" => &mut raw.chroot,
            "scope" => &mut raw.scope,
            "crate" => &mut raw.krate,
            _ => {
                let msg = format!("unknown option; valid options: {}", NAMES.join(", "));
                raw.errors.push(syn::Error::new_spanned(&pair.path, msg));
                continue;
            }
        };
        let value = match string_literal(&pair.value) {
            Some(v) => v,
            None => {
                let msg = format!("`{name}` takes a string literal, e.g. {name} = \"...\"");
                raw.errors.push(syn::Error::new_spanned(&pair.value, msg));
                continue;
            }
        };
        if slot.is_some() {
            raw.errors.push(syn::Error::new_spanned(
                &pair.path,
                format!("duplicate option `{name}`"),
            ));
            continue;
        }
        *slot = Some(value);
    }
    raw
}

fn string_literal(expr: &Expr) -> Option<LitStr> {
    match expr {
        Expr::Lit(lit) => match &lit.lit {
            Lit::Str(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// A string as a literal with the call-site span, for defaults.
pub fn literal(value: &str) -> LitStr {
    LitStr::new(value, Span::call_site())
}
