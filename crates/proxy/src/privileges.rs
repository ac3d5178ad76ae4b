//! Giving up the capabilities kernel forwarding needs only to load its
//! program (docs/proxy.md, "Limits"): once the maps and the program exist,
//! the proxy uses them through their descriptors, which Linux 6.5 and later
//! allow without any capability.
//!
//! Capabilities belong to each thread, and the async runtime's threads
//! already run when the program is loaded: every thread drops them itself,
//! in a signal handler (as glibc does for setuid), until no thread of the
//! process holds one (checked in /proc/self/task).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// CAP_NET_ADMIN, CAP_SYS_ADMIN (what kernels before CAP_BPF ask for),
/// CAP_PERFMON and CAP_BPF.
pub const FORWARDING_CAPABILITIES: u64 = 1 << 12 | 1 << 21 | 1 << 38 | 1 << 39;
/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;
/// How long the threads have to drop them.
const DEADLINE: Duration = Duration::from_secs(2);

/// The capabilities the handler drops.
static TO_DROP: AtomicU64 = AtomicU64::new(0);

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's sets, as (effective, permitted, inheritable).
fn get() -> io::Result<[Data; 2]> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget writes two Data for version 3.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

fn set(data: &[Data; 2]) -> io::Result<()> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset reads two Data for version 3.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `data` with the capabilities in `mask` cleared from the sets chosen.
fn without(mut data: [Data; 2], mask: u64, permitted_too: bool) -> [Data; 2] {
    for (i, word) in data.iter_mut().enumerate() {
        let bits = !((mask >> (32 * i)) as u32);
        word.effective &= bits;
        if permitted_too {
            word.permitted &= bits;
            word.inheritable &= bits;
        }
    }
    data
}

fn permitted(data: &[Data; 2]) -> u64 {
    data[0].permitted as u64 | (data[1].permitted as u64) << 32
}

/// What became of the capabilities.
#[derive(Debug)]
pub enum Outcome {
    /// Every thread of the process dropped them.
    Dropped,
    /// The process held none of them.
    NoneHeld,
    /// Without them the kernel refuses the maps (before Linux 6.5 with
    /// unprivileged BPF off): kept.
    KernelNeedsThem(io::Error),
}

/// Drops [`FORWARDING_CAPABILITIES`] in every thread, if `works` still
/// succeeds without them (tried first on this thread alone, reversibly).
pub fn drop_forwarding(works: impl Fn() -> io::Result<()>) -> io::Result<Outcome> {
    let held = get()?;
    let mask = permitted(&held) & FORWARDING_CAPABILITIES;
    if mask == 0 {
        return Ok(Outcome::NoneHeld);
    }
    set(&without(held, mask, false))?;
    let tried = works();
    set(&held)?;
    if let Err(err) = tried {
        return Ok(Outcome::KernelNeedsThem(err));
    }
    every_thread(mask)?;
    Ok(Outcome::Dropped)
}

extern "C" fn drop_here(_: libc::c_int) {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if let Ok(data) = get() {
        let _ = set(&without(data, TO_DROP.load(Ordering::Acquire), true));
    }
    // A handler must leave errno as it found it.
    // SAFETY: __errno_location points to this thread's errno.
    unsafe { *libc::__errno_location() = errno };
}

/// Signals every thread that still holds a capability of `mask` until none does.
fn every_thread(mask: u64) -> io::Result<()> {
    TO_DROP.store(mask, Ordering::Release);
    let signal = libc::SIGRTMAX() - 2;
    // SAFETY: installs a handler that only makes system calls; the old
    // action is put back below.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = drop_here as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, &mut old) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let result = signal_until_dropped(signal, mask);
    // SAFETY: puts back the action saved above.
    unsafe { libc::sigaction(signal, &old, std::ptr::null_mut()) };
    result
}

fn signal_until_dropped(signal: libc::c_int, mask: u64) -> io::Result<()> {
    let started = Instant::now();
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    loop {
        let holding = threads_holding(mask)?;
        if holding.is_empty() {
            return Ok(());
        }
        if started.elapsed() > DEADLINE {
            return Err(io::Error::other(format!(
                "{} threads kept their capabilities",
                holding.len()
            )));
        }
        for tid in holding {
            // SAFETY: signals one thread of this process; ESRCH (it ended)
            // is fine.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The threads of this process whose permitted set holds any of `mask`.
pub fn threads_holding(mask: u64) -> io::Result<Vec<libc::pid_t>> {
    let mut holding = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended since the listing holds nothing.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let permitted = status
            .lines()
            .find_map(|l| l.strip_prefix("CapPrm:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0);
        if permitted & mask != 0 {
            holding.push(tid);
        }
    }
    Ok(holding)
}
