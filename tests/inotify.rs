//! Inotify exhaustion (about 12 booted containers exhaust the common default of 128) is a
//! clear error naming the sysctl, not a boot that stalls until its timeout.
//!
//! This lowers `fs.inotify.max_user_instances` host-wide for a moment, so it is the only test
//! of its binary (cargo runs test binaries one after another).

use std::time::Duration;

use nspawn::{Error, Machine};

const SYSCTL: &str = "/proc/sys/fs/inotify/max_user_instances";

/// Restores the sysctl however the test ends.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _root = nspawn::privs::root();
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn exhausted_inotify_instances_are_reported_with_the_sysctl() {
    let restore = Restore(std::fs::read_to_string(SYSCTL).unwrap());
    {
        let _root = nspawn::privs::root().unwrap();
        std::fs::write(SYSCTL, "3").unwrap();
    }
    let result = Machine::builder("bookworm")
        .boot_timeout(Duration::from_secs(30))
        .start();
    drop(restore);
    let err = result.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::InotifyExhausted { .. }), "{msg}");
    assert!(msg.contains("fs.inotify.max_user_instances is 3"), "{msg}");
    assert!(
        msg.contains("sysctl -w fs.inotify.max_user_instances="),
        "{msg}"
    );
    assert_ne!(
        std::fs::read_to_string(SYSCTL).unwrap().trim(),
        "3",
        "restored"
    );
}
