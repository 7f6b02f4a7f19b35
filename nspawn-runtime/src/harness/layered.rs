//! Set up once: the `scope = "test"` machines of a module with a set-up boot from a layer that
//! holds the set-up's result (see `chroot::layer`), made the first time one is needed: a
//! template machine booted writable on the layer, the set-up run on it, the template stopped
//! and the layer sealed. The set-up then runs once per module and chroot, however many such
//! tests there are; each machine still starts pristine apart from the set-up's changes. With
//! one such test in the run, its machine runs the set-up itself: one boot instead of two.
//!
//! A layer that cannot be made fails every test that needed it, with why, without trying
//! again for each.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use super::boot::boot_one;
use super::sharing::SharedError;
use super::test_info::TestInfo;
use crate::chroot::layer::Layer;
use crate::machine::Machine;

type Made = Result<Arc<Layer>, SharedError>;
/// A (module, chroot)'s layer once made; its lock is held while it is made.
type Slot = Arc<Mutex<Option<Made>>>;

/// Per (module, chroot): its layer's slot.
static LAYERS: LazyLock<Mutex<HashMap<(&'static str, &'static str), Slot>>> =
    LazyLock::new(Default::default);

/// The machine of a `scope = "test"` test, booted from its module's set-up layer; `None` when
/// the module has no set-up for its chroot, the test is a group's, or it is the only such
/// test of its module and chroot in this run (the layer's template would be a boot more
/// than running the set-up on the test's machine; so under cargo-nextest, one test per
/// process, never).
pub(crate) fn boot(info: &'static TestInfo) -> Option<crate::Result<Machine>> {
    if !info.machines.is_empty()
        || !super::setup::has_setup(info.module, info.chroot)
        || super::upcoming::alone_tests(info.module, info.chroot) < 2
    {
        return None;
    }
    let slot = LAYERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry((info.module, info.chroot))
        .or_default()
        .clone();
    let layer = {
        let mut made = slot.lock().unwrap_or_else(|p| p.into_inner());
        made.get_or_insert_with(|| make(info)).clone()
    };
    Some(match layer {
        Ok(layer) => boot_one(info, &info.test_name(), None, Some(layer.root())),
        Err(why) => Err(crate::Error::NotRunning {
            machine: format!("of {}", info.test_name()),
            reason: why.to_string(),
        }),
    })
}

/// Makes the layer: the template booted writable on it, the set-up, the seal.
fn make(info: &'static TestInfo) -> Made {
    let chroot = crate::chroot::ensure(info.chroot, Some(std::path::Path::new(info.manifest_dir)))
        .map_err(|e| SharedError::from(e.to_string()))?;
    let private_users = crate::backend::private_users::decide(None, &chroot)
        .map_err(|e| SharedError::from(e.to_string()))?;
    let layer =
        Layer::create(&chroot, private_users).map_err(|e| SharedError::from(e.to_string()))?;
    let template = boot_one(
        info,
        &format!("{}'s set-up", info.module),
        None,
        Some(layer.template_root()),
    )
    .map_err(|e| SharedError::from(e.to_string()))?;
    // Read while it runs: the range its files are given back from when the layer is sealed.
    let range = crate::host::idmap::range_of(template.leader_pid());
    let set_up = super::setup::run_for_all(info, std::slice::from_ref(&template));
    let stopped = template.stop();
    set_up.map_err(SharedError::from)?;
    stopped.map_err(|e| SharedError::from(e.to_string()))?;
    let range = range.map_err(|e| SharedError::from(e.to_string()))?;
    layer
        .seal(range)
        .map_err(|e| SharedError::from(e.to_string()))
}
