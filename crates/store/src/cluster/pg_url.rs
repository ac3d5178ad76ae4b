//! Where a member's PostgreSQL listens, read from the URL it publishes.

/// A host (IPv6 without brackets) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PgAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `postgres://[user[:password]@]host[:port][/db][?…]` → host and port
/// (5432 when absent); the error says what is wrong with it.
pub fn parse_pg_url(url: &str) -> Result<PgAddress, String> {
    let bad = |why: &str| {
        format!(
            "unusable pg_url \"{url}\": {why}; check member.connect_address and member.port in that member's pgwarden.toml"
        )
    };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| bad("it does not start with postgres://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(bad("it names no host"));
    }
    let port = match port {
        None => 5432,
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(PgAddress {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_urls_give_host_and_port_or_say_what_is_wrong() {
        for (url, host, port) in [
            ("postgres://10.0.0.2:5433/postgres", "10.0.0.2", 5433),
            (
                "postgresql://u:p@db.example:6000/x?sslmode=off",
                "db.example",
                6000,
            ),
            ("postgres://db.example", "db.example", 5432),
            ("postgres://[::1]:5432/postgres", "::1", 5432),
        ] {
            let address = parse_pg_url(url).unwrap();
            assert_eq!((address.host.as_str(), address.port), (host, port), "{url}");
        }
        assert_eq!(
            parse_pg_url("postgres://[::1]:5432").unwrap().to_string(),
            "[::1]:5432"
        );
        for url in [
            "http://h:1",
            "postgres://:5432",
            "postgres://h:0",
            "postgres://h:x",
            "postgres://[::1",
        ] {
            let err = parse_pg_url(url).unwrap_err();
            assert!(
                err.contains(url) && err.contains("member.connect_address"),
                "{err}"
            );
        }
    }
}
