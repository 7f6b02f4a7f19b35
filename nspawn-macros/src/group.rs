//! `group = NAME`: a test of a group declared once as a `const nspawn::Group`. The roles are
//! the const's to know: the expansion asks it, at compile time, which machine each parameter
//! names, so a parameter that names no role is a compile error at the parameter.

use crate::maybe_fn::MaybeItemFn;
use crate::options::Raw;

/// Whatever `group` cannot go with, and the function's parameters, each `&Machine` with a
/// name; returns the parameter names (a leading `_` dropped).
pub fn check(raw: &Raw, f: &MaybeItemFn, errors: &mut Vec<syn::Error>) -> Vec<syn::Ident> {
    let Some(group) = &raw.group else {
        return Vec::new();
    };
    let conflicts: [(Option<proc_macro2::TokenStream>, &str); 5] = [
        (
            raw.chroot.as_ref().map(quote::ToTokens::to_token_stream),
            "`chroot`",
        ),
        (
            raw.matrix
                .as_ref()
                .map(|(a, _)| quote::ToTokens::to_token_stream(a)),
            "`chroot`",
        ),
        (
            raw.machines
                .as_ref()
                .map(|(l, _)| quote::ToTokens::to_token_stream(l)),
            "`machines(...)`",
        ),
        (
            raw.network.as_ref().map(quote::ToTokens::to_token_stream),
            "`network` (the group declares it)",
        ),
        (
            raw.inside.as_ref().map(quote::ToTokens::to_token_stream),
            "`inside`",
        ),
    ];
    for (tokens, what) in conflicts {
        if let Some(tokens) = tokens {
            errors.push(syn::Error::new_spanned(
                tokens,
                format!(
                    "a test of group `{}` takes its machines from the group: drop {what}",
                    path_text(group)
                ),
            ));
        }
    }
    let mut names = Vec::new();
    for param in &f.sig.inputs {
        match name_of(param).filter(|_| crate::validate::is_machine_ref(param)) {
            Some(name) => names.push(name),
            None => errors.push(syn::Error::new_spanned(
                param,
                "a test of a group takes the machines it uses as `role: &nspawn::Machine` \
                 (`server_lazy` for the role `server-lazy`)",
            )),
        }
    }
    names
}

fn name_of(param: &syn::FnArg) -> Option<syn::Ident> {
    let syn::FnArg::Typed(pat) = param else {
        return None;
    };
    let syn::Pat::Ident(ident) = pat.pat.as_ref() else {
        return None;
    };
    let name = ident.ident.to_string();
    let name = name.strip_prefix('_').unwrap_or(&name);
    Some(syn::Ident::new(name, ident.ident.span()))
}

fn path_text(path: &syn::Path) -> String {
    quote::ToTokens::to_token_stream(path)
        .to_string()
        .replace(' ', "")
}
