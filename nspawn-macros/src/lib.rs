//! The `#[nspawn::test]` attribute. Use it through the `nspawn` crate.
//!
//! The macro is thin: it checks its input and rewrites the function into a `#[test]` that
//! hands the body to `nspawn`'s runtime, which owns the machines and their lifecycle.
//! `parse` reads the options, `validate` checks them and the function (collecting every error),
//! `expand` writes the test.

mod expand;
mod options;
mod validate;
mod workspace;

use proc_macro::TokenStream;

/// Turns a function into a test that runs against a booted container.
///
/// ```ignore
/// #[nspawn::test(chroot = "bookworm")]
/// fn dbus_is_up(machine: &nspawn::Machine) -> nspawn::Result<()> {
///     machine.run(["systemctl", "is-active", "dbus"])?;
///     Ok(())
/// }
/// ```
///
/// Options: `chroot = "<name>"` (may be omitted when only one chroot is declared),
/// `scope = "module" | "test"` (default `module`: one machine shared by the module's tests),
/// `crate = "<path>"` (where the `nspawn` crate is, if renamed).
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let item2: proc_macro2::TokenStream = item.clone().into();
    match try_expand(args.into(), item2.clone()) {
        Ok(tokens) => tokens.into(),
        // Keep the item, so IDEs still see the function, and report every error at once.
        Err(err) => {
            let errors = err.to_compile_error();
            quote::quote!(#item2 #errors).into()
        }
    }
}

fn try_expand(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let raw = options::parse(args);
    let func = syn::parse2::<syn::ItemFn>(item.clone()).map_err(|_| {
        syn::Error::new_spanned(
            &item,
            "#[nspawn::test] goes on a function: `fn name(machine: &nspawn::Machine)`",
        )
    });
    let (options, func) = validate::validate(raw, func)?;
    Ok(expand::expand(&options, func))
}
