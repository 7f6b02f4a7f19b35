//! Checking the options and the function. Every problem becomes an error spanned on the
//! offending tokens; all of them are reported together.

use std::path::PathBuf;

use syn::{FnArg, LitStr, Type};

use crate::maybe_fn::MaybeItemFn;
use crate::options::{literal, Raw};
use crate::workspace;

/// Whether a test shares its module's machine or gets its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Module,
    Test,
}

/// The runtime of an async test.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    CurrentThread,
    MultiThread(Option<usize>),
}

/// Validated options.
pub struct Options {
    /// For an `async fn`: the runtime it runs on.
    pub flavor: Option<Flavor>,
    /// One chroot, or several for a matrix.
    pub chroots: Vec<LitStr>,
    /// `chroot = [...]`: one test per chroot, in a module named after the function.
    pub matrix: bool,
    pub scope: Scope,
    pub krate: syn::Path,
    /// The body runs inside the machine.
    pub inside: bool,
    /// The workspace manifest, so that editing it rebuilds the tests.
    pub manifest: Option<PathBuf>,
    /// `network = "..."`, checked.
    pub network: Option<LitStr>,
    /// `machines(role = "chroot", ...)`: each role and its chroot, checked.
    pub machines: Vec<(syn::Ident, LitStr)>,
    /// For a group: the role each parameter of the function takes, by index in `machines`.
    pub parameters: Vec<usize>,
    /// `group = NAME`: the group's const, and the role each parameter names.
    pub group: Option<(syn::Path, Vec<syn::Ident>)>,
}

/// The options, with defaults where they are in error, and every problem found.
pub struct Checked {
    pub options: Options,
    /// Problems with the attribute's arguments: a plausible test can still be written.
    pub option_errors: Vec<syn::Error>,
    /// Problems with the function itself: it cannot be made a test.
    pub function_errors: Vec<syn::Error>,
}

/// Checks everything, collecting every error.
pub fn validate(mut raw: Raw, func: &MaybeItemFn) -> Checked {
    let mut option_errors = std::mem::take(&mut raw.errors);
    let flavor = flavor(&raw, func, &mut option_errors);
    let scope = scope(raw.scope.as_ref(), &mut option_errors);
    let krate = krate(raw.krate.as_ref(), &mut option_errors);
    let declared = workspace::declared();
    let network = network(raw.network.as_ref(), &mut option_errors);
    let machines = machines(&mut raw, declared.as_ref(), &mut option_errors);
    let matrix = raw.matrix.is_some();
    let mut function_errors = Vec::new();
    let group = raw.group.clone().map(|path| {
        let names = crate::group::check(&raw, func, &mut option_errors);
        check_common(func, &mut function_errors);
        (path, names)
    });
    let chroots = match machines.first() {
        Some((_, chroot)) => vec![chroot.clone()],
        None => chroots(
            raw.chroot,
            raw.matrix,
            raw.chroot_attempted,
            declared.as_ref(),
            &mut option_errors,
        ),
    };
    let parameters = if group.is_some() {
        Vec::new()
    } else if raw.machines.is_some() && raw.inside.is_none() {
        group_parameters(func, &machines, &mut function_errors)
    } else {
        check_function(func, raw.inside.is_some(), &mut function_errors);
        Vec::new()
    };
    Checked {
        options: Options {
            flavor,
            chroots,
            matrix,
            scope,
            krate,
            inside: raw.inside.is_some(),
            manifest: declared.map(|d| d.manifest),
            network,
            machines,
            parameters,
            group,
        },
        option_errors,
        function_errors,
    }
}

/// `network = "..."`, parsed as the runtime parses it.
fn network(value: Option<&LitStr>, errors: &mut Vec<syn::Error>) -> Option<LitStr> {
    let lit = value?;
    match nspawn_config::Networks::parse(&lit.value()) {
        Ok(_) => Some(lit.clone()),
        Err(why) => {
            errors.push(syn::Error::new_spanned(lit, why));
            None
        }
    }
}

/// `machines(...)`: each chroot checked as `chroot` is; not with `chroot`, a matrix or
/// `inside`, and not empty.
fn machines(
    raw: &mut Raw,
    declared: Option<&workspace::Declared>,
    errors: &mut Vec<syn::Error>,
) -> Vec<(syn::Ident, LitStr)> {
    let Some((list, roles)) = raw.machines.clone() else {
        return Vec::new();
    };
    if let Some(chroot) = &raw.chroot {
        errors.push(syn::Error::new_spanned(
            chroot,
            "a group names its machines' chroots in `machines(...)`: drop `chroot`",
        ));
    }
    if let Some((array, _)) = &raw.matrix {
        errors.push(syn::Error::new_spanned(
            array,
            "a group cannot be a matrix: drop `chroot = [...]`, or write one test per group",
        ));
    }
    if let Some(inside) = &raw.inside {
        errors.push(syn::Error::new_spanned(
            inside,
            "an `inside` body runs in one machine; a group's test takes its machines as parameters",
        ));
    }
    if list.tokens.is_empty() {
        errors.push(syn::Error::new_spanned(
            &list,
            "a group needs at least one machine: machines(server = \"bookworm\", client = \"trixie\")",
        ));
    }
    roles
        .into_iter()
        .map(|(role, chroot)| (role, self::chroot(Some(chroot), true, declared, errors)))
        .collect()
}

/// A group's test takes `role: &Machine` for each role (`_role` too), in any order; returns
/// the role of each parameter.
fn group_parameters(
    f: &MaybeItemFn,
    roles: &[(syn::Ident, LitStr)],
    errors: &mut Vec<syn::Error>,
) -> Vec<usize> {
    check_common(f, errors);
    let names: Vec<String> = roles.iter().map(|(r, _)| r.to_string()).collect();
    let mut taken = Vec::new();
    for param in &f.sig.inputs {
        let name = parameter_name(param);
        let role = name
            .as_deref()
            .map(|n| n.strip_prefix('_').unwrap_or(n))
            .and_then(|n| names.iter().position(|r| r == n));
        match role {
            Some(index) if is_machine_ref(param) => taken.push(index),
            Some(_) => errors.push(syn::Error::new_spanned(
                param,
                "a machine of the group is taken as `&nspawn::Machine`",
            )),
            None => errors.push(syn::Error::new_spanned(
                param,
                format!(
                    "a group's test takes its machines by role: `role: &nspawn::Machine`, one of: {}",
                    names.join(", ")
                ),
            )),
        }
    }
    for (index, (role, _)) in roles.iter().enumerate() {
        if !taken.contains(&index) {
            errors.push(syn::Error::new_spanned(
                role,
                format!("machine `{role}` has no parameter: add `{role}: &nspawn::Machine` to the function"),
            ));
        }
    }
    taken
}

fn parameter_name(param: &FnArg) -> Option<String> {
    let FnArg::Typed(pat) = param else {
        return None;
    };
    match pat.pat.as_ref() {
        syn::Pat::Ident(ident) => Some(ident.ident.to_string()),
        _ => None,
    }
}

/// The runtime of an async test, from `flavor` and `worker_threads` (tokio's names and
/// defaults); `None` for a sync test, which may not have them.
fn flavor(raw: &Raw, func: &MaybeItemFn, errors: &mut Vec<syn::Error>) -> Option<Flavor> {
    let is_async = func.sig.asyncness.is_some();
    if !is_async {
        for given in [&raw.flavor, &raw.worker_threads].into_iter().flatten() {
            errors.push(syn::Error::new_spanned(
                given,
                "`flavor` and `worker_threads` are for `async fn` tests",
            ));
        }
        return None;
    }
    let threads = raw.worker_threads.as_ref().and_then(|lit| {
        let n = lit.value().parse::<usize>().ok().filter(|n| *n >= 1);
        if n.is_none() {
            errors.push(syn::Error::new_spanned(
                lit,
                "`worker_threads` is a number, 1 or more",
            ));
        }
        n
    });
    match raw.flavor.as_ref().map(LitStr::value).as_deref() {
        None if raw.worker_threads.is_some() => Some(Flavor::MultiThread(threads)),
        None | Some("current_thread") => {
            if let (Some(_), Some(lit)) = (&raw.flavor, &raw.worker_threads) {
                errors.push(syn::Error::new_spanned(
                    lit,
                    "`worker_threads` needs flavor = \"multi_thread\"",
                ));
            }
            Some(Flavor::CurrentThread)
        }
        Some("multi_thread") => Some(Flavor::MultiThread(threads)),
        Some(other) => {
            let msg = format!(
                "unknown flavor \"{other}\"; expected \"current_thread\" (the default) or \"multi_thread\""
            );
            errors.push(syn::Error::new_spanned(&raw.flavor, msg));
            Some(Flavor::CurrentThread)
        }
    }
}

fn scope(value: Option<&LitStr>, errors: &mut Vec<syn::Error>) -> Scope {
    match value.map(LitStr::value).as_deref() {
        None | Some("module") => Scope::Module,
        Some("test") => Scope::Test,
        Some(other) => {
            let msg = format!("unknown scope \"{other}\"; expected \"module\" (one machine per module) or \"test\" (one per test)");
            errors.push(syn::Error::new_spanned(value, msg));
            Scope::Module
        }
    }
}

pub fn krate(value: Option<&LitStr>, errors: &mut Vec<syn::Error>) -> syn::Path {
    let default = || syn::parse_quote!(::nspawn);
    let Some(lit) = value else { return default() };
    lit.parse().unwrap_or_else(|_| {
        errors.push(syn::Error::new_spanned(
            lit,
            "`crate` must be a path, e.g. crate = \"my_nspawn\"",
        ));
        default()
    })
}

/// The chroot, or each chroot of a matrix, checked.
pub fn chroots(
    one: Option<LitStr>,
    matrix: Option<(syn::ExprArray, Vec<LitStr>)>,
    attempted: bool,
    declared: Option<&workspace::Declared>,
    errors: &mut Vec<syn::Error>,
) -> Vec<LitStr> {
    let Some((array, names)) = matrix else {
        return vec![chroot(one, attempted, declared, errors)];
    };
    if array.elems.is_empty() {
        errors.push(syn::Error::new_spanned(
            &array,
            "a matrix needs at least one chroot, e.g. chroot = [\"bookworm\", \"trixie\"]",
        ));
        return vec![literal("bookworm")];
    }
    let mut seen: Vec<String> = Vec::new();
    let mut unique = Vec::new();
    for name in names {
        let instance = instance_name(&name.value());
        if seen.contains(&instance) {
            let msg = format!("the matrix names chroot {instance:?} twice");
            errors.push(syn::Error::new_spanned(&name, msg));
            continue;
        }
        seen.push(instance);
        unique.push(chroot(Some(name), true, declared, errors));
    }
    unique
}

/// The name of a matrix instance's test: the chroot's name, or its path's last component,
/// with what cannot be in an identifier made `_`.
pub fn instance_name(chroot: &str) -> String {
    let last = chroot
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(chroot);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        format!("_{name}")
    } else {
        name
    }
}

pub fn chroot(
    value: Option<LitStr>,
    attempted: bool,
    declared: Option<&workspace::Declared>,
    errors: &mut Vec<syn::Error>,
) -> LitStr {
    let names = match declared.map(|d| (&d.manifest, &d.names)) {
        None => None,
        Some((_, Ok(names))) => Some(names.clone()),
        Some((manifest, Err(why))) => {
            let msg = format!(
                "the chroot declarations in {} are invalid: {why}",
                manifest.display()
            );
            let span = value
                .as_ref()
                .map_or_else(proc_macro2::Span::call_site, LitStr::span);
            errors.push(syn::Error::new(span, msg));
            None
        }
    };
    let Some(lit) = value else {
        return match names.as_deref() {
            None | Some([]) => literal("bookworm"),
            Some([only]) => literal(only),
            Some(many) if attempted => literal(&many[0]),
            Some(many) => {
                let msg = format!(
                    "the workspace declares several chroots; choose one with chroot = \"...\": {}",
                    many.join(", ")
                );
                errors.push(syn::Error::new(proc_macro2::Span::call_site(), msg));
                literal(&many[0])
            }
        };
    };
    let name = match nspawn_config::ChrootRef::parse(&lit.value()) {
        Ok(nspawn_config::ChrootRef::Name(name)) => name,
        // A path names a tree directly; only names are declared.
        Ok(nspawn_config::ChrootRef::Path(_)) => return lit,
        Err(why) => {
            errors.push(syn::Error::new_spanned(&lit, why));
            return lit;
        }
    };
    if let Some(names) = names.filter(|names| !names.contains(&name)) {
        let msg = format!(
            "chroot \"{name}\" is not declared (under [workspace.metadata.nspawn.chroots], or \
             [package.metadata.nspawn.chroots] of a crate that is its own workspace); declared: {}",
            names.join(", ")
        );
        errors.push(syn::Error::new_spanned(&lit, msg));
    }
    lit
}

/// What every test function must be, whatever it takes: not generic, async only with the
/// feature, and with no other test attribute.
fn check_common(f: &MaybeItemFn, errors: &mut Vec<syn::Error>) {
    let sig = &f.sig;
    if let Some(token) = &sig.asyncness {
        if !cfg!(feature = "tokio") {
            errors.push(syn::Error::new_spanned(
                token,
                "async tests need the `tokio` feature of nspawn: \
                 nspawn = { version = \"0.1\", features = [\"tokio\"] }",
            ));
        }
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "test functions cannot be generic",
        ));
    }
    check_attributes(f, errors);
}

fn check_function(f: &MaybeItemFn, inside: bool, errors: &mut Vec<syn::Error>) {
    check_common(f, errors);
    let sig = &f.sig;
    if inside {
        if let (Some(token), true) = (&sig.asyncness, cfg!(feature = "tokio")) {
            errors.push(syn::Error::new_spanned(
                token,
                "an `inside` body cannot be async; drop `inside`, or make the body sync",
            ));
        }
        return check_inside(f, errors);
    }
    for extra in sig.inputs.iter().skip(1) {
        errors.push(syn::Error::new_spanned(
            extra,
            "a test takes at most one parameter: `&nspawn::Machine` (several machines: \
             machines(role = \"chroot\", ...) with one `role: &nspawn::Machine` each)",
        ));
    }
    if let Some(first) = sig.inputs.first() {
        if !is_machine_ref(first) {
            errors.push(syn::Error::new_spanned(
                first,
                "the parameter must be `&nspawn::Machine`",
            ));
        }
    }
}

/// An `inside` body runs in a process of its own inside the machine: no machine to take, and
/// nothing borrowed across.
pub fn check_inside(f: &MaybeItemFn, errors: &mut Vec<syn::Error>) {
    for param in &f.sig.inputs {
        errors.push(syn::Error::new_spanned(
            param,
            "an `inside` body runs in the machine and takes no parameter: act on the system \
             directly (std::fs, std::process::Command), or drop `inside` to get `&nspawn::Machine`",
        ));
    }
}

fn check_attributes(f: &MaybeItemFn, errors: &mut Vec<syn::Error>) {
    for attr in f.attrs.iter().filter(|a| is_test_attribute(a)) {
        errors.push(syn::Error::new_spanned(attr, test_attribute_error(attr)));
    }
}

/// What to say of another test attribute: `#[tokio::test]` above or below, or a plain one.
fn test_attribute_error(attr: &syn::Attribute) -> &'static str {
    let path: Vec<String> = attr
        .path()
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    match path
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tokio", "test"] => {
            "remove #[tokio::test]: #[nspawn::test] runs an async test on a tokio runtime itself \
             (feature `tokio`; flavor = \"multi_thread\" and worker_threads = N as tokio's)"
        }
        ["core", "prelude", "v1", "test"] => {
            "an attribute above #[nspawn::test] (#[tokio::test]?) already made this a test: \
             remove it; #[nspawn::test] runs async tests itself (feature `tokio`)"
        }
        _ => "#[nspawn::test] already makes this a test; remove this attribute",
    }
}

pub fn is_machine_ref(arg: &FnArg) -> bool {
    let FnArg::Typed(pat) = arg else { return false };
    let Type::Reference(r) = pat.ty.as_ref() else {
        return false;
    };
    let Type::Path(p) = r.elem.as_ref() else {
        return false;
    };
    r.mutability.is_none()
        && p.qself.is_none()
        && p.path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Machine" && s.arguments.is_none())
}

pub fn is_test_attribute(attr: &syn::Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "test")
}
