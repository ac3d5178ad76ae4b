//! pg_hba.conf: local connections by peer, everything over the network by
//! scram-sha-256.

/// The whole pg_hba.conf for the given client networks.
pub fn render_hba(replication_user: &str, networks: &[String]) -> String {
    let mut out = String::from(
        "# Written by pgwarden with its settings, from [postgresql] hba_networks. Do not edit.\n\
         # TYPE  DATABASE     USER  ADDRESS  METHOD\n\
         local   all          all            peer\n\
         local   replication  all            peer\n",
    );
    for network in networks {
        out.push_str(&format!(
            "host    all          all   {network}  scram-sha-256\n"
        ));
        out.push_str(&format!(
            "host    replication  \"{}\"  {network}  scram-sha-256\n",
            replication_user.replace('"', "\"\"")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_connection_uses_scram() {
        let text = render_hba("replicator", &["0.0.0.0/0".into(), "::/0".into()]);
        let host_lines: Vec<_> = text.lines().filter(|l| l.starts_with("host")).collect();
        assert_eq!(host_lines.len(), 4);
        assert!(
            host_lines.iter().all(|l| l.ends_with("scram-sha-256")),
            "{text}"
        );
        assert!(
            text.contains("host    replication  \"replicator\"  ::/0  scram-sha-256"),
            "{text}"
        );
        assert!(!text.contains("trust"), "{text}");
    }
}
