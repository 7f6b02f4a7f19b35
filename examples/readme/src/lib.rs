//! Nothing here: the README's examples are the tests of this package (`tests/readme.rs`),
//! made from the README by `build.rs`, so that what the README prints is what CI runs.
