//! Which tests the running test binary will execute, read from its arguments the way libtest
//! reads them: name filters (substring, or whole with `--exact`), `--skip`, `--ignored` and
//! `--include-ignored`. A module's machine stops once the last of *these* has finished.
//!
//! Getting it wrong is safe either way: a test expected but never run keeps the machine until
//! process exit; a test run but not expected boots the machine again.

/// libtest options that take a value.
const WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--format",
    "--color",
    "--logfile",
    "-Z",
    "--shuffle-seed",
    "--skip",
];

/// The selection made by a test binary's arguments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    ignored: bool,
    include_ignored: bool,
    list: bool,
}

impl Filter {
    /// The filter of this process.
    pub fn from_env() -> Filter {
        Filter::parse(std::env::args().skip(1))
    }

    /// Parses libtest arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Filter {
        let mut f = Filter::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            match flag.as_str() {
                "--exact" => f.exact = true,
                "--ignored" => f.ignored = true,
                "--include-ignored" => f.include_ignored = true,
                "--list" => f.list = true,
                "--skip" => f.skips.extend(inline.or_else(|| args.next())),
                _ if WITH_VALUE.contains(&flag.as_str()) => {
                    if inline.is_none() {
                        args.next();
                    }
                }
                _ if arg.starts_with('-') => {}
                _ => f.filters.push(arg),
            }
        }
        f
    }

    /// Whether the test called `name` runs.
    pub fn selects(&self, name: &str, ignored: bool) -> bool {
        let matches = |pattern: &String| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern.as_str())
            }
        };
        let wanted = self.filters.is_empty() || self.filters.iter().any(matches);
        let skipped = self.skips.iter().any(matches);
        let ignore_ok = self.include_ignored || ignored == self.ignored;
        !self.list && wanted && !skipped && ignore_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Filter {
        Filter::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn no_arguments_select_every_test_that_is_not_ignored() {
        let f = parse(&[]);
        assert!(f.selects("a::b", false));
        assert!(!f.selects("a::b", true));
    }

    #[test]
    fn filters_are_substrings_unless_exact() {
        let f = parse(&["--test-threads", "2", "alpha", "--nocapture"]);
        assert!(f.selects("alpha::one", false));
        assert!(!f.selects("beta::one", false));
        let f = parse(&["--exact", "alpha::one"]);
        assert!(f.selects("alpha::one", false));
        assert!(!f.selects("alpha::one_more", false));
    }

    #[test]
    fn skips_and_ignored_tests() {
        let f = parse(&["--skip", "slow", "--skip=flaky"]);
        assert!(!f.selects("m::slow_test", false));
        assert!(!f.selects("m::flaky", false));
        assert!(f.selects("m::fast", false));
        let f = parse(&["--ignored"]);
        assert!(f.selects("m::x", true));
        assert!(!f.selects("m::y", false));
        let f = parse(&["--include-ignored"]);
        assert!(f.selects("m::x", true) && f.selects("m::y", false));
        assert!(!parse(&["--list"]).selects("m::x", false));
    }

    #[test]
    fn values_of_options_are_not_filters() {
        let f = parse(&[
            "--format",
            "terse",
            "--color=never",
            "-Z",
            "unstable-options",
        ]);
        assert!(f.selects("anything", false));
    }
}
