//! What the safe default costs: pgbench TPS against the primary in quorum
//! mode over TPS in asynchronous mode, on the same cluster in the same run
//! (the mode switched through the dynamic configuration in between).

use std::process::{Command, Stdio};

use store::cluster::SynchronousMode;
use testkit::agents::SUPERUSER_PASSWORD;

use crate::silent::NetCluster;

const PGBENCH_SCALE: &str = "4";

/// One ratio per round; odd rounds measure quorum first, even rounds
/// asynchronous first, so neither mode always gets the warmer cache.
pub async fn tps_ratios(net: &NetCluster, rounds: u64, seconds: u64) -> Result<Vec<f64>, String> {
    let primary = net.ready().await?;
    pgbench(net, &primary, &["-i", "-s", PGBENCH_SCALE, "-q"]).await?;
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [SynchronousMode::Quorum, SynchronousMode::Off]
        } else {
            [SynchronousMode::Off, SynchronousMode::Quorum]
        };
        let (mut quorum, mut off) = (0.0, 0.0);
        for mode in order {
            let primary = net.set_mode(mode).await?;
            let duration = seconds.to_string();
            let output = pgbench(
                net,
                &primary,
                &["-n", "-c", "4", "-j", "2", "-T", &duration],
            )
            .await?;
            let tps = parse_tps(&output).ok_or(format!("no tps in pgbench's output:\n{output}"))?;
            println!("tps round {round}: {mode:?} mode on {primary}: {tps:.0} tps");
            match mode {
                SynchronousMode::Off => off = tps,
                _ => quorum = tps,
            }
        }
        ratios.push(quorum / off);
    }
    Ok(ratios)
}

/// Runs pgbench on `primary`'s own host against its PostgreSQL.
async fn pgbench(net: &NetCluster, primary: &str, extra: &[&str]) -> Result<String, String> {
    let bin = lab::postgres::bin_dir().map_err(|e| e.to_string())?;
    let pgbench = bin.join("pgbench");
    let mut command = Command::new(&pgbench);
    let address = net.on_host(net.cluster.host(primary), &mut command)?;
    let port = net.cluster.member(primary).endpoint().port.to_string();
    command
        .args(["-h", &address, "-p", &port, "-U", "postgres"])
        .args(extra)
        .arg("postgres")
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdin(Stdio::null());
    let output = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("run {}: {e}", pgbench.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("pgbench {extra:?} on {primary} failed:\n{text}"));
    }
    Ok(text)
}

/// `tps = 1234.5 (without initial connection time)`
fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_tps() {
        let output =
            "latency average = 2.1 ms\ntps = 1904.228310 (without initial connection time)\n";
        assert_eq!(super::parse_tps(output), Some(1904.22831));
        assert_eq!(super::parse_tps("pgbench: error"), None);
    }
}
