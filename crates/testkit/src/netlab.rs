//! Hosts in network namespaces, for partition tests: a [`NetLab`] is a
//! switch (a namespace holding a bridge, `10.77.0.254/24`) and one
//! namespace per host (etcd at `10.77.0.100`, member `i` at
//! `10.77.0.<i+1>`), each with one veth link to the bridge: its cluster
//! link. [`NetLab::cut`] takes the switch's end of a host's link down; the
//! host's own end stays up, so its address still works on the host itself
//! (PostgreSQL keeps listening, local clients keep writing) while no other
//! host reaches it.
//!
//! Every address is in a namespace of the lab: none is added to this
//! process's namespace. This process reaches the hosts through loopback
//! ports forwarded by a thread inside the switch's namespace (as from a host
//! of the network: a cut host is unreachable there too), or, for a host's
//! own clients, by a thread inside that host's namespace
//! ([`NetLab::local_port`], [`NetLab::run`]). Processes start inside a
//! host's namespace through `setns(2)` between fork and exec, so their PID
//! is the one this process knows (no `ip netns exec` in between).
//!
//! Names carry this process's PID and a counter (`pgw<pid>-<n>-…`, in base
//! 36, interface names within 15 characters); the veth ends are created
//! directly in the lab's namespaces, so nothing ever appears in this
//! process's namespace. Dropping the lab (also on panic, also when building
//! it failed half-way) stops its threads and deletes its namespaces, which
//! deletes their links. A test killed outright leaves its namespaces; the
//! next lab deletes those whose process is gone and that hold no process.
//! Needs root and `ip` (iproute2).

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use lab::{free_port, Host, Network};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The lab's network; every lab has its own namespaces, so they all use it.
const SUBNET: &str = "10.77.0";
/// The client network of [`NetLab::with_clients`]: a second bridge in the
/// switch's namespace (`.254`, where the clients' services run) and a
/// second link per member (`.<i+1>`).
const CLIENT_SUBNET: &str = "10.78.0";
const PREFIX_LEN: u8 = 24;
const SWITCH: u8 = 254;
const ETCD: u8 = 100;
/// How long a forwarded connection may take to reach its host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Labs made by this process, for unique names.
static LABS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub enum NetLabError {
    #[error("cannot build the lab network: `ip {command}` failed: {detail} (partition tests need root and iproute2)")]
    Ip { command: String, detail: String },
    #[error("cannot build the lab network: {0}")]
    Io(#[from] io::Error),
}

/// Switch, etcd host and member hosts in network namespaces; see the module.
#[derive(Debug)]
pub struct NetLab {
    id: String,
    members: usize,
    /// Each member also has a client link ([`NetLab::with_clients`]).
    clients: bool,
    /// Switch, etcd, then the members, as far as they were made; deleted in
    /// reverse order on drop.
    namespaces: Vec<Namespace>,
}

impl NetLab {
    /// Builds the switch, the etcd host and `members` member hosts, each
    /// linked to the switch and up.
    pub fn new(members: usize) -> Result<NetLab, NetLabError> {
        NetLab::build(members, false)
    }

    /// As [`NetLab::new`], and a client network beside the cluster one:
    /// a second bridge in the switch's namespace at
    /// [`NetLab::client_gateway`], where the clients' services run
    /// ([`NetLab::run_on_clients`]), and a second link for each member, at
    /// [`NetLab::client_address`]. [`NetLab::cut_clients`] takes one down
    /// while the member's cluster link stays up.
    pub fn with_clients(members: usize) -> Result<NetLab, NetLabError> {
        NetLab::build(members, true)
    }

    fn build(members: usize, clients: bool) -> Result<NetLab, NetLabError> {
        assert!(members < 99, "at most 98 members fit the interface names");
        sweep_dead_labs();
        let id = format!(
            "pgw{}-{}",
            base36(std::process::id() as usize),
            base36(LABS.fetch_add(1, Ordering::Relaxed))
        );
        let mut lab = NetLab {
            id,
            members,
            clients,
            namespaces: Vec::new(),
        };
        // On an error, `lab` drops and removes what was made so far.
        let switch = lab.add_namespace("sw")?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &switch,
            "addr",
            "add",
            &format!("{SUBNET}.{SWITCH}/{PREFIX_LEN}"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        if clients {
            ip(&["-n", &switch, "link", "add", "br1", "type", "bridge"])?;
            ip(&[
                "-n",
                &switch,
                "addr",
                "add",
                &format!("{}/{PREFIX_LEN}", lab.client_gateway()),
                "dev",
                "br1",
            ])?;
            ip(&["-n", &switch, "link", "set", "br1", "up"])?;
        }
        lab.add_host(Host::Etcd)?;
        for i in 0..members {
            lab.add_host(Host::Member(i))?;
        }
        Ok(lab)
    }

    /// Where the clients' services run, on the client network (in the
    /// switch's namespace): what a member's reachability targets name.
    pub fn client_gateway(&self) -> String {
        format!("{CLIENT_SUBNET}.{SWITCH}")
    }

    /// Member `host`'s address on the client network.
    pub fn client_address(&self, host: Host) -> String {
        match host {
            Host::Member(i) => format!("{CLIENT_SUBNET}.{}", i + 1),
            Host::Etcd => panic!("etcd has no client link"),
        }
    }

    /// Runs `future` on the client network's side (the switch's
    /// namespace): a service the members reach through their client links,
    /// bound at [`NetLab::client_gateway`].
    pub fn run_on_clients<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.namespaces[0].runtime.handle.spawn(future)
    }

    /// Takes member `host`'s client link down at the switch: the member no
    /// longer reaches the client network; its cluster link stays up.
    pub fn cut_clients(&self, host: Host) -> Result<(), NetLabError> {
        self.set_client_link(host, "down")
    }

    /// Brings member `host`'s client link back up.
    pub fn heal_clients(&self, host: Host) -> Result<(), NetLabError> {
        self.set_client_link(host, "up")
    }

    fn set_client_link(&self, host: Host, state: &str) -> Result<(), NetLabError> {
        assert!(
            self.clients,
            "built without client links: NetLab::with_clients"
        );
        let Host::Member(i) = host else {
            panic!("etcd has no client link");
        };
        let (_, port) = self.client_link_names(&(i + 1).to_string());
        ip(&["-n", &self.namespaces[0].name, "link", "set", &port, state])
    }

    /// The host's end of a client link and the switch's.
    fn client_link_names(&self, tag: &str) -> (String, String) {
        (format!("{}c{tag}", self.id), format!("{}k{tag}", self.id))
    }

    /// Takes `host`'s cluster link down at the switch: no other host, nor
    /// this process's forwarded ports, reach it; on the host itself its
    /// address keeps working.
    pub fn cut(&self, host: Host) -> Result<(), NetLabError> {
        self.set_link(host, "down")
    }

    /// Brings `host`'s cluster link back up.
    pub fn heal(&self, host: Host) -> Result<(), NetLabError> {
        self.set_link(host, "up")
    }

    /// A loopback port here whose connections are made from inside member
    /// `host`'s own namespace to its `port`: a client on that host, which a
    /// cut does not reach.
    pub fn local_port(&self, host: Host, port: u16) -> io::Result<u16> {
        let local = free_port();
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, local))?;
        let target = self.socket_address(host, port);
        self.namespace(host)
            .runtime
            .spawn(forward(listener, target))?;
        Ok(local)
    }

    /// Runs `future` on a thread inside `host`'s namespace: every socket it
    /// opens is on that host.
    pub fn run<F>(&self, host: Host, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.namespace(host).runtime.handle.spawn(future)
    }

    /// The namespace's name, e.g. for `ip -n NAME …` while debugging.
    pub fn namespace_name(&self, host: Host) -> &str {
        &self.namespace(host).name
    }

    /// Every namespace of the lab: the prefix its names start with.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn add_namespace(&mut self, role: &str) -> Result<String, NetLabError> {
        let name = format!("{}-{role}", self.id);
        ip(&["netns", "add", &name])?;
        // Recorded before anything else can fail, so drop deletes it.
        let file = match File::open(format!("/run/netns/{name}")) {
            Ok(file) => file,
            Err(e) => {
                let _ = ip(&["netns", "delete", &name]);
                return Err(e.into());
            }
        };
        let runtime = match NsRuntime::start(&name, &file) {
            Ok(runtime) => runtime,
            Err(e) => {
                drop(file);
                let _ = ip(&["netns", "delete", &name]);
                return Err(e.into());
            }
        };
        self.namespaces.push(Namespace {
            name: name.clone(),
            file,
            runtime,
        });
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A host's namespace, its link to the switch and its address.
    fn add_host(&mut self, host: Host) -> Result<(), NetLabError> {
        let (role, tag) = match host {
            Host::Etcd => ("etcd".to_string(), "e".to_string()),
            Host::Member(i) => (format!("db{}", i + 1), (i + 1).to_string()),
        };
        let name = self.add_namespace(&role)?;
        let switch = self.namespaces[0].name.clone();
        let (inside, port) = self.link_names(&tag);
        ip(&[
            "link", "add", &inside, "netns", &name, "type", "veth", "peer", "name", &port, "netns",
            &switch,
        ])?;
        ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{}/{PREFIX_LEN}", self.address(host)),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &name, "link", "set", &inside, "up"])?;
        if let (true, Host::Member(_)) = (self.clients, host) {
            let (inside, port) = self.client_link_names(&tag);
            ip(&[
                "link", "add", &inside, "netns", &name, "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br1", "up"])?;
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/{PREFIX_LEN}", self.client_address(host)),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &name, "link", "set", &inside, "up"])?;
        }
        Ok(())
    }

    /// The host's end of a link and the switch's.
    fn link_names(&self, tag: &str) -> (String, String) {
        (format!("{}h{tag}", self.id), format!("{}s{tag}", self.id))
    }

    fn set_link(&self, host: Host, state: &str) -> Result<(), NetLabError> {
        let tag = match host {
            Host::Etcd => "e".to_string(),
            Host::Member(i) => (i + 1).to_string(),
        };
        let (_, port) = self.link_names(&tag);
        ip(&["-n", &self.namespaces[0].name, "link", "set", &port, state])
    }

    fn namespace(&self, host: Host) -> &Namespace {
        let index = match host {
            Host::Etcd => 1,
            Host::Member(i) => {
                assert!(i < self.members, "the lab has {} members", self.members);
                2 + i
            }
        };
        &self.namespaces[index]
    }

    fn socket_address(&self, host: Host, port: u16) -> SocketAddr {
        let address: Ipv4Addr = self.address(host).parse().expect("a lab address");
        SocketAddr::from((address, port))
    }
}

impl Network for NetLab {
    fn address(&self, host: Host) -> String {
        match host {
            Host::Etcd => format!("{SUBNET}.{ETCD}"),
            Host::Member(i) => format!("{SUBNET}.{}", i + 1),
        }
    }

    fn hba_network(&self) -> String {
        format!("{SUBNET}.0/{PREFIX_LEN}")
    }

    fn enter(&self, host: Host, command: &mut Command) -> io::Result<()> {
        let namespace = self.namespace(host).file.try_clone()?;
        // SAFETY: between fork and exec only setns(2) is called, which is
        // async-signal-safe; the file stays open in the closure until then.
        unsafe {
            command.pre_exec(move || enter(&namespace));
        }
        Ok(())
    }

    fn expose(&self, host: Host, port: u16) -> io::Result<()> {
        // Bound here, in this thread's namespace; connected from the switch's.
        let listener = StdListener::bind((Ipv4Addr::LOCALHOST, port))?;
        let target = self.socket_address(host, port);
        self.namespaces[0].runtime.spawn(forward(listener, target))
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Threads first (their sockets close with their runtimes), then the
        // namespaces; deleting one deletes its links.
        for namespace in self.namespaces.drain(..).rev() {
            let Namespace {
                name,
                file,
                runtime,
            } = namespace;
            drop(runtime);
            drop(file);
            if let Err(e) = ip(&["netns", "delete", &name]) {
                eprintln!("NetLab: {e}; remove it with `ip netns delete {name}`");
            }
        }
    }
}

#[derive(Debug)]
struct Namespace {
    name: String,
    /// `/run/netns/NAME`, for setns(2).
    file: File,
    runtime: NsRuntime,
}

/// A thread inside a namespace running a current-thread tokio runtime: what
/// is spawned on it opens its sockets there.
#[derive(Debug)]
pub(crate) struct NsRuntime {
    pub(crate) handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    pub(crate) fn start(name: &str, namespace: &File) -> io::Result<NsRuntime> {
        let namespace = namespace.try_clone()?;
        let (ready, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                let runtime = enter(&namespace).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                drop(namespace);
                match runtime {
                    Ok(runtime) => {
                        let _ = ready.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                        // Dropping the runtime drops its tasks and sockets.
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        let handle = handle
            .recv()
            .map_err(|_| io::Error::other("the namespace thread died"))
            .and_then(|r| r);
        match handle {
            Ok(handle) => Ok(NsRuntime {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// Spawns a forwarder, turning its listener into a tokio one on this
    /// runtime (the listener keeps the namespace it was bound in).
    fn spawn(&self, forwarder: impl FnOnce() -> Forwarding + Send + 'static) -> io::Result<()> {
        self.handle.spawn(async move { forwarder().await });
        Ok(())
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Forwarding = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Forwards every connection to `listener` to `target`, connecting from the
/// namespace of the runtime it runs on.
fn forward(listener: StdListener, target: SocketAddr) -> impl FnOnce() -> Forwarding + Send {
    move || {
        Box::pin(async move {
            let listener = match listener
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(listener))
            {
                Ok(listener) => listener,
                Err(e) => {
                    eprintln!("NetLab: cannot forward to {target}: {e}");
                    return;
                }
            };
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target));
                    if let Ok(Ok(mut upstream)) = connect.await {
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        })
    }
}

/// Moves the calling thread (or, in `pre_exec`, the child) into a network
/// namespace.
fn enter(namespace: &File) -> io::Result<()> {
    // SAFETY: a plain system call on a file descriptor we hold open.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Deletes the namespaces of labs whose process is gone and in which nothing
/// runs: what a test killed outright (SIGKILL, a nextest timeout) left.
/// Never one of a live process, never one with a process inside.
fn sweep_dead_labs() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&output.stdout).to_string();
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = lab_pid(name) else {
            continue;
        };
        if lab::process::is_alive(pid as i32) {
            continue;
        }
        let inside = Command::new("ip").args(["netns", "pids", name]).output();
        if inside.is_ok_and(|o| o.status.success() && o.stdout.trim_ascii().is_empty()) {
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

/// The PID in a lab namespace's name, `pgw<pid>-<n>-<role>`; `None` for
/// any other name.
fn lab_pid(name: &str) -> Option<usize> {
    let mut parts = name.strip_prefix("pgw")?.splitn(3, '-');
    let (pid, n, role) = (parts.next()?, parts.next()?, parts.next()?);
    let base36 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    let known_role = role == "sw"
        || role == "etcd"
        || role
            .strip_prefix("db")
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
    (base36(pid) && base36(n) && known_role).then(|| usize::from_str_radix(pid, 36).ok())?
}

/// `ip ARGS`, with its error output in the error.
pub(crate) fn ip(args: &[&str]) -> Result<(), NetLabError> {
    let failed = |detail: String| NetLabError::Ip {
        command: args.join(" "),
        detail,
    };
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

pub(crate) fn base36(mut n: usize) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::MetadataExt;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An echo-once server on member 0's address, seen from here through
    /// the switch and from inside the host.
    async fn ask(port: u16) -> io::Result<String> {
        let exchange = async {
            let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
            stream.write_all(b"ping").await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, io::Error>(answer)
        };
        tokio::time::timeout(Duration::from_secs(2), exchange)
            .await
            .map_err(|_| io::Error::other("timed out"))?
    }

    /// The namespaces whose names start with `id` (a lab's or a HostNet's).
    pub(crate) fn lab_namespaces(id: &str) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(id))
            .map(str::to_string)
            .collect()
    }

    #[tokio::test]
    async fn a_cut_host_is_unreachable_from_the_network_but_not_from_itself() {
        let lab = NetLab::new(2).unwrap();
        let id = lab.id().to_string();
        assert_eq!(lab_namespaces(&id).len(), 4, "switch, etcd, two members");
        let port = free_port();
        let address = lab.socket_address(Host::Member(0), port);
        let server = TcpListener::bind(address);
        let server = lab.run(Host::Member(0), async move {
            let server = server.await.unwrap();
            loop {
                let (mut stream, _) = server.accept().await.unwrap();
                let mut buf = [0u8; 4];
                stream.read_exact(&mut buf).await.unwrap();
                stream.write_all(b"pong").await.unwrap();
            }
        });
        lab.expose(Host::Member(0), port).unwrap();
        let local = lab.local_port(Host::Member(0), port).unwrap();
        let reached = crate::wait_for("the server", Duration::from_secs(5), || ask(port)).await;
        assert_eq!(reached.unwrap(), "pong");

        lab.cut(Host::Member(0)).unwrap();
        assert!(ask(port).await.is_err(), "a cut host answered the network");
        assert_eq!(ask(local).await.unwrap(), "pong", "from the host itself");
        lab.heal(Host::Member(0)).unwrap();
        let healed = crate::wait_for("the healed link", Duration::from_secs(5), || ask(port)).await;
        assert_eq!(healed.unwrap(), "pong");
        server.abort();

        // A process started on a host is in its namespace, under the PID
        // this process knows.
        let mut command = Command::new("sleep");
        command.arg("30");
        lab.enter(Host::Member(1), &mut command).unwrap();
        let mut child = command.spawn().unwrap();
        let inode = |path: String| std::fs::metadata(path).unwrap().ino();
        assert_eq!(
            inode(format!("/proc/{}/ns/net", child.id())),
            inode(format!(
                "/run/netns/{}",
                lab.namespace_name(Host::Member(1))
            ))
        );
        child.kill().unwrap();
        child.wait().unwrap();

        drop(lab);
        assert_eq!(lab_namespaces(&id), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_member_cut_from_its_clients_still_reaches_the_cluster() {
        let lab = NetLab::with_clients(2).unwrap();
        let id = lab.id().to_string();
        let port = free_port();
        let gateway: SocketAddr = format!("{}:{port}", lab.client_gateway()).parse().unwrap();
        let service = lab.run_on_clients(async move {
            let listener = TcpListener::bind(gateway).await.unwrap();
            loop {
                let _ = listener.accept().await;
            }
        });
        let cluster_port = free_port();
        let peer = lab.socket_address(Host::Member(1), cluster_port);
        let peer_server = lab.run(Host::Member(1), async move {
            let listener = TcpListener::bind(peer).await.unwrap();
            loop {
                let _ = listener.accept().await;
            }
        });
        // From member 0's namespace: the client service and member 1.
        let probe = |target: SocketAddr| {
            lab.run(Host::Member(0), async move {
                tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(target))
                    .await
                    .is_ok_and(|c| c.is_ok())
            })
        };
        let reached = crate::wait_for("the client service", Duration::from_secs(5), || async {
            probe(gateway).await.unwrap().then_some(()).ok_or("not yet")
        })
        .await;
        assert!(reached.is_ok());
        assert!(probe(peer).await.unwrap(), "member 1 over the cluster link");

        lab.cut_clients(Host::Member(0)).unwrap();
        assert!(
            !probe(gateway).await.unwrap(),
            "a cut client link still reached the clients"
        );
        assert!(probe(peer).await.unwrap(), "the cluster link must stay up");
        lab.heal_clients(Host::Member(0)).unwrap();
        let healed = crate::wait_for("the healed client link", Duration::from_secs(5), || async {
            probe(gateway).await.unwrap().then_some(()).ok_or("not yet")
        })
        .await;
        assert!(healed.is_ok());
        service.abort();
        peer_server.abort();
        drop(lab);
        assert_eq!(lab_namespaces(&id), Vec::<String>::new());
    }

    #[test]
    fn only_lab_names_carry_a_pid() {
        assert_eq!(lab_pid("pgwz-1-db2"), Some(35));
        assert_eq!(lab_pid("pgw10-0-sw"), Some(36));
        assert_eq!(lab_pid("pgw10-0-etcd"), Some(36));
        for other in [
            "pgw10-0",
            "pgw10-0-web",
            "pgw-0-sw",
            "pw10-0-sw",
            "pgwX-0-sw",
            "pgw10-0-db",
        ] {
            assert_eq!(lab_pid(other), None, "{other}");
        }
    }

    #[test]
    fn a_lab_that_panics_removes_its_namespaces() {
        let id = std::sync::Mutex::new(String::new());
        let result = std::panic::catch_unwind(|| {
            let lab = NetLab::new(1).unwrap();
            *id.lock().unwrap() = lab.id().to_string();
            panic!("a failing test");
        });
        assert!(result.is_err());
        let id = id.into_inner().unwrap();
        assert!(!id.is_empty());
        assert_eq!(lab_namespaces(&id), Vec::<String>::new());
    }
}
