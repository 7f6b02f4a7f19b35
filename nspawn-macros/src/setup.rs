//! `#[nspawn::setup]`: a module's set-up, run once on each of its machines before its tests.
//! The same flow as the test attribute: options -> validate -> expand, every error at once.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::LitStr;

use crate::maybe_fn::MaybeItemFn;
use crate::options::Raw;
use crate::validate;
use crate::workspace;

/// Validated options of a set-up.
pub struct Setup {
    /// The chroots whose machines it sets up: one, or each of a matrix.
    pub chroots: Vec<LitStr>,
    pub krate: syn::Path,
    pub inside: bool,
}

/// Checks the options and the function; returns the options and every error.
pub fn validate(raw: Raw, func: &MaybeItemFn) -> (Setup, Vec<syn::Error>) {
    let mut errors = raw.errors;
    if let Some(scope) = &raw.scope {
        errors.push(syn::Error::new_spanned(
            scope,
            "a set-up has no scope: it runs on every machine of its module, shared or not",
        ));
    }
    if let Some(network) = &raw.network {
        errors.push(syn::Error::new_spanned(
            network,
            "a set-up has no network: it runs on the machines its module's tests get",
        ));
    }
    if let Some((list, _)) = &raw.machines {
        errors.push(syn::Error::new_spanned(
            list,
            "a set-up runs on each machine of a group whose chroot is its own: name that chroot",
        ));
    }
    let krate = validate::krate(raw.krate.as_ref(), &mut errors);
    let declared = workspace::declared();
    let chroots = validate::chroots(
        raw.chroot,
        raw.matrix,
        raw.chroot_attempted,
        declared.as_ref(),
        &mut errors,
    );
    let inside = raw.inside.is_some();
    check_function(func, inside, &mut errors);
    (
        Setup {
            chroots,
            krate,
            inside,
        },
        errors,
    )
}

fn check_function(f: &MaybeItemFn, inside: bool, errors: &mut Vec<syn::Error>) {
    let sig = &f.sig;
    if let Some(token) = &sig.asyncness {
        errors.push(syn::Error::new_spanned(token, "a set-up cannot be async"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a set-up cannot be generic",
        ));
    }
    if inside {
        validate::check_inside(f, errors);
    } else {
        check_parameters(f, errors);
    }
    for attr in f.attrs.iter().filter(|a| validate::is_test_attribute(a)) {
        errors.push(syn::Error::new_spanned(
            attr,
            "a set-up is not a test; remove this attribute",
        ));
    }
}

fn check_parameters(f: &MaybeItemFn, errors: &mut Vec<syn::Error>) {
    let sig = &f.sig;
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(first) if validate::is_machine_ref(first) => {}
        Some(first) => errors.push(syn::Error::new_spanned(
            first,
            "the parameter must be `&nspawn::Machine`",
        )),
        None => errors.push(syn::Error::new_spanned(
            &sig.ident,
            "a set-up takes the machine it prepares: `fn name(machine: &nspawn::Machine)`",
        )),
    }
    for extra in inputs {
        errors.push(syn::Error::new_spanned(
            extra,
            "a set-up takes one parameter: `&nspawn::Machine`",
        ));
    }
}

/// The function as written, plus its registration with the runtime.
pub fn expand(setup: &Setup, func: MaybeItemFn) -> TokenStream {
    let Setup {
        chroots,
        krate,
        inside,
    } = setup;
    let MaybeItemFn {
        attrs,
        vis,
        sig,
        body,
    } = func;
    let name = &sig.ident;
    let wrapper = format_ident!("__nspawn_setup_{}", name);
    let run = if *inside {
        let inside_fn = format_ident!("__nspawn_inside_{}", name);
        let wrapper = crate::expand::inside_wrapper(krate, &inside_fn, name);
        quote! {
            #wrapper
            #krate::__private::inside_setup(machine, #inside_fn)
        }
    } else {
        quote!(#krate::__private::BodyResult::into_result(#name(machine)))
    };
    quote! {
        #(#attrs)*
        #[allow(dead_code)]
        #vis #sig #body

        #[doc(hidden)]
        fn #wrapper(machine: &#krate::Machine) -> ::core::result::Result<(), ::std::string::String> {
            #run
        }

        #(
            #krate::__private::inventory::submit! {
                #krate::__private::SetupInfo {
                    module: ::core::module_path!(),
                    name: ::core::stringify!(#name),
                    chroot: #chroots,
                    run: #wrapper,
                }
            }
        )*
    }
}
