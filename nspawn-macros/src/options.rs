//! Parsing the attribute's arguments: `name = "value"` pairs, the `inside` flag and the
//! `machines(role = "chroot", ...)` list. Problems are collected, not returned at the first
//! one.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitStr, Meta, Token};

/// The options accepted, for messages.
pub const NAMES: &[&str] = &[
    "chroot",
    "scope",
    "crate",
    "inside",
    "flavor",
    "worker_threads",
    "network",
    "machines",
    "group",
];

/// What the attribute said, before validation.
#[derive(Default)]
pub struct Raw {
    pub chroot: Option<LitStr>,
    pub scope: Option<LitStr>,
    pub krate: Option<LitStr>,
    /// `flavor` of an async test's runtime.
    pub flavor: Option<LitStr>,
    /// `worker_threads` of a multi-thread runtime (an integer or a string).
    pub worker_threads: Option<LitStr>,
    /// `network = "..."`.
    pub network: Option<LitStr>,
    /// `machines(role = "chroot", ...)`: the list, and its roles.
    pub machines: Option<(syn::MetaList, Vec<(syn::Ident, LitStr)>)>,
    /// `group = NAME`: a `const` `nspawn::Group` declared once for the module.
    pub group: Option<syn::Path>,
    /// `inside`: the body runs inside the machine.
    pub inside: Option<syn::Path>,
    /// `chroot = ["a", "b"]`: one test per chroot (the array, and its names).
    pub matrix: Option<(syn::ExprArray, Vec<LitStr>)>,
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
            Meta::List(list) if list.path.is_ident("machines") => {
                machines(&mut raw, list);
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
        if name == "group" {
            group(&mut raw, &pair);
            continue;
        }
        if let (true, Expr::Array(array)) = (name == "chroot", &pair.value) {
            if raw.chroot.is_some() || raw.matrix.is_some() {
                raw.errors.push(syn::Error::new_spanned(
                    &pair.path,
                    "duplicate option `chroot`",
                ));
            } else {
                raw.matrix = Some((array.clone(), matrix_names(array, &mut raw.errors)));
            }
            continue;
        }
        let slot = match name.as_str() {
            "chroot" => &mut raw.chroot,
            "scope" => &mut raw.scope,
            "crate" => &mut raw.krate,
            "flavor" => &mut raw.flavor,
            "worker_threads" => &mut raw.worker_threads,
            "network" => &mut raw.network,
            "machines" => {
                raw.chroot_attempted = true;
                raw.errors.push(syn::Error::new_spanned(
                    &pair,
                    "write the group as a list: machines(server = \"bookworm\", client = \"trixie\")",
                ));
                continue;
            }
            _ => {
                let msg = format!("unknown option; valid options: {}", NAMES.join(", "));
                raw.errors.push(syn::Error::new_spanned(&pair.path, msg));
                continue;
            }
        };
        let read = if name == "worker_threads" {
            number_or_string
        } else {
            string_literal
        };
        let value = match read(&pair.value) {
            Some(v) => v,
            None => {
                let msg = if name == "chroot" {
                    "`chroot` takes a string literal, or an array of them for a matrix: \
                     chroot = \"bookworm\" or chroot = [\"bookworm\", \"trixie\"]"
                        .to_string()
                } else {
                    format!("`{name}` takes a string literal, e.g. {name} = \"...\"")
                };
                raw.errors.push(syn::Error::new_spanned(&pair.value, msg));
                continue;
            }
        };
        if slot.is_some() || (name == "chroot" && raw.matrix.is_some()) {
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

/// `group = NAME`: the path of a `const` `nspawn::Group`.
fn group(raw: &mut Raw, pair: &syn::MetaNameValue) {
    raw.chroot_attempted = true;
    if raw.group.is_some() {
        raw.errors.push(syn::Error::new_spanned(
            &pair.path,
            "duplicate option `group`",
        ));
        return;
    }
    match &pair.value {
        Expr::Path(path) => raw.group = Some(path.path.clone()),
        other => raw.errors.push(syn::Error::new_spanned(
            other,
            "`group` names a `const` of type `nspawn::Group`: group = WEB",
        )),
    }
}

/// `machines(role = "chroot", ...)`: each role an identifier (it names the test's parameter),
/// each chroot a string literal, no role twice.
fn machines(raw: &mut Raw, list: syn::MetaList) {
    if raw.machines.is_some() {
        raw.errors.push(syn::Error::new_spanned(
            &list.path,
            "duplicate option `machines`",
        ));
        return;
    }
    raw.chroot_attempted = true;
    let pairs = match list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
        Ok(pairs) => pairs,
        Err(e) => {
            raw.errors.push(syn::Error::new(
                e.span(),
                "expected `role = \"chroot\"` pairs: machines(server = \"bookworm\", client = \"trixie\")",
            ));
            raw.machines = Some((list, Vec::new()));
            return;
        }
    };
    let mut roles: Vec<(syn::Ident, LitStr)> = Vec::new();
    for pair in pairs {
        let (ident, value) = match &pair {
            Meta::NameValue(nv) => (nv.path.get_ident().cloned(), string_literal(&nv.value)),
            _ => (None, None),
        };
        let (Some(ident), Some(value)) = (ident, value) else {
            raw.errors.push(syn::Error::new_spanned(
                &pair,
                "each machine is `role = \"chroot\"`, e.g. server = \"bookworm\"",
            ));
            continue;
        };
        if roles.iter().any(|(r, _)| *r == ident) {
            raw.errors.push(syn::Error::new_spanned(
                &ident,
                format!("role `{ident}` is named twice"),
            ));
            continue;
        }
        roles.push((ident, value));
    }
    raw.machines = Some((list, roles));
}

/// The names of `chroot = [...]`; elements that are not string literals are errors.
fn matrix_names(array: &syn::ExprArray, errors: &mut Vec<syn::Error>) -> Vec<LitStr> {
    let mut names = Vec::new();
    for element in &array.elems {
        match string_literal(element) {
            Some(name) => names.push(name),
            None => errors.push(syn::Error::new_spanned(
                element,
                "each chroot of a matrix is a string literal, e.g. chroot = [\"bookworm\", \"trixie\"]",
            )),
        }
    }
    names
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

/// `worker_threads = 4`, as tokio writes it, or `"4"`.
fn number_or_string(expr: &Expr) -> Option<LitStr> {
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(i), ..
        }) => Some(LitStr::new(i.base10_digits(), i.span())),
        other => string_literal(other),
    }
}

/// A string as a literal with the call-site span, for defaults.
pub fn literal(value: &str) -> LitStr {
    LitStr::new(value, Span::call_site())
}
