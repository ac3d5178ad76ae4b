//! The few network notations the file uses: `addr/prefix`, `host:port` and
//! `http(s)://host:port`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network as written in pg_hba.conf, e.g. `10.0.0.0/8` or `::/0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("\"{text}\" has no /prefix"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{addr}\" is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix \"{prefix}\" is not a number from 0 to {max}"))?;
        let net = IpNet { addr, prefix };
        // PostgreSQL ignores host bits; a value with them set is almost always
        // a typo for a narrower or wider network than the operator meant.
        let canonical = net.network();
        if canonical != addr {
            return Err(format!(
                "\"{text}\" has host bits set; the network is {canonical}/{prefix}"
            ));
        }
        Ok(net)
    }
}

impl IpNet {
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Checks `host:port` (IPv6 hosts in brackets) with a port from 1 to 65535.
pub(crate) fn check_host_port(text: &str) -> Result<(), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("\"{text}\" has no :port"))?;
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host_ok = match bare {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        }
    };
    if !host_ok {
        return Err(format!(
            "\"{host}\" is not a host name or IP address (IPv6 goes in brackets)"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("port \"{port}\" is not a number from 1 to 65535")),
    }
}

/// Whether `host:port` (already checked) is reachable from this host only:
/// 127.0.0.0/8, ::1 or localhost.
pub(crate) fn is_loopback(host_port: &str) -> bool {
    let Some((host, _)) = host_port.rsplit_once(':') else {
        return false;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks `http://host:port` or `https://host:port`, nothing after the port.
pub(crate) fn check_http_url(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or_else(|| format!("\"{text}\" does not start with http:// or https://"))?;
    if rest.contains('/') {
        return Err(format!(
            "\"{text}\" has a path; give only scheme, host and port"
        ));
    }
    check_host_port(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks() {
        assert_eq!(
            "0.0.0.0/0".parse::<IpNet>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!("::/0".parse::<IpNet>().unwrap().to_string(), "::/0");
        assert_eq!("10.1.0.0/16".parse::<IpNet>().unwrap().prefix, 16);
        assert_eq!("fd00::/8".parse::<IpNet>().unwrap().prefix, 8);
        assert_eq!("192.168.1.7/32".parse::<IpNet>().unwrap().prefix, 32);
    }

    #[test]
    fn rejects_bad_networks() {
        assert_eq!(
            "10.0.0.0".parse::<IpNet>(),
            Err("\"10.0.0.0\" has no /prefix".to_owned())
        );
        assert_eq!(
            "10.0.0/8".parse::<IpNet>(),
            Err("\"10.0.0\" is not an IP address".to_owned())
        );
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err("prefix \"33\" is not a number from 0 to 32".to_owned())
        );
        assert_eq!(
            "10.1.2.3/8".parse::<IpNet>(),
            Err("\"10.1.2.3/8\" has host bits set; the network is 10.0.0.0/8".to_owned())
        );
    }

    #[test]
    fn checks_host_port_and_urls() {
        assert!(check_host_port("127.0.0.1:8008").is_ok());
        assert!(check_host_port("[::1]:8008").is_ok());
        assert!(check_host_port("db-1.example.com:5432").is_ok());
        assert!(check_host_port("::1:8008").is_err());
        assert!(check_host_port("host:0").is_err());
        assert!(check_host_port("host").is_err());
        assert!(check_http_url("https://10.0.0.1:2379").is_ok());
        assert!(check_http_url("etcd://10.0.0.1:2379").is_err());
        assert!(check_http_url("http://10.0.0.1:2379/v3").is_err());
        assert!(check_http_url("http://10.0.0.1").is_err());
    }

    #[test]
    fn loopback_listeners() {
        for local in [
            "127.0.0.1:8008",
            "127.3.2.1:1",
            "[::1]:8008",
            "localhost:8008",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback(local), "{local}");
        }
        for open in [
            "0.0.0.0:8008",
            "[::]:8008",
            "10.0.0.1:8008",
            "db1.example.com:8008",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(!is_loopback(open), "{open}");
        }
    }
}
