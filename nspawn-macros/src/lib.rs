//! The `#[nspawn::test]` attribute. Use it through the `nspawn` crate.
//!
//! The macro is thin: it checks its input and rewrites the function into a `#[test]` that
//! hands the body to `nspawn`'s runtime, which owns the machines and their lifecycle.
//! `options` reads the arguments, `maybe_fn` the function (its body stays raw tokens),
//! `validate` checks both (collecting every error), `expand` writes the test.

mod expand;
mod group;
mod maybe_fn;
mod options;
mod setup;
mod validate;
mod workspace;

use proc_macro::TokenStream;

use maybe_fn::MaybeItemFn;

/// Turns a function into a test that runs against a booted container.
///
/// ```no_run
/// #[nspawn::test(chroot = "bookworm")]
/// fn dbus_is_up(machine: &nspawn::Machine) -> nspawn::Result<()> {
///     machine.run(["systemctl", "is-active", "dbus"])?;
///     Ok(())
/// }
/// ```
///
/// Options: `chroot = "<name>"` (may be omitted when only one chroot is declared; an array,
/// `chroot = ["bookworm", "trixie"]`, makes one test per chroot in a module named after the
/// function),
/// `scope = "module" | "test"` (default `module`: one machine shared by the module's tests),
/// `inside` (the body runs inside the machine, through `Machine::call`; it then takes no
/// parameter), `network = "isolated" | "private" | "host" | "zone:NAME[+outside]"` (a list,
/// `"zone:front+outside,zone:back"`, puts the machine on further zones),
/// `machines(role = "<chroot>", ...)` (a group: one `&Machine` parameter per role) or
/// `group = PATH` (a `const nspawn::Group`: the test names the roles it uses), `flavor = "current_thread" | "multi_thread"` and `worker_threads = N` (the
/// tokio runtime of an `async fn` test; feature `tokio`), `crate = "<path>"` (where the
/// `nspawn` crate is, if renamed).
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: proc_macro2::TokenStream = item.into();
    let raw = options::parse(args.into());
    let (func, raw) = match function(item.clone(), raw, "test") {
        Ok(parsed) => parsed,
        Err(errors) => return errors,
    };
    let checked = validate::validate(raw, &func);
    if checked.function_errors.is_empty() {
        // Options in error still give a plausible test (with their defaults), as tokio-macros
        // does, so IDEs see the function as the test it will be.
        let test = expand::expand(&checked.options, func);
        with_errors(test, checked.option_errors)
    } else {
        // Keep the item, so IDEs still see the function, and report every error at once.
        let errors = checked
            .option_errors
            .into_iter()
            .chain(checked.function_errors);
        with_errors(item, errors)
    }
}

/// Makes a function the set-up of its module's machines: it runs once on each machine the
/// module's tests get (shared or `scope = "test"`), after the boot and before the first test.
/// Its failure fails every test that needed the machine, with its message.
///
/// ```no_run
/// #[nspawn::setup(chroot = "bookworm")]
/// fn prepare(machine: &nspawn::Machine) -> nspawn::Result<()> {
///     machine.run(["apt-get", "install", "-y", "jq"])?;
///     Ok(())
/// }
/// # #[nspawn::test(chroot = "bookworm")]
/// # fn jq_is_installed(machine: &nspawn::Machine) {
/// #     assert!(machine.exists("/usr/bin/jq"));
/// # }
/// ```
///
/// Options: `chroot = "<name>"` (the chroot of the tests it prepares; the same default as
/// the test attribute's), `inside` (it runs in the machine and takes no parameter),
/// `crate = "<path>"`.
#[proc_macro_attribute]
pub fn setup(args: TokenStream, item: TokenStream) -> TokenStream {
    let item: proc_macro2::TokenStream = item.into();
    let raw = options::parse(args.into());
    let (func, raw) = match function(item.clone(), raw, "setup") {
        Ok(parsed) => parsed,
        Err(errors) => return errors,
    };
    let (options, errors) = setup::validate(raw, &func);
    if errors.is_empty() {
        setup::expand(&options, func).into()
    } else {
        with_errors(item, errors)
    }
}

/// The function under `#[nspawn::<attribute>]`; if there is none, the item back with every
/// error, the options' included.
fn function(
    item: proc_macro2::TokenStream,
    raw: options::Raw,
    attribute: &str,
) -> Result<(MaybeItemFn, options::Raw), TokenStream> {
    match syn::parse2::<MaybeItemFn>(item.clone()) {
        Ok(func) => Ok((func, raw)),
        Err(_) => {
            let not_a_fn = syn::Error::new_spanned(
                &item,
                format!(
                    "#[nspawn::{attribute}] goes on a function: `fn name(machine: &nspawn::Machine)`"
                ),
            );
            Err(with_errors(
                item,
                std::iter::once(not_a_fn).chain(raw.errors),
            ))
        }
    }
}

/// `tokens`, followed by a `compile_error!` for each error.
fn with_errors(
    tokens: proc_macro2::TokenStream,
    errors: impl IntoIterator<Item = syn::Error>,
) -> TokenStream {
    let errors = errors.into_iter().map(|e| e.to_compile_error());
    quote::quote!(#tokens #(#errors)*).into()
}
