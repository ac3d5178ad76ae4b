//! Ending the processes the lab started, by PID.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use pg::pid::is_alive;

/// Sends `first`, waits up to `grace` for the process to go, then SIGKILLs it
/// and waits again. Returns whether it is gone.
pub fn terminate(pid: i32, first: Signal, grace: Duration) -> bool {
    let target = Pid::from_raw(pid);
    if !is_alive(pid) {
        return true;
    }
    let _ = kill(target, first);
    if wait_gone(pid, grace) {
        return true;
    }
    let _ = kill(target, Signal::SIGKILL);
    wait_gone(pid, Duration::from_secs(5))
}

fn wait_gone(pid: i32, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !is_alive(pid)
}
