//! `inside` tests and set-ups: the body runs in the machine through [`Machine::call`], and
//! its failure comes back to the test as the same failure.

use super::outcome::fail;
use super::test_info::TestInfo;
use crate::error::Error;
use crate::machine::Machine;

/// Runs an `inside` test body in `machine`. A panic or an error of the body fails the test
/// with its message, by a panic (so `#[should_panic(expected = ...)]` sees the message); a
/// failure of ours (the call could not run, or its process crashed) fails it as a boot
/// failure does, never passing for the panic a `#[should_panic]` test expects.
#[track_caller]
pub fn inside<F>(info: &'static TestInfo, machine: &Machine, body: F)
where
    F: Fn(()) -> Result<(), String>,
{
    match machine.function(body).unbounded().call(()) {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!(
            "the test returned an error inside machine {}: {error}",
            machine.name()
        ),
        Err(Error::Panicked {
            message, location, ..
        }) => panic!(
            "the test panicked inside machine {}{}: {message}",
            machine.name(),
            location.map(|l| format!(" at {l}")).unwrap_or_default()
        ),
        Err(other) => fail(info, &other, None::<()>),
    }
}

/// Runs an `inside` set-up in `machine`; its failure, whatever it was, as a message.
pub fn inside_setup<F>(machine: &Machine, body: F) -> Result<(), String>
where
    F: Fn(()) -> Result<(), String>,
{
    machine
        .function(body)
        .unbounded()
        .call(())
        .unwrap_or_else(|e| Err(e.to_string()))
}
