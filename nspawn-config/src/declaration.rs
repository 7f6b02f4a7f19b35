//! Chroot declarations: `[workspace.metadata.nspawn.chroots.<name>]` in the workspace
//! `Cargo.toml` (or `[package.metadata.nspawn.chroots.<name>]` in a crate that is its own
//! workspace), parsed and checked.
//!
//! ```toml
//! [workspace.metadata.nspawn.chroots.bookworm]
//!
//! [workspace.metadata.nspawn.chroots.trixie-web]
//! suite = "trixie"
//! include = ["dbus", "systemd", "nginx"]
//! setup = ["systemctl enable nginx"]
//! profile = "fast"
//! ```

use serde::Deserialize;
use toml::{Table, Value};

/// Debian's main archive, the default mirror.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Suites the default mirror serves.
pub const KNOWN_SUITES: &[&str] = &[
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "sid",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// Bootstrap variants accepted by both mmdebstrap and debootstrap.
pub const VARIANTS: &[&str] = &["minbase", "buildd", "standard"];

/// Boot profiles: `full` boots what Debian enables; `fast` masks the units tests rarely need
/// (see the runtime's `chroot::profile`).
pub const PROFILES: &[&str] = &["full", "fast"];

/// Raised whenever what a non-default profile does changes, so that the chroots built with
/// the earlier one are seen as out of date and built again (2: `fast` masks generators too).
pub const PROFILE_REVISION: u32 = 2;

/// One declared chroot, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChrootDef {
    /// Name, and directory name under the chroots directory.
    pub name: String,
    /// Debian suite (default: the name).
    pub suite: String,
    /// Archive to bootstrap from (default: [`DEFAULT_MIRROR`]).
    pub mirror: String,
    /// Bootstrap variant (default `minbase`).
    pub variant: String,
    /// Packages installed besides the variant's: the declared ones, then [`BASE_PACKAGES`]
    /// that they leave out (a machine boots systemd and talks to it over D-Bus).
    pub include: Vec<String>,
    /// Shell commands run inside the new tree after bootstrap.
    pub setup: Vec<String>,
    /// The boot profile, one of [`PROFILES`] (default `full`).
    pub profile: String,
}

impl ChrootDef {
    /// A declaration with every key at its default.
    pub fn with_defaults(name: &str) -> ChrootDef {
        ChrootDef {
            name: name.to_string(),
            suite: name.to_string(),
            mirror: DEFAULT_MIRROR.to_string(),
            variant: "minbase".to_string(),
            include: with_base(Vec::new()),
            setup: Vec::new(),
            profile: "full".to_string(),
        }
    }

    /// The text recorded in a built chroot, to notice when its declaration changes.
    pub fn stamp(&self) -> String {
        let mut t = Table::new();
        t.insert("suite".into(), self.suite.clone().into());
        t.insert("mirror".into(), self.mirror.clone().into());
        t.insert("variant".into(), self.variant.clone().into());
        t.insert("include".into(), self.include.clone().into());
        t.insert("setup".into(), self.setup.clone().into());
        // Only when not the default: chroots built before the key existed stay current.
        if self.profile != "full" {
            t.insert("profile".into(), self.profile.clone().into());
            t.insert(
                "profile_revision".into(),
                i64::from(PROFILE_REVISION).into(),
            );
        }
        let mut root = Table::new();
        root.insert(self.name.clone(), Value::Table(t));
        toml::to_string(&root).unwrap_or_default()
    }
}

impl ChrootDef {
    /// The packages this declaration adds to the one `stamp` records (a built tree's), when it
    /// changes nothing else (suite, mirror, variant, set-up, profile and its revision): a tree
    /// built from `stamp` is then this one's once they are installed. Empty when only the
    /// order of `include` changed; `None` for any other change, a removed package included.
    pub fn added_since(&self, stamp: &str) -> Option<Vec<String>> {
        let section = |text: &str| -> Option<Table> {
            let mut root = text.parse::<Table>().ok()?;
            match root.remove(&self.name)? {
                Value::Table(t) => Some(t),
                _ => None,
            }
        };
        let (mut ours, mut theirs) = (section(&self.stamp())?, section(stamp)?);
        let include = |t: &mut Table| -> Option<Vec<String>> {
            let Value::Array(items) = t.remove("include")? else {
                return None;
            };
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        let (new, old) = (include(&mut ours)?, include(&mut theirs)?);
        if ours != theirs || !old.iter().all(|p| new.contains(p)) {
            return None;
        }
        Some(new.into_iter().filter(|p| !old.contains(p)).collect())
    }
}

/// Parses the chroot declarations of a manifest's text. The error names the offending key or
/// value and what is accepted.
///
/// They sit under `[workspace.metadata.nspawn.chroots]`, or, in the root manifest of a crate
/// that is its own workspace, `[package.metadata.nspawn.chroots]`, where such a crate's other
/// tools keep theirs; not in both.
pub fn parse_manifest(text: &str) -> std::result::Result<Vec<ChrootDef>, String> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
    let chroots = |top: Option<Top>| top?.metadata?.nspawn?.chroots;
    let (top, chroots) = match (chroots(manifest.workspace), chroots(manifest.package)) {
        (Some(_), Some(_)) => {
            return Err(
                "chroots are declared under both [workspace.metadata.nspawn.chroots] and \
                        [package.metadata.nspawn.chroots]: keep one of them"
                    .into(),
            )
        }
        (Some(found), None) => ("workspace", found),
        (None, Some(found)) => ("package", found),
        (None, None) => return Ok(vec![ChrootDef::with_defaults("bookworm")]),
    };
    let table = match chroots {
        Value::Table(table) => table,
        _ => {
            return Err(format!(
                "{top}.metadata.nspawn.chroots must be a table of chroot names"
            ))
        }
    };
    let defs: Vec<ChrootDef> = table
        .into_iter()
        .map(|(name, value)| parse_def(top, &name, value))
        .collect::<std::result::Result<_, _>>()?;
    if defs.is_empty() {
        return Ok(vec![ChrootDef::with_defaults("bookworm")]);
    }
    Ok(defs)
}

/// The parts of a manifest the declarations live in; the rest of it is other tools'.
#[derive(Deserialize)]
struct Manifest {
    workspace: Option<Top>,
    package: Option<Top>,
}

/// `[workspace]` or `[package]`.
#[derive(Deserialize)]
struct Top {
    metadata: Option<Metadata>,
}

#[derive(Deserialize)]
struct Metadata {
    nspawn: Option<Nspawn>,
}

#[derive(Deserialize)]
struct Nspawn {
    /// Read as a value, so that a mistake names its section (see `parse_def`).
    chroots: Option<Value>,
}

/// One chroot's section as written; `ChrootDef` is it with the defaults filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declaration {
    suite: Option<String>,
    mirror: Option<String>,
    variant: Option<Variant>,
    include: Option<Vec<String>>,
    setup: Option<Vec<String>>,
    profile: Option<Profile>,
}

/// Bootstrap variants accepted by both mmdebstrap and debootstrap ([`VARIANTS`]).
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Variant {
    Minbase,
    Buildd,
    Standard,
}

/// Boot profiles ([`PROFILES`]).
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Profile {
    Full,
    Fast,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Minbase => "minbase",
            Variant::Buildd => "buildd",
            Variant::Standard => "standard",
        }
    }
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Full => "full",
            Profile::Fast => "fast",
        }
    }
}

/// What every chroot has, whatever its `include` says: without them no machine boots.
pub const BASE_PACKAGES: [&str; 2] = ["dbus", "systemd"];

/// `declared`, then the base packages it leaves out. A declaration that lists them already
/// (as the README's example did) keeps its order, and so its stamp.
fn with_base(mut declared: Vec<String>) -> Vec<String> {
    for base in BASE_PACKAGES {
        if !declared.iter().any(|p| p == base) {
            declared.push(base.to_string());
        }
    }
    declared
}

fn parse_def(top: &str, name: &str, value: Value) -> std::result::Result<ChrootDef, String> {
    let section = format!("[{top}.metadata.nspawn.chroots.{name}]");
    check_name(name).map_err(|m| format!("{section}: {m}"))?;
    if !value.is_table() {
        return Err(format!(
            "{section} must be a table, found {}",
            value.type_str()
        ));
    }
    let declared =
        Declaration::deserialize(value).map_err(|e| format!("{section}: {}", shown(&e)))?;
    let mut def = ChrootDef::with_defaults(name);
    let Declaration {
        suite,
        mirror,
        variant,
        include,
        setup,
        profile,
    } = declared;
    def.suite = suite.unwrap_or(def.suite);
    def.mirror = mirror.unwrap_or(def.mirror);
    def.variant = variant.map_or(def.variant, |v| v.name().to_string());
    def.include = include.map_or(def.include, with_base);
    def.setup = setup.unwrap_or_default();
    def.profile = profile.map_or(def.profile, |p| p.name().to_string());
    check_values(&def).map_err(|m| format!("{section}: {m}"))?;
    Ok(def)
}

/// serde's message in TOML's words, with the key it names first: "key `include`: invalid
/// type: string "dbus", expected an array" rather than "expected a sequence" and "in
/// `include`" on a line of its own.
fn shown(error: &toml::de::Error) -> String {
    let message = error.to_string();
    let message = message
        .trim_end()
        .replace("unknown field", "unknown key")
        .replace("a sequence", "an array")
        .replace("a map", "a table");
    match message.rsplit_once("\nin `") {
        Some((what, key)) => format!("key `{}`: {what}", key.trim_end_matches('`')),
        None => message,
    }
}

/// Checks a chroot name: up to 40 letters, digits, `-`, `_` or `.`, starting with a letter or
/// digit, so that it is a plain directory name under the chroots directory.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad chroot name {name:?}: use up to 40 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

fn check_values(def: &ChrootDef) -> std::result::Result<(), String> {
    if def.mirror == DEFAULT_MIRROR && !KNOWN_SUITES.contains(&def.suite.as_str()) {
        return Err(format!(
            "key `suite`: unknown suite {:?}; the default mirror serves: {} (set `mirror` to use another archive)",
            def.suite,
            KNOWN_SUITES.join(", ")
        ));
    }
    if !def.mirror.contains("://") {
        return Err(format!(
            "key `mirror`: {:?} is not a URL; expected something like {DEFAULT_MIRROR:?}",
            def.mirror
        ));
    }
    if let Some(bad) = def.include.iter().find(|p| !is_package_name(p)) {
        return Err(format!(
            "key `include`: {bad:?} is not a Debian package name (lowercase letters, digits, '+', '-', '.')"
        ));
    }
    Ok(())
}

fn is_package_name(p: &str) -> bool {
    p.len() >= 2
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> std::result::Result<Vec<ChrootDef>, String> {
        parse_manifest(&format!("[workspace]\n{body}"))
    }

    #[test]
    fn no_declaration_gives_the_embedded_bookworm() {
        let defs = parse("").unwrap();
        assert_eq!(defs, vec![ChrootDef::with_defaults("bookworm")]);
        assert_eq!(defs[0].include, ["dbus", "systemd"]);
        assert_eq!(defs[0].variant, "minbase");
        assert_eq!(defs[0].mirror, DEFAULT_MIRROR);
    }

    #[test]
    fn include_adds_to_the_base_packages() {
        let defs = parse(
            "[workspace.metadata.nspawn.chroots.b]\nsuite = \"bookworm\"\ninclude = [\"curl\"]\n",
        )
        .unwrap();
        assert_eq!(defs[0].include, ["curl", "dbus", "systemd"]);
        let listed = parse("[workspace.metadata.nspawn.chroots.b]\nsuite = \"bookworm\"\ninclude = [\"systemd\", \"nginx\", \"dbus\"]\n").unwrap();
        assert_eq!(listed[0].include, ["systemd", "nginx", "dbus"]);
    }

    #[test]
    fn a_crate_of_its_own_declares_under_package_metadata() {
        let defs =
            parse("[package]\nname = \"a\"\n[package.metadata.nspawn.chroots.trixie]\n").unwrap();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].name, "trixie");
        let err = parse("[package.metadata.nspawn.chroots.b]\nsuit = \"sid\"\n").unwrap_err();
        assert!(
            err.starts_with("[package.metadata.nspawn.chroots.b]: unknown key"),
            "{err}"
        );
        let both = "[workspace.metadata.nspawn.chroots.a]\n[package.metadata.nspawn.chroots.b]\n";
        assert!(parse(both).unwrap_err().contains("keep one of them"));
    }

    #[test]
    fn empty_section_takes_defaults_from_the_name() {
        let defs = parse("[workspace.metadata.nspawn.chroots.trixie]\n").unwrap();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs[0].suite, "trixie");
    }

    #[test]
    fn every_key_is_read() {
        let defs = parse(
            r#"[workspace.metadata.nspawn.chroots.web]
suite = "bookworm"
mirror = "http://mirror.example/debian"
variant = "buildd"
include = ["dbus", "systemd", "nginx"]
setup = ["echo hi > /etc/hi"]
profile = "fast"
"#,
        )
        .unwrap();
        let d = &defs[0];
        assert_eq!(d.name, "web");
        assert_eq!(d.suite, "bookworm");
        assert_eq!(d.mirror, "http://mirror.example/debian");
        assert_eq!(d.variant, "buildd");
        assert_eq!(d.include, ["dbus", "systemd", "nginx"]);
        assert_eq!(d.setup, ["echo hi > /etc/hi"]);
        assert_eq!(d.profile, "fast");
        assert!(d.stamp().contains("profile = \"fast\""));
        assert!(d
            .stamp()
            .contains(&format!("profile_revision = {PROFILE_REVISION}")));
        assert!(!ChrootDef::with_defaults("x").stamp().contains("profile"));
    }

    #[test]
    fn every_listed_variant_and_profile_is_accepted_as_itself() {
        for (key, values) in [("variant", VARIANTS), ("profile", PROFILES)] {
            for value in values {
                let defs = parse(&format!(
                    "[workspace.metadata.nspawn.chroots.bookworm]\n{key} = \"{value}\"\n"
                ))
                .unwrap();
                let read = if key == "variant" {
                    &defs[0].variant
                } else {
                    &defs[0].profile
                };
                assert_eq!(read, value);
            }
        }
    }

    #[test]
    fn unknown_profile_names_the_accepted_ones() {
        let err = parse(
            "[workspace.metadata.nspawn.chroots.bookworm]
profile = \"quick\"
",
        )
        .unwrap_err();
        assert!(
            err.ends_with("key `profile`: unknown variant `quick`, expected `full` or `fast`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_the_accepted_ones() {
        let err =
            parse("[workspace.metadata.nspawn.chroots.bookworm]\nsuit = \"sid\"\n").unwrap_err();
        assert_eq!(
            err,
            "[workspace.metadata.nspawn.chroots.bookworm]: unknown key `suit`, expected one of \
             `suite`, `mirror`, `variant`, `include`, `setup`, `profile`"
        );
    }

    #[test]
    fn bad_type_names_the_key() {
        let err = parse("[workspace.metadata.nspawn.chroots.bookworm]\ninclude = \"dbus\"\n")
            .unwrap_err();
        assert_eq!(
            err,
            "[workspace.metadata.nspawn.chroots.bookworm]: key `include`: invalid type: string \
             \"dbus\", expected an array"
        );
        let err = parse("[workspace.metadata.nspawn.chroots.bookworm]\nsuite = 12\n").unwrap_err();
        assert!(
            err.ends_with("key `suite`: invalid type: integer `12`, expected a string"),
            "{err}"
        );
        let err = parse("[workspace.metadata.nspawn.chroots.bookworm]\nsetup = [1]\n").unwrap_err();
        assert!(
            err.ends_with("key `setup`: invalid type: integer `1`, expected a string"),
            "{err}"
        );
    }

    #[test]
    fn unknown_suite_lists_the_known_ones() {
        let err = parse("[workspace.metadata.nspawn.chroots.buster]\n").unwrap_err();
        assert!(err.contains("unknown suite \"buster\""), "{err}");
        assert!(err.contains("bullseye, bookworm, trixie"), "{err}");
        assert!(err.contains("set `mirror`"), "{err}");
    }

    #[test]
    fn any_suite_goes_with_a_custom_mirror() {
        let defs = parse(
            "[workspace.metadata.nspawn.chroots.buster]\nmirror = \"http://archive.debian.org/debian\"\n",
        )
        .unwrap();
        assert_eq!(defs[0].suite, "buster");
    }

    #[test]
    fn bad_variant_and_bad_names_are_refused() {
        let err = parse("[workspace.metadata.nspawn.chroots.bookworm]\nvariant = \"tiny\"\n")
            .unwrap_err();
        assert!(
            err.ends_with(
                "key `variant`: unknown variant `tiny`, expected one of `minbase`, `buildd`, \
                 `standard`"
            ),
            "{err}"
        );
        let err = parse("[workspace.metadata.nspawn.chroots.\"../etc\"]\n").unwrap_err();
        assert!(err.contains("bad chroot name \"../etc\""), "{err}");
        let err = parse("[workspace.metadata.nspawn.chroots.bookworm]\ninclude = [\"Bad Name\"]\n")
            .unwrap_err();
        assert!(
            err.contains("\"Bad Name\" is not a Debian package name"),
            "{err}"
        );
    }

    #[test]
    fn chroots_must_be_tables() {
        let err = parse("[workspace.metadata.nspawn]\nchroots = 3\n").unwrap_err();
        assert_eq!(
            err,
            "workspace.metadata.nspawn.chroots must be a table of chroot names"
        );
        let err = parse("[workspace.metadata.nspawn.chroots]\nbookworm = true\n").unwrap_err();
        assert!(err.ends_with("must be a table, found boolean"), "{err}");
    }

    #[test]
    fn toml_syntax_errors_are_reported() {
        assert!(parse_manifest("[workspace\n")
            .unwrap_err()
            .contains("TOML parse error"));
    }

    #[test]
    fn only_added_packages_are_what_a_tree_lacks() {
        let built = ChrootDef::with_defaults("bookworm");
        let mut wider = built.clone();
        wider.include = with_base(vec!["jq".into(), "curl".into()]);
        assert_eq!(
            wider.added_since(&built.stamp()),
            Some(vec!["jq".to_string(), "curl".to_string()])
        );
        // Back again: a package removed needs a tree built from nothing.
        assert_eq!(built.added_since(&wider.stamp()), None);
        let mut reordered = built.clone();
        reordered.include.reverse();
        assert_eq!(reordered.added_since(&built.stamp()), Some(vec![]));
        for change in [
            |d: &mut ChrootDef| d.suite = "trixie".into(),
            |d: &mut ChrootDef| d.variant = "buildd".into(),
            |d: &mut ChrootDef| d.setup = vec!["true".into()],
            |d: &mut ChrootDef| d.profile = "fast".into(),
            |d: &mut ChrootDef| d.name = "other".into(),
        ] {
            let mut changed = wider.clone();
            change(&mut changed);
            assert_eq!(changed.added_since(&built.stamp()), None, "{changed:?}");
        }
        assert_eq!(wider.added_since("not toml ["), None);
    }

    #[test]
    fn stamp_changes_with_the_declaration() {
        let a = ChrootDef::with_defaults("bookworm");
        let mut b = a.clone();
        assert_eq!(a.stamp(), b.stamp());
        b.include.push("python3".into());
        assert_ne!(a.stamp(), b.stamp());
        assert!(a.stamp().contains("suite = \"bookworm\""));
    }
}
