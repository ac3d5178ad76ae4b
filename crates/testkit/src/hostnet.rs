//! Named hosts on one subnet, each in its own network namespace: what the
//! quickstart test (crates/cli/tests/quickstart.rs) installs pgwarden on, at
//! the addresses the documentation uses (`db1` at `10.0.0.1`, …).
//!
//! Built like [`crate::NetLab`]: a switch namespace holding a bridge without
//! an address, one namespace per host with a veth link to the bridge and the
//! host's address, the veth ends created directly inside the namespaces, so
//! no address or link ever appears in this process's namespace. Names carry
//! this process's PID and a counter (`pgq<pid>-<n>-<host>`, in base 36).
//!
//! A host's processes are started by `ip netns exec NAME …` (the test's
//! shell scripts do that), so dropping a [`HostNet`] (also on panic) first
//! stops every process still inside one of its namespaces (SIGTERM, then
//! SIGKILL after a grace period), then deletes the namespaces. Namespaces a
//! test killed outright left behind are swept the same way by the next
//! [`HostNet`]: only those whose process is gone, and everything in them was
//! started by that test. Needs root and `ip` (iproute2).

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netlab::{base36, ip, NetLabError, NsRuntime};

const PREFIX_LEN: u8 = 24;
/// How long the processes left in a namespace get to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(20);

static NETS: AtomicUsize = AtomicUsize::new(0);

/// A switch and named hosts; see the module.
#[derive(Debug)]
pub struct HostNet {
    id: String,
    switch: Option<String>,
    hosts: Vec<HostNs>,
}

#[derive(Debug)]
struct HostNs {
    host: String,
    namespace: String,
    runtime: Option<NsRuntime>,
}

impl HostNet {
    /// The switch and one namespace per `(name, address)`, each host linked
    /// to the switch and up. Host names: lower-case letters and digits, at
    /// most 6 characters (they end interface names).
    pub fn new(hosts: &[(&str, &str)]) -> Result<HostNet, NetLabError> {
        sweep_dead_nets();
        let id = format!(
            "pgq{}-{}",
            base36(std::process::id() as usize),
            base36(NETS.fetch_add(1, Ordering::Relaxed))
        );
        let mut net = HostNet {
            id,
            switch: None,
            hosts: Vec::new(),
        };
        // On an error, `net` drops and removes what was made so far.
        let switch = format!("{}-sw", net.id);
        ip(&["netns", "add", &switch])?;
        net.switch = Some(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, (host, address)) in hosts.iter().enumerate() {
            assert!(
                host.len() <= 6 && host.bytes().all(|b| b.is_ascii_alphanumeric()),
                "host name {host:?}: at most 6 letters and digits"
            );
            let namespace = format!("{}-{host}", net.id);
            ip(&["netns", "add", &namespace])?;
            net.hosts.push(HostNs {
                host: host.to_string(),
                namespace: namespace.clone(),
                runtime: None,
            });
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
            let (inside, port) = (format!("{}h{i}", net.id), format!("{}s{i}", net.id));
            ip(&[
                "link", "add", &inside, "netns", &namespace, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{address}/{PREFIX_LEN}"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &namespace, "link", "set", &inside, "up"])?;
            let file = File::open(format!("/run/netns/{namespace}"))?;
            let runtime = NsRuntime::start(&namespace, &file)?;
            net.hosts.last_mut().expect("just pushed").runtime = Some(runtime);
        }
        Ok(net)
    }

    /// The namespace of `host`, for `ip netns exec NAME …`.
    pub fn namespace(&self, host: &str) -> &str {
        &self.host(host).namespace
    }

    /// Every namespace of the net: the prefix its names start with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `future` on a thread inside `host`'s network namespace: every
    /// socket it opens is on that host.
    pub fn run<F>(&self, host: &str, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self.host(host).runtime.as_ref().expect("started");
        runtime.handle.spawn(future)
    }

    /// The processes inside `host`'s namespace.
    pub fn pids(&self, host: &str) -> Vec<i32> {
        pids(&self.host(host).namespace)
    }

    fn host(&self, host: &str) -> &HostNs {
        self.hosts
            .iter()
            .find(|h| h.host == host)
            .unwrap_or_else(|| panic!("no host {host:?} in the net"))
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        let namespaces: Vec<String> = self.hosts.iter().map(|h| h.namespace.clone()).collect();
        stop_everything_in(&namespaces);
        for host in self.hosts.drain(..).rev() {
            drop(host.runtime);
            if let Err(e) = ip(&["netns", "delete", &host.namespace]) {
                eprintln!(
                    "HostNet: {e}; remove it with `ip netns delete {}`",
                    host.namespace
                );
            }
        }
        if let Some(switch) = self.switch.take() {
            if let Err(e) = ip(&["netns", "delete", &switch]) {
                eprintln!("HostNet: {e}; remove it with `ip netns delete {switch}`");
            }
        }
    }
}

/// SIGTERM to every process in `namespaces`, SIGKILL to what is left after
/// [`GRACE`]; returns once they are empty (or after another 10 s).
fn stop_everything_in(namespaces: &[String]) {
    let all = || -> Vec<i32> { namespaces.iter().flat_map(|n| pids(n)).collect() };
    for (signal, wait) in [
        (Signal::SIGTERM, GRACE),
        (Signal::SIGKILL, Duration::from_secs(10)),
    ] {
        let left = all();
        if left.is_empty() {
            return;
        }
        for pid in left {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let start = Instant::now();
        while start.elapsed() < wait && !all().is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let left = all();
    if !left.is_empty() {
        eprintln!("HostNet: processes {left:?} survived SIGKILL");
    }
}

/// `ip netns pids NAME`: the processes inside a namespace.
fn pids(namespace: &str) -> Vec<i32> {
    let Ok(output) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Stops what runs in, and deletes, the namespaces of nets whose process is
/// gone: what a test killed outright left (its etcd, agents, PostgreSQL).
fn sweep_dead_nets() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&output.stdout).to_string();
    let dead: Vec<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| net_pid(name).is_some_and(|pid| !lab::process::is_alive(pid as i32)))
        .map(str::to_string)
        .collect();
    stop_everything_in(&dead);
    for name in dead {
        let _ = ip(&["netns", "delete", &name]);
    }
}

/// The PID in a net namespace's name, `pgq<pid>-<n>-<host>`.
fn net_pid(name: &str) -> Option<usize> {
    let mut parts = name.strip_prefix("pgq")?.splitn(3, '-');
    let (pid, n, host) = (parts.next()?, parts.next()?, parts.next()?);
    let base36 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    let host_ok =
        !host.is_empty() && host.len() <= 6 && host.bytes().all(|b| b.is_ascii_alphanumeric());
    (base36(pid) && base36(n) && host_ok).then(|| usize::from_str_radix(pid, 36).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::netlab::tests::lab_namespaces as namespaces;

    #[tokio::test]
    async fn hosts_reach_each_other_and_what_runs_inside_is_stopped_on_drop() {
        let net = HostNet::new(&[("a", "10.0.0.1"), ("b", "10.0.0.2")]).unwrap();
        let id = net.id().to_string();
        assert_eq!(namespaces(&id).len(), 3, "switch and two hosts");
        let port = crate::free_port();
        let listener = net
            .run("b", async move {
                tokio::net::TcpListener::bind(("10.0.0.2", port)).await
            })
            .await
            .unwrap()
            .unwrap();
        let accept = net.run("b", async move { listener.accept().await.map(|_| ()) });
        let connect = net.run("a", async move {
            tokio::net::TcpStream::connect(("10.0.0.2", port))
                .await
                .map(|_| ())
        });
        connect.await.unwrap().unwrap();
        accept.await.unwrap().unwrap();
        let sleeper = Command::new("ip")
            .args(["netns", "exec", net.namespace("b"), "sleep", "600"])
            .spawn()
            .unwrap();
        let pid = sleeper.id() as i32;
        let start = Instant::now();
        while net.pids("b").is_empty() {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(net);
        let mut sleeper = sleeper;
        let _ = sleeper.wait();
        assert!(!lab::process::is_alive(pid));
        assert_eq!(namespaces(&id), Vec::<String>::new());
    }

    #[test]
    fn only_net_names_carry_a_pid() {
        assert_eq!(net_pid("pgqz-1-db2"), Some(35));
        assert_eq!(net_pid("pgq10-0-app"), Some(36));
        for other in [
            "pgq10-0",
            "pgw10-0-sw",
            "pgq-0-sw",
            "pgqX-0-sw",
            "pgq1-0-toolong",
        ] {
            assert_eq!(net_pid(other), None, "{other}");
        }
    }
}
