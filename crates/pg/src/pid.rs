//! Whether a process is alive.

/// Whether `pid` is a live process. A zombie counts as gone: a killed
/// postmaster stays a zombie until its parent (after pg_ctl's double fork,
/// init) reaps it, and it holds no port, no shared memory, no lock by then.
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether `pid` runs the `postgres` program (a postmaster's PID read from
/// postmaster.pid, before it is signalled: a stale file's PID may by now be
/// another program's).
pub fn is_postgres(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "postgres")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reaped_one_is_not() {
        assert!(is_alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn this_test_is_not_postgres() {
        assert!(!is_postgres(std::process::id() as i32));
        assert!(!is_postgres(i32::MAX));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: a zombie once it exits.
        let start = std::time::Instant::now();
        while is_alive(pid) && start.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!is_alive(pid));
        drop(child);
    }
}
