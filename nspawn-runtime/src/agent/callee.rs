//! A call's own process, forked ahead by the [`super::zygote`] and handed to the runtime: once
//! its request comes, straight from the runtime, it becomes the user asked for, runs the
//! function, and writes its [`Outcome`] back on the same socket. Its stdout and stderr are
//! pipes the runtime reads from the start.
//!
//! The function is named by its entry point's offset from [`anchor`], both in this executable
//! (the agent is the test binary re-executed, so the layout is the same in every process);
//! an entry point that falls outside the executable is refused. The entry point,
//! [`entry`], decodes the argument, runs the function and encodes its result; the types are
//! fixed by the caller when it takes the entry point's address.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::user::Identity;
use super::wire::{self, Invocation, Outcome, ROUND_TRIP};

/// An entry point: decodes the argument, runs the function, encodes what came of it.
pub type Entry = fn(&[u8]) -> Outcome;

/// The fixed point entry points are measured from.
#[inline(never)]
pub fn anchor() {}

/// Where `entry` is, as the agent can find it again.
pub fn offset(entry: Entry) -> i64 {
    (entry as usize).wrapping_sub(anchor as fn() as usize) as i64
}

/// The entry point of `F`, called with an `A` and returning an `R`.
///
/// `F` must be zero-sized: a function item or a closure that captures nothing, whose only
/// value is itself (the caller checks it at compile time).
pub fn entry<F, A, R>(arg: &[u8]) -> Outcome
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let arg: A = match ciborium::from_reader(arg) {
        Ok(arg) => arg,
        Err(e) => return Outcome::Failed(format!("decoding the argument: {e}; {ROUND_TRIP}")),
    };
    assert_eq!(std::mem::size_of::<F>(), 0, "callable types are zero-sized");
    // SAFETY: `F` is zero-sized and implements `Fn` on stable Rust, so it is a function item
    // or a closure with no captured state: a value made of no bytes is that function, and a
    // zero-sized read from an aligned, non-null pointer is valid.
    let f: F = unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() };
    let result = f(arg);
    let mut out = Vec::new();
    match ciborium::into_writer(&result, &mut out) {
        Ok(()) => Outcome::Returned(out),
        Err(e) => Outcome::Failed(format!("encoding the result: {e}; {ROUND_TRIP}")),
    }
}

/// A call process: gets ready, waits for its request on `sock`, runs it, writes its outcome
/// on `sock` and exits.
pub fn run(sock: OwnedFd) -> ! {
    let ready = get_ready();
    warm_up();
    // Set before the request, not after: setting it writes to a page of the zygote's data,
    // which this process then copies (a fault of several microseconds on this kind of host).
    let pipe = OUTCOME.get_or_init(|| File::from(sock));
    let request = wire::recv::<Invocation>(pipe.as_fd(), None);
    let Ok((invocation, _)) = request else { exit() };
    let outcome = match ready.and_then(|()| become_caller(invocation.user.as_deref())) {
        Ok(true) => call(&invocation),
        Ok(false) => Some(Outcome::NoSuchUser),
        Err(e) => Some(Outcome::Failed(format!(
            "preparing its process as the user asked for: {e}"
        ))),
    };
    // Output first: the runtime has all it needs once the outcome arrives.
    let _ = std::io::stdout().flush();
    release_output();
    if let Some(outcome) = outcome {
        record(pipe, &outcome);
    }
    // Tearing down a copy of the agent takes longer than the call: on a CPU shared with the
    // test's thread, that thread reads the outcome first.
    // SAFETY: a plain system call.
    unsafe { libc::sched_yield() };
    exit()
}

fn exit() -> ! {
    // SAFETY: ending the call's process without the agent's exit handlers; the threads the
    // function left end with it.
    unsafe { libc::_exit(0) }
}

/// What every call process starts with, done once in the zygote: root's login environment,
/// and `/dev/null` open.
pub fn prepare_zygote() {
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    for (key, value) in Identity::root().environment() {
        std::env::set_var(key, value);
    }
    let _ = NULL.set(File::open("/dev/null"));
    let _ = EXECUTABLE.set(object_of(anchor as fn() as usize));
}

/// Runs, before the request comes, the path a call takes, on a call of nothing: each page of
/// code or data is the zygote's until this process first touches it, and the faults that
/// map or copy them on the call's path would cost more than the call. Its stack, the
/// allocator's first free chunks, receiving and decoding a request, finding and running the
/// entry point, and encoding the outcome.
#[inline(never)]
fn warm_up() {
    let mut stack = [0u8; 64 * 1024];
    for page in stack.chunks_mut(4096) {
        // SAFETY: a write to a byte of a local array; volatile, so that it happens.
        unsafe { std::ptr::write_volatile(&mut page[0], 1) };
    }
    std::hint::black_box(&stack);
    let blocks: Vec<Vec<u8>> = (0..32).map(|i| vec![i; 2048]).collect();
    drop(std::hint::black_box(blocks));
    let mut arg = Vec::new();
    if ciborium::into_writer(&(), &mut arg).is_err() {
        return;
    }
    let nothing = Invocation {
        entry: offset(entry_of(|()| ())),
        arg,
        user: None,
    };
    let Ok((ours, theirs)) = std::os::unix::net::UnixStream::pair() else {
        return;
    };
    if wire::send(ours.as_fd(), &nothing, &[]).is_err() {
        return;
    }
    if let Ok((invocation, _)) = wire::recv::<Invocation>(theirs.as_fd(), None) {
        let _ = become_caller(invocation.user.as_deref());
        let outcome = call(&invocation);
        let _ = std::io::stdout().flush();
        if let (Some(outcome), Ok(null)) = (outcome, null()) {
            write_outcome(null, &outcome);
        }
    }
}

/// The entry point of a function of nothing (a closure is zero-sized, as `entry` needs).
fn entry_of<F: Fn(())>(_: F) -> Entry {
    entry::<F, (), ()>
}

/// The base address of this executable, found once by the zygote for every call.
static EXECUTABLE: OnceLock<Option<usize>> = OnceLock::new();

/// `/dev/null`, opened by the zygote.
static NULL: OnceLock<std::io::Result<File>> = OnceLock::new();

/// The descriptors a call process inherits from the zygote and keeps.
pub fn inherited() -> Option<std::os::fd::RawFd> {
    null().ok().map(|f| f.as_raw_fd())
}

fn null() -> std::io::Result<&'static File> {
    match NULL.get() {
        Some(Ok(file)) => Ok(file),
        Some(Err(e)) => Err(std::io::Error::from(e.kind())),
        None => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
    }
}

/// What does not depend on the request: process group, parent-death signal, stdin, root's
/// working directory, the panic hook.
fn get_ready() -> std::io::Result<()> {
    let null = null()?;
    // SAFETY: plain system calls in a single-threaded process.
    unsafe {
        // Its own process group, so that a timeout kills what it started too.
        check(libc::setpgid(0, 0))?;
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
        ))?;
        // The agent, outside the machine's PID namespace, is parent 0 here; anything else
        // means it died before the line above.
        if libc::getppid() != 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        check(libc::dup2(null.as_raw_fd(), 0))?;
    }
    enter_home(&Identity::root().home)?;
    install_panic_hook();
    Ok(())
}

/// Gives the test's pipes back before the outcome, so the runtime sees their end with it
/// (unless something the call started holds them).
fn release_output() {
    if let Ok(null) = null() {
        // SAFETY: replacing our own standard descriptors.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Becomes the user asked for, with their environment and directory (without one, it stays
/// the machine's root, as the zygote made it). `false` if the machine has no such user.
fn become_caller(user: Option<&str>) -> std::io::Result<bool> {
    let Some(name) = user else {
        return Ok(true);
    };
    let Some(id) = Identity::lookup(name) else {
        return Ok(false);
    };
    // SAFETY: plain system calls in a single-threaded process.
    unsafe {
        check(libc::setgroups(id.groups.len(), id.groups.as_ptr()))?;
        check(libc::setresgid(id.gid, id.gid, id.gid))?;
        check(libc::setresuid(id.uid, id.uid, id.uid))?;
    }
    enter_home(&id.home)?;
    // The zygote set root's; another user's differs in a few variables.
    for (key, value) in id.environment() {
        if std::env::var_os(&key).as_deref() != Some(&value) {
            std::env::set_var(key, value);
        }
    }
    Ok(true)
}

/// Makes `home` the working directory, or `/` if it does not exist.
fn enter_home(home: &std::path::Path) -> std::io::Result<()> {
    if std::env::set_current_dir(home).is_err() {
        std::env::set_current_dir("/")?;
    }
    Ok(())
}

/// Runs the entry point; `None` after a panic, which the hook recorded.
fn call(invocation: &Invocation) -> Option<Outcome> {
    let Some(entry) = resolve(invocation.entry) else {
        return Some(Outcome::BadEntry);
    };
    catch_unwind(AssertUnwindSafe(|| entry(&invocation.arg))).ok()
}

/// The socket the outcome goes to, for the panic hook.
static OUTCOME: OnceLock<File> = OnceLock::new();

/// Records a panic of this thread (the call's), even under `panic = "abort"`. A panic of a
/// thread the function started is its own business: it reaches the call only if the
/// function propagates it.
fn install_panic_hook() {
    let caller = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != caller {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let location = info.location().map(ToString::to_string);
        if let Some(file) = OUTCOME.get() {
            record(file, &Outcome::Panicked { message, location });
        }
    }));
}

/// The entry point at `offset` from [`anchor`], if it lies in this executable.
fn resolve(offset: i64) -> Option<Entry> {
    let anchor = anchor as fn() as usize;
    let address = anchor.wrapping_add(offset as usize);
    let executable = match EXECUTABLE.get() {
        Some(known) => *known,
        None => object_of(anchor),
    };
    if object_of(address)? != executable? {
        return None;
    }
    // SAFETY: the address is in this executable, at the offset the runtime computed from an
    // `Entry` of this same executable.
    Some(unsafe { std::mem::transmute::<usize, Entry>(address) })
}

/// The base address of the loaded object that holds `address`.
fn object_of(address: usize) -> Option<usize> {
    // SAFETY: dladdr only reads the loader's tables; `info` is plain data.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        (libc::dladdr(address as *const libc::c_void, &mut info) != 0)
            .then_some(info.dli_fbase as usize)
    }
}

/// Writes the outcome, once: a panic's hook and the return path never both do.
fn record(pipe: &File, outcome: &Outcome) {
    static WRITTEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WRITTEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    write_outcome(pipe, outcome);
}

/// Writes the outcome as one message: its length, then its body.
fn write_outcome(to: &File, outcome: &Outcome) {
    if let Ok(body) = postcard::to_stdvec(outcome) {
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
        let mut to = to;
        let _ = to.write_all(&[&len[..], &body].concat());
    }
}
