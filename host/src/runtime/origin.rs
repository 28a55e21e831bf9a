//! The allow-list of a destination: which origins it may reach, and which addresses count as
//! private (reachable only when the allow-list names them literally).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Result};

/// `scheme://host:port`, the unit the allow-list speaks in. Hosts are kept lowercased and
/// IPv6 literals without brackets; the port is always explicit (80/443 by default).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Origin {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl Origin {
    /// Parses an allow-list entry: `https://api.example.com`, `http://127.0.0.1:8080`. A path,
    /// query or user name is refused rather than ignored, so an entry never allows more than
    /// it seems to.
    pub fn parse(entry: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::invalid(format!("allowed host {entry:?} {why}")).with_hint(
                "pass --allow-host as scheme://host[:port], e.g. https://us6.api.mailchimp.com",
            )
        };
        let uri: http::Uri = entry.parse().map_err(|_| invalid("is not a URL"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| invalid("has no scheme"))
            .and_then(|scheme| {
                Scheme::parse(scheme).ok_or_else(|| invalid("must start with http:// or https://"))
            })?;
        let authority = uri.authority().ok_or_else(|| invalid("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("must not carry a user name or password"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(invalid(
                "must not have a path or query: it allows a whole origin",
            ));
        }
        let host = normalize_host(authority.host());
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        Ok(Origin {
            scheme,
            port: authority.port_u16().unwrap_or(scheme.default_port()),
            host,
        })
    }

    /// The origin a request goes to, if its URI names one.
    pub fn of(uri: &http::Uri) -> Option<Self> {
        let scheme = Scheme::parse(uri.scheme_str()?)?;
        let authority = uri.authority()?;
        Some(Origin {
            scheme,
            host: normalize_host(authority.host()),
            port: authority.port_u16().unwrap_or(scheme.default_port()),
        })
    }

    /// The host as an IP address, when the origin names one literally.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.ip_literal() {
            Some(IpAddr::V6(_)) => format!("[{}]", self.host),
            _ => self.host.clone(),
        };
        write!(f, "{}://{host}:{}", self.scheme.as_str(), self.port)
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// What kind of network an address belongs to, when it is not the public internet.
pub fn private_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => private_v6(v6),
        },
    }
}

fn private_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = address.octets();
    if address.is_loopback() {
        Some("loopback")
    } else if address.is_private() {
        Some("private")
    } else if address.is_link_local() {
        Some("link-local")
    } else if address.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if address.is_broadcast() || address.is_multicast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn private_v6(address: Ipv6Addr) -> Option<&'static str> {
    let first = address.segments()[0];
    if address.is_loopback() {
        Some("loopback")
    } else if address.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if address.is_multicast() {
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_to_origins_with_explicit_ports() {
        let origin = Origin::parse("https://US6.api.mailchimp.com").unwrap();
        assert_eq!(origin.to_string(), "https://us6.api.mailchimp.com:443");
        assert_eq!(
            Origin::parse("http://127.0.0.1:8080/").unwrap().to_string(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Origin::parse("http://[::1]:9000").unwrap().ip_literal(),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        for bad in [
            "api.example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user:pw@example.com",
            "https://example.com?x=1",
            "",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn requests_match_entries_whatever_the_spelling() {
        let entry = Origin::parse("https://api.example.com").unwrap();
        let uri: http::Uri = "https://API.example.com./v1/x?y=2".parse().unwrap();
        assert_eq!(Origin::of(&uri), Some(entry.clone()));
        let other_port: http::Uri = "https://api.example.com:8443/".parse().unwrap();
        assert_ne!(Origin::of(&other_port), Some(entry));
    }

    #[test]
    fn private_addresses_are_told_apart_from_public_ones() {
        for (address, kind) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("192.168.1.1", "private"),
            ("172.16.0.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
        ] {
            assert_eq!(
                private_kind(address.parse().unwrap()),
                Some(kind),
                "{address}"
            );
        }
        for public in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert_eq!(private_kind(public.parse().unwrap()), None, "{public}");
        }
    }
}
