//! Writing the test: a `#[test]` function that hands the original body to the runtime.
//!
//! ```ignore
//! #[test]
//! fn name() -> R {
//!     const __NSPAWN_TEST: TestInfo = TestInfo { module: module_path!(), name: "name", .. };
//!     inventory::submit! { __NSPAWN_TEST }      // lets the runtime count a module's tests
//!     fn __nspawn_body(machine: &Machine) -> R { /* the original body */ }
//!     run(&__NSPAWN_TEST, __nspawn_body)
//! }
//! ```
//!
//! An `inside` test's body becomes a function the machine runs (`Machine::call`), its result
//! made a message; the test itself returns `()`:
//!
//! ```ignore
//! fn __nspawn_body() -> R { /* the original body */ }
//! fn __nspawn_inside((): ()) -> Result<(), String> { BodyResult::into_result(__nspawn_body()) }
//! run(&__NSPAWN_TEST, |machine| inside(&__NSPAWN_TEST, machine, __nspawn_inside))
//! ```

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::maybe_fn::MaybeItemFn;
use crate::validate::{Options, Scope};

pub fn expand(options: &Options, func: MaybeItemFn) -> TokenStream {
    let Options {
        chroot,
        scope,
        krate,
        inside,
        manifest,
    } = options;
    let MaybeItemFn {
        attrs,
        vis,
        sig,
        body,
    } = func;
    let name = &sig.ident;
    let output = &sig.output;
    let ignored = attrs.iter().any(|a| a.path().is_ident("ignore"));
    let expects_panic = attrs.iter().any(|a| a.path().is_ident("should_panic"));
    let scope = match scope {
        Scope::Module => quote!(#krate::__private::Scope::Module),
        Scope::Test => quote!(#krate::__private::Scope::Test),
    };
    let body_fn = format_ident!("__nspawn_body");
    let (body_sig, call) = match sig.inputs.first() {
        Some(param) => (quote!(fn #body_fn(#param) #output), quote!(#body_fn)),
        None => (
            quote!(fn #body_fn() #output),
            quote!(|_: &#krate::Machine| #body_fn()),
        ),
    };
    let (test_output, inside_fn, call) = if *inside {
        let inside_fn = format_ident!("__nspawn_inside");
        (
            quote!(),
            quote! {
                fn #inside_fn((): ()) -> ::core::result::Result<(), ::std::string::String> {
                    #krate::__private::BodyResult::into_result(#body_fn())
                }
            },
            quote!(|machine: &#krate::Machine| {
                #krate::__private::inside(&__NSPAWN_TEST, machine, #inside_fn)
            }),
        )
    } else {
        (quote!(#output), quote!(), call)
    };
    // Editing the workspace manifest (the chroot declarations) must rebuild the test.
    let track = manifest.as_ref().map(|m| {
        let m = m.display().to_string();
        quote!(
            const _: &[u8] = ::core::include_bytes!(#m);
        )
    });
    quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() #test_output {
            #track
            const __NSPAWN_TEST: #krate::__private::TestInfo = #krate::__private::TestInfo {
                module: ::core::module_path!(),
                name: ::core::stringify!(#name),
                chroot: #chroot,
                scope: #scope,
                ignored: #ignored,
                expects_panic: #expects_panic,
                manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
            };
            #krate::__private::inventory::submit! { __NSPAWN_TEST }
            #[used]
            #[link_section = ".init_array"]
            static __NSPAWN_DROP_PRIVILEGES: extern "C" fn() = #krate::__private::init_privileges;
            #body_sig #body
            #inside_fn
            #krate::__private::run(&__NSPAWN_TEST, #call)
        }
    }
}
