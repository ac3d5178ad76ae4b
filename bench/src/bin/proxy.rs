//! bench/proxy: pgbench select-only against one PostgreSQL directly,
//! through `pgwarden proxy` (as configured by default: forwarding in the
//! kernel, and with `kernel_forwarding = false`: copying in user space) and
//! through HAProxy (TCP mode, the
//! reference), interleaved round by round, with established connections and
//! with a new connection per transaction.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::{ApiClient, Call};
use lab::{free_port, wait_for, PgCluster};
use pgwarden_bench::{figure_line, summary, Args};
use store::cluster::{ClusterKeys, Leader, MemberStatus, PgState, Role, Tags};

/// A child process killed on drop (also when the bench fails half-way).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const TARGETS: [&str; 4] = ["direct", "pgwarden", "userspace", "haproxy"];
const MODES: [(&str, &[&str]); 2] = [("established", &["-M", "prepared"]), ("new_conn", &["-C"])];

#[tokio::main]
async fn main() {
    let args = Args::from_env_or_exit("bench/proxy", &[("--rounds", 5), ("--seconds", 10)]);
    pgwarden_bench::exit_on_error("bench/proxy", run(args).await);
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    for program in [PGBENCH, "/usr/sbin/haproxy"] {
        if !Path::new(program).is_file() {
            return Err(format!("{program} is missing: run scripts/install-deps").into());
        }
    }
    eprintln!("bench/proxy: starting PostgreSQL and etcd");
    let mut cluster = PgCluster::empty()?;
    let mut node = cluster.new_node("db1")?;
    node.settings.max_connections = 100;
    node.settings
        .parameters
        .insert("shared_buffers".into(), "256MB".into());
    node.instance.bootstrap(&node.settings).await?;
    cluster.nodes.push(node);
    let node = &cluster.nodes[0];
    let pg_port = node.endpoint().port;
    let password = node.instance.spec().superuser.password.clone();
    // Trust on loopback: with SCRAM (4096 hash iterations per login) the
    // new-connection mode would measure password hashing, not the proxies.
    let hba = node
        .query_text("SHOW hba_file")
        .await?
        .ok_or("PostgreSQL did not say where pg_hba.conf is")?;
    std::fs::write(&hba, "host all all 127.0.0.1/32 trust\n")?;
    cluster.run_as.chown(Path::new(&hba))?;
    node.execute("SELECT pg_reload_conf()").await?;

    let etcd = lab::etcd::EtcdCluster::start(1).await?;
    let store = etcd.store().await?;
    let keys = ClusterKeys::new("/pgwarden", "bench")?;
    let leader = Leader {
        member: "db1".into(),
    };
    let term = keys.leader().create(store.as_ref(), &leader, None).await? as u64;
    let status = MemberStatus {
        name: "db1".into(),
        role: Role::Primary,
        state: PgState::Running,
        timeline: Some(1),
        flush_lsn: None,
        receive_lsn: None,
        replay_lsn: None,
        lag_bytes: None,
        lag_ms: None,
        api_url: String::new(),
        pg_url: format!("postgres://127.0.0.1:{pg_port}/postgres"),
        tags: Tags::default(),
        updated_ms: 0,
        upstream: None,
        streaming: false,
        term: Some(term),
        note: "published by bench/proxy".into(),
        can_backup: false,
        pending_restart: Vec::new(),
        config_errors: Vec::new(),
        archive: None,
        slots: Vec::new(),
        reachability: None,
    };
    keys.member("db1")?
        .put(store.as_ref(), &status, None)
        .await?;

    let (proxy_port, _proxy) =
        start_proxy(&args.pgwarden, cluster.dir.path(), &etcd.endpoints(), true).await?;
    let (userspace_port, _userspace_proxy) =
        start_proxy(&args.pgwarden, cluster.dir.path(), &etcd.endpoints(), false).await?;

    let haproxy_port = free_port();
    let haproxy_cfg = cluster.dir.join("haproxy.cfg");
    std::fs::write(
        &haproxy_cfg,
        format!(
            "global\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\nlisten pg\n  bind 127.0.0.1:{haproxy_port}\n  server db1 127.0.0.1:{pg_port}\n"
        ),
    )?;
    let _haproxy = Proc(
        Command::new("/usr/sbin/haproxy")
            .args(["-db", "-q", "-f"])
            .arg(&haproxy_cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?,
    );

    eprintln!("bench/proxy: pgbench -i -s 10");
    pgbench(pg_port, &password, &["-i", "-s", "10", "-q"])?;
    let port_of = |target: &str| match target {
        "direct" => pg_port,
        "pgwarden" => proxy_port,
        "userspace" => userspace_port,
        _ => haproxy_port,
    };
    // Everyone answers before the clock starts.
    for target in TARGETS {
        pgbench(port_of(target), &password, &["-S", "-n", "-t", "10"])?;
    }

    // results[mode][target] = one (tps, latency ms) per round.
    let mut results = vec![vec![Vec::new(); TARGETS.len()]; MODES.len()];
    let seconds = args.number("--seconds").to_string();
    for round in 0..args.number("--rounds") as usize {
        for (m, (mode, flags)) in MODES.iter().enumerate() {
            for k in 0..TARGETS.len() {
                // Rotate the order so no target always runs first.
                let t = (k + round) % TARGETS.len();
                let mut pgbench_args = vec!["-S", "-n", "-c", "16", "-j", "2", "-T", &seconds];
                pgbench_args.extend_from_slice(flags);
                let output = pgbench(port_of(TARGETS[t]), &password, &pgbench_args)?;
                let (tps, latency) = parse(&output)
                    .ok_or_else(|| format!("cannot read pgbench's output:\n{output}"))?;
                eprintln!(
                    "round {}/{} {mode:<11} {:<9} {tps:>9.0} tps {latency:>7.3} ms",
                    round + 1,
                    args.number("--rounds"),
                    TARGETS[t]
                );
                results[m][t].push((tps, latency));
            }
        }
    }

    println!(
        "\n{:<11} {:<9} {:>10} {:>12} {:>16}",
        "mode", "target", "tps", "latency ms", "ratio to direct"
    );
    let mut figures = Vec::new();
    for (m, (mode, _)) in MODES.iter().enumerate() {
        for (t, target) in TARGETS.iter().enumerate() {
            let tps: Vec<f64> = results[m][t].iter().map(|r| r.0).collect();
            let latency: Vec<f64> = results[m][t].iter().map(|r| r.1).collect();
            let ratios: Vec<f64> = results[m][t]
                .iter()
                .zip(&results[m][0])
                .map(|(r, direct)| r.0 / direct.0)
                .collect();
            println!(
                "{mode:<11} {target:<9} {:>10.0} {:>12.3} {:>16.2}",
                summary(&tps).1,
                summary(&latency).1,
                summary(&ratios).1
            );
            if t > 0 {
                let name = match *target {
                    "pgwarden" => "proxy",
                    "userspace" => "proxy_userspace",
                    other => other,
                };
                figures.push(figure_line(
                    &format!("{name}_{mode}_ratio"),
                    &ratios,
                    "ratio",
                ));
            }
            figures.push(figure_line(&format!("{target}_{mode}_tps"), &tps, "tps"));
        }
    }
    println!();
    for line in figures {
        println!("{line}");
    }
    Ok(())
}

/// A `pgwarden proxy` routing to db1, with or without kernel forwarding:
/// its read-write port and the process.
async fn start_proxy(
    pgwarden: &Path,
    dir: &Path,
    endpoints: &[String],
    kernel: bool,
) -> Result<(u16, Proc), Box<dyn std::error::Error>> {
    let (port, http_port) = (free_port(), free_port());
    let name = if kernel { "proxy" } else { "proxy-userspace" };
    let toml = dir.join(format!("{name}.toml"));
    std::fs::write(
        &toml,
        format!(
            "[store]\nendpoints = {endpoints:?}\ncluster = \"bench\"\n\n[proxy]\nread_write = \"127.0.0.1:{port}\"\nkernel_forwarding = {kernel}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n"
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let proc = Proc(
        Command::new(pgwarden)
            .args(["proxy", "-c"])
            .arg(&toml)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    wait_for(
        &format!("the {name} to route to db1"),
        Duration::from_secs(30),
        || async { healthy(http_port).await },
    )
    .await?;
    // Measuring user space under the kernel's label would mislead.
    let said = std::fs::read_to_string(dir.join(format!("{name}.log")))?;
    if kernel && said.contains("cannot forward in the kernel") {
        return Err(format!("the proxy fell back to user space (run as root):\n{said}").into());
    }
    Ok((port, proc))
}

async fn healthy(port: u16) -> Result<(), String> {
    let base = format!("http://127.0.0.1:{port}");
    let reply = ApiClient::new(None)
        .map_err(|e| e.to_string())?
        .send(Call::new(hyper::Method::GET, &base, "/health"))
        .await
        .map_err(|e| e.to_string())?;
    if reply.status == hyper::StatusCode::OK {
        Ok(())
    } else {
        Err(format!("{}: {}", reply.status, reply.error_message()))
    }
}

fn pgbench(port: u16, password: &str, extra: &[&str]) -> Result<String, String> {
    let output = Command::new(PGBENCH)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(extra)
        .arg("postgres")
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {PGBENCH}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("pgbench on port {port} {extra:?} failed:\n{text}"));
    }
    Ok(text)
}

/// tps and average latency (ms) from pgbench's report.
fn parse(output: &str) -> Option<(f64, f64)> {
    let number_after = |prefix: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    Some((number_after("tps = ")?, number_after("latency average = ")?))
}
