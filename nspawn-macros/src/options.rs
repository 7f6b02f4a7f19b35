//! Parsing the attribute's arguments: `name = "value"` pairs and the `inside` flag. Problems
//! are collected, not returned at the first one.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitStr, Meta, Token};

/// The options accepted, for messages.
pub const NAMES: &[&str] = &["chroot", "scope", "crate", "inside"];

/// What the attribute said, before validation.
#[derive(Default)]
pub struct Raw {
    pub chroot: Option<LitStr>,
    pub scope: Option<LitStr>,
    pub krate: Option<LitStr>,
    /// `inside`: the body runs inside the machine.
    pub inside: Option<syn::Path>,
    /// `chroot` was written, even if with a bad value, or the arguments did not parse: an
    /// omitted chroot is then not worth a second error.
    pub chroot_attempted: bool,
    pub errors: Vec<syn::Error>,
}

/// Reads `name = "value", ..., inside`. Unknown names, duplicates and values that are not
/// string literals become errors on the offending tokens.
pub fn parse(args: TokenStream) -> Raw {
    let mut raw = Raw::default();
    let items = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args.clone()) {
        Ok(p) => p,
        Err(_) => {
            raw.errors.push(syn::Error::new_spanned(
                &args,
                format!(
                    "expected `name = \"value\"` pairs or `inside`; valid options: {}",
                    NAMES.join(", ")
                ),
            ));
            raw.chroot_attempted = true;
            return raw;
        }
    };
    for item in items {
        let pair = match item {
            Meta::NameValue(pair) => pair,
            Meta::Path(path) => {
                flag(&mut raw, path);
                continue;
            }
            Meta::List(list) => {
                let msg = format!(
                    "expected `name = \"value\"` or `inside`; valid options: {}",
                    NAMES.join(", ")
                );
                raw.errors.push(syn::Error::new_spanned(list, msg));
                continue;
            }
        };
        if pair.path.is_ident("inside") {
            raw.errors.push(syn::Error::new_spanned(
                &pair,
                "`inside` takes no value: write `inside`",
            ));
            continue;
        }
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

/// A bare word: `inside`, or a name that needs a value.
fn flag(raw: &mut Raw, path: syn::Path) {
    if !path.is_ident("inside") {
        let name = path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        let msg = if NAMES.contains(&name.as_str()) {
            format!("`{name}` needs a value: {name} = \"...\"")
        } else {
            format!(
                "unknown option; to name a chroot write chroot = \"{name}\"; valid options: {}",
                NAMES.join(", ")
            )
        };
        // A bare word is most likely the chroot: one error about it is enough.
        raw.chroot_attempted = true;
        raw.errors.push(syn::Error::new_spanned(&path, msg));
        return;
    }
    if raw.inside.is_some() {
        raw.errors
            .push(syn::Error::new_spanned(&path, "duplicate option `inside`"));
        return;
    }
    raw.inside = Some(path);
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
