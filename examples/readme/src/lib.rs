//! Nothing here: the examples of the README, the guide and the crate docs are the tests of
//! this package (`tests/readme.rs`), made by `build.rs`, so that what the docs print is what
//! CI runs.
