//! Writing the test: a `#[test]` function that hands the original body to the runtime.
//!
//! ```text
//! #[test]
//! fn name() -> R {
//!     const __NSPAWN_TEST: TestInfo = TestInfo { module: module_path!(), name: "name", .. };
//!     inventory::submit! { __NSPAWN_TEST }      // lets the runtime count a module's tests
//!     fn __nspawn_body(machine: &Machine) -> R { /* the original body */ }
//!     run_group(&__NSPAWN_TEST, |machines| __nspawn_body(&machines[0]))
//! }
//! ```
//!
//! An `inside` test's body becomes a function the machine runs (`Machine::call`), its result
//! made a message; the test itself returns `()`:
//!
//! ```text
//! fn __nspawn_body() -> R { /* the original body */ }
//! fn __nspawn_inside((): ()) -> Result<(), String> { BodyResult::into_result(__nspawn_body()) }
//! run_group(&__NSPAWN_TEST, |machines| inside(&__NSPAWN_TEST, &machines[0], __nspawn_inside))
//! ```
//!
//! A group (`machines(server = "bookworm", client = "trixie")`) is one test whose body takes
//! its machines by role: `|machines| __nspawn_body(&machines[1], &machines[0])` for
//! `fn t(client: &Machine, server: &Machine)`.
//!
//! A matrix (`chroot = ["bookworm", "trixie"]`) keeps the body beside the function's other
//! items, with one description per chroot whose module is the function's (so that each
//! instance shares its chroot's module machine), and makes a module of the function's name
//! holding one `#[test]` per chroot: `name::bookworm`, `name::trixie`.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};
use syn::{Attribute, LitStr};

use crate::maybe_fn::MaybeItemFn;
use crate::options::literal;
use crate::validate::{instance_name, Flavor, Options, Scope};

pub fn expand(options: &Options, func: MaybeItemFn) -> TokenStream {
    if options.matrix {
        matrix(options, func)
    } else {
        single(options, func)
    }
}

/// What every expansion needs, from the options and the signature.
struct Parts<'a> {
    options: &'a Options,
    ignored: bool,
    expects_panic: bool,
    scope: TokenStream,
    track: Option<TokenStream>,
}

impl<'a> Parts<'a> {
    fn new(options: &'a Options, attrs: &[Attribute]) -> Parts<'a> {
        let krate = &options.krate;
        // Editing the workspace manifest (the chroot declarations) must rebuild the test.
        let track = options.manifest.as_ref().map(|m| {
            let m = m.display().to_string();
            quote!(
                const _: &[u8] = ::core::include_bytes!(#m);
            )
        });
        Parts {
            options,
            ignored: attrs.iter().any(|a| a.path().is_ident("ignore")),
            expects_panic: attrs.iter().any(|a| a.path().is_ident("should_panic")),
            scope: match options.scope {
                Scope::Module => quote!(#krate::__private::Scope::Module),
                Scope::Test => quote!(#krate::__private::Scope::Test),
            },
            track,
        }
    }

    /// The description of one test (`name` is its name within its module), and its
    /// registration: two items.
    fn info(&self, info: &Ident, name: TokenStream, chroot: &LitStr) -> Vec<TokenStream> {
        let krate = &self.options.krate;
        let (scope, ignored, expects_panic) = (&self.scope, self.ignored, self.expects_panic);
        let network = self.options.network.clone().unwrap_or_else(|| literal(""));
        let machines = self.options.machines.iter().map(|(role, chroot)| {
            let role = role.to_string();
            quote!((#role, #chroot))
        });
        let mut chroot = quote!(#chroot);
        let mut network = quote!(#network);
        let mut machines = quote!(&[#(#machines),*]);
        let mut setups = quote!(&[]);
        let mut serial = quote!(false);
        let mut role_networks = quote!(&[]);
        // A group's const answers all of these at compile time.
        if let Some((group, _)) = &self.options.group {
            chroot = quote!(#group.machines[0].1);
            network = quote!(#group.network);
            machines = quote!(#group.machines);
            setups = quote!(#group.setups);
            serial = quote!(#group.serial);
            role_networks = quote!(#group.role_networks);
        }
        vec![
            quote! {
                #[allow(non_upper_case_globals)]
                const #info: #krate::__private::TestInfo = #krate::__private::TestInfo {
                    module: ::core::module_path!(),
                    name: #name,
                    chroot: #chroot,
                    scope: #scope,
                    ignored: #ignored,
                    expects_panic: #expects_panic,
                    manifest_dir: ::core::env!("CARGO_MANIFEST_DIR"),
                    network: #network,
                    machines: #machines,
                    setups: #setups,
                    serial: #serial,
                    role_networks: #role_networks,
                };
            },
            quote!(#krate::__private::inventory::submit! { #info }),
        ]
    }

    /// The body as a function of its own, and, for `inside`, the function the machine runs.
    fn body(&self, sig: &syn::Signature, body: &TokenStream, body_fn: &Ident) -> Vec<TokenStream> {
        let output = &sig.output;
        let krate = &self.options.krate;
        let params = &sig.inputs;
        let asyncness = &sig.asyncness;
        let mut items = vec![quote! {
            #[allow(non_snake_case)]
            #asyncness fn #body_fn(#params) #output #body
        }];
        if self.options.inside {
            let inside_fn = format_ident!("{}_inside", body_fn);
            items.push(inside_wrapper(krate, &inside_fn, body_fn));
        }
        items
    }

    /// The body's arguments, from `machines: &[Machine]`: a group's machines by role, or the
    /// one machine if the body takes it.
    fn arguments(&self, sig: &syn::Signature) -> TokenStream {
        if let Some((_, names)) = &self.options.group {
            let picks = names.iter().map(|name| role_const(&sig.ident, name));
            return quote!(#(&machines[#picks]),*);
        }
        if self.options.machines.is_empty() {
            return match sig.inputs.first() {
                Some(_) => quote!(&machines[0]),
                None => quote!(),
            };
        }
        let indexes = &self.options.parameters;
        quote!(#(&machines[#indexes]),*)
    }

    /// What `run_group` is given: the body, taking the machines; `prefix` is where the body is.
    fn call(
        &self,
        sig: &syn::Signature,
        body_fn: &Ident,
        prefix: &TokenStream,
        info: &TokenStream,
    ) -> TokenStream {
        let krate = &self.options.krate;
        let args = self.arguments(sig);
        if let Some(flavor) = self.options.flavor {
            let flavor = match flavor {
                Flavor::CurrentThread => quote!(#krate::__private::Flavor::CurrentThread),
                Flavor::MultiThread(None) => {
                    quote!(#krate::__private::Flavor::MultiThread(::core::option::Option::None))
                }
                Flavor::MultiThread(Some(n)) => {
                    quote!(#krate::__private::Flavor::MultiThread(::core::option::Option::Some(#n)))
                }
            };
            return quote!(|machines: &[#krate::Machine]| {
                let _ = machines;
                #krate::__private::block_on(#flavor, #prefix #body_fn(#args))
            });
        }
        if self.options.inside {
            let inside_fn = format_ident!("{}_inside", body_fn);
            quote!(|machines: &[#krate::Machine]| {
                #krate::__private::inside(&#info, &machines[0], #prefix #inside_fn)
            })
        } else {
            quote!(|machines: &[#krate::Machine]| {
                let _ = machines;
                #prefix #body_fn(#args)
            })
        }
    }

    /// The `#[test]` function itself.
    fn test_fn(
        &self,
        attrs: &[Attribute],
        vis: TokenStream,
        name: &Ident,
        output: TokenStream,
        inner: TokenStream,
        run: TokenStream,
    ) -> TokenStream {
        let krate = &self.options.krate;
        quote! {
            #(#attrs)*
            #[::core::prelude::v1::test]
            #vis fn #name() #output {
                #inner
                #[used]
                #[link_section = ".init_array"]
                static __NSPAWN_DROP_PRIVILEGES: extern "C" fn() = #krate::__private::init_privileges;
                #krate::__private::run_group(#run)
            }
        }
    }

    /// A test's return type: an `inside` test returns `()`, its body's result was handled in
    /// the machine.
    fn test_output(&self, sig: &syn::Signature) -> TokenStream {
        if self.options.inside {
            quote!()
        } else {
            let output = &sig.output;
            quote!(#output)
        }
    }
}

/// The constant that holds the index of the role a group test's parameter names.
fn role_const(test: &Ident, parameter: &Ident) -> Ident {
    format_ident!("__NSPAWN_ROLE_{}_{}", test, parameter)
}

/// For a test of a declared group, one constant per parameter, beside the test: the index of
/// its role, which the compiler works out from the group's `const` in every build (a
/// `#[test]` body is compiled by `cargo test` only). A name that is no role fails there, at
/// the parameter.
fn role_consts(options: &Options, test: &Ident) -> TokenStream {
    let Some((group, names)) = &options.group else {
        return quote!();
    };
    let consts = names.iter().map(|name| {
        let (ident, role) = (role_const(test, name), name.to_string());
        quote::quote_spanned! {name.span()=>
            #[allow(non_upper_case_globals)]
            const #ident: usize = #group.index_of(#role);
        }
    });
    quote!(#(#consts)*)
}

/// The function a machine runs for an `inside` body `body_fn` (a test's or a set-up's): the
/// body's result made a message, as `Machine::call` can carry it back.
pub fn inside_wrapper(krate: &syn::Path, inside_fn: &Ident, body_fn: &Ident) -> TokenStream {
    quote! {
        #[allow(non_snake_case)]
        fn #inside_fn((): ()) -> ::core::result::Result<(), ::std::string::String> {
            #krate::__private::BodyResult::into_result(#body_fn())
        }
    }
}

fn single(options: &Options, func: MaybeItemFn) -> TokenStream {
    let MaybeItemFn {
        attrs,
        vis,
        sig,
        body,
    } = func;
    let parts = Parts::new(options, &attrs);
    let name = &sig.ident;
    let info = format_ident!("__NSPAWN_TEST");
    let body_fn = format_ident!("__nspawn_body");
    let track = &parts.track;
    let describe = parts.info(
        &info,
        quote!(::core::stringify!(#name)),
        &options.chroots[0],
    );
    let body = parts.body(&sig, &body, &body_fn);
    let call = parts.call(&sig, &body_fn, &quote!(), &quote!(#info));
    let inner = quote! {
        #track
        #(#describe)*
        #(#body)*
    };
    let run = quote!(&#info, #call);
    let test = parts.test_fn(
        &attrs,
        quote!(#vis),
        name,
        parts.test_output(&sig),
        inner,
        run,
    );
    let roles = role_consts(options, name);
    quote!(#roles #test)
}

fn matrix(options: &Options, func: MaybeItemFn) -> TokenStream {
    let MaybeItemFn {
        attrs,
        vis,
        sig,
        body,
    } = func;
    let parts = Parts::new(options, &attrs);
    let name = &sig.ident;
    // `#[cfg]` goes on everything made; the other attributes on each test.
    let (cfgs, attrs): (Vec<Attribute>, Vec<Attribute>) =
        attrs.into_iter().partition(|a| a.path().is_ident("cfg"));
    let body_fn = format_ident!("__nspawn_body_{}", name);
    let mut items: Vec<TokenStream> = parts.track.iter().cloned().collect();
    items.extend(parts.body(&sig, &body, &body_fn));
    let output = parts.test_output(&sig);
    let mut tests = Vec::new();
    for chroot in &options.chroots {
        let instance = format_ident!("{}", instance_name(&chroot.value()));
        let info = format_ident!("__NSPAWN_TEST_{}_{}", name, instance);
        let test_name = quote!(::core::concat!(
            ::core::stringify!(#name),
            "::",
            ::core::stringify!(#instance)
        ));
        items.extend(parts.info(&info, test_name, chroot));
        let call = parts.call(&sig, &body_fn, &quote!(super::), &quote!(super::#info));
        let run = quote!(&super::#info, #call);
        tests.push(parts.test_fn(
            &attrs,
            quote!(pub),
            &instance,
            output.clone(),
            quote!(),
            run,
        ));
    }
    let cfg = quote!(#(#cfgs)*);
    quote! {
        #(#cfg #items)*
        #cfg
        #vis mod #name {
            #(#tests)*
        }
    }
}
