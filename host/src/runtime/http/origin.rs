//! The allow-list of a destination: which origins it may reach, and which addresses count as
//! private (reachable only when the allow-list names them literally).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::error::{Error, Result};

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
///
/// Every entry of IANA's IPv4 and IPv6 special-purpose address registries is classified
/// (the tables below, most specific first); the entries those registries mark globally
/// reachable (anycast services, AS112, AMT, ORCHIDv2) count as public. IPv6 addresses outside
/// global unicast (2000::/3) that no entry names are reserved. An IPv6 address that carries
/// an IPv4 one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo's server and client) is as
/// private as the address it carries: a NAT64 gateway or 6to4 relay would deliver to it. The
/// kind named is then the embedded address's.
pub fn private_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => private_v6(v6),
    }
}

/// What an entry of the tables says about the addresses it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Not the public internet, and why.
    Special(&'static str),
    /// In a special-purpose block, but globally reachable by the registry.
    Public,
    /// Carries an IPv4 address, which decides (IPv6 only).
    Embeds(Embedding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Embedding {
    /// In the last 32 bits: IPv4-mapped ::ffff:0:0/96 and NAT64 64:ff9b::/96 (RFC 6052).
    Last32,
    /// In bits 16..48: 6to4 2002::/16 (RFC 3056).
    SixToFour,
    /// Teredo 2001::/32 (RFC 4380): the server in bits 32..64, the client in the last 32
    /// bits, inverted.
    Teredo,
}

use Class::{Embeds, Public, Special};

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u32) -> (u32, u32) {
    (Ipv4Addr::new(a, b, c, d).to_bits(), len)
}

const fn v6(segments: [u16; 8], len: u32) -> (u128, u32) {
    let [a, b, c, d, e, f, g, h] = segments;
    (Ipv6Addr::new(a, b, c, d, e, f, g, h).to_bits(), len)
}

/// IANA IPv4 Special-Purpose Address Registry (RFC 6890 and updates), plus multicast;
/// the first entry that contains an address wins.
const V4_TABLE: &[((u32, u32), Class)] = &[
    (v4(0, 0, 0, 0, 8), Special("unspecified")),
    (v4(10, 0, 0, 0, 8), Special("private")),
    (v4(100, 64, 0, 0, 10), Special("shared (carrier-grade NAT)")),
    (v4(127, 0, 0, 0, 8), Special("loopback")),
    (v4(169, 254, 0, 0, 16), Special("link-local")),
    (v4(172, 16, 0, 0, 12), Special("private")),
    // Port Control Protocol and TURN anycast: globally reachable.
    (v4(192, 0, 0, 9, 32), Public),
    (v4(192, 0, 0, 10, 32), Public),
    // DS-Lite, NAT64 discovery and the rest of the IETF's block.
    (v4(192, 0, 0, 0, 24), Special("IETF protocol assignment")),
    (v4(192, 0, 2, 0, 24), Special("documentation")),
    // AS112 and Automatic Multicast Tunneling: globally reachable.
    (v4(192, 31, 196, 0, 24), Public),
    (v4(192, 52, 193, 0, 24), Public),
    (
        v4(192, 88, 99, 0, 24),
        Special("6to4 relay anycast (deprecated)"),
    ),
    (v4(192, 168, 0, 0, 16), Special("private")),
    (v4(192, 175, 48, 0, 24), Public),
    (v4(198, 18, 0, 0, 15), Special("benchmarking")),
    (v4(198, 51, 100, 0, 24), Special("documentation")),
    (v4(203, 0, 113, 0, 24), Special("documentation")),
    (v4(224, 0, 0, 0, 4), Special("multicast")),
    (v4(255, 255, 255, 255, 32), Special("broadcast")),
    (v4(240, 0, 0, 0, 4), Special("reserved")),
];

/// IANA IPv6 Special-Purpose Address Registry (RFC 6890 and updates), plus the deprecated
/// site-local and IPv4-compatible blocks and multicast; the first entry that contains an
/// address wins.
const V6_TABLE: &[((u128, u32), Class)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Special("unspecified")),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Special("loopback")),
    (
        v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        Embeds(Embedding::Last32),
    ),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        Special("IPv4-compatible (deprecated)"),
    ),
    (
        v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        Embeds(Embedding::Last32),
    ),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        Special("NAT64 (local use)"),
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        Special("discard-only"),
    ),
    (
        v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64),
        Special("dummy prefix"),
    ),
    // Anycast services, AMT, AS112, ORCHIDv2 and DRIP: globally reachable.
    (v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128), Public),
    (v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128), Public),
    (v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128), Public),
    (v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32), Public),
    (v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48), Public),
    (v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), Public),
    (v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28), Public),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        Embeds(Embedding::Teredo),
    ),
    (
        v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        Special("benchmarking"),
    ),
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        Special("IETF protocol assignment"),
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Special("documentation"),
    ),
    (
        v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        Embeds(Embedding::SixToFour),
    ),
    (v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48), Public),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        Special("documentation"),
    ),
    (
        v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),
        Special("segment routing (SRv6)"),
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        Special("private (unique local)"),
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Special("link-local")),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        Special("site-local (deprecated)"),
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Special("multicast")),
];

fn contains_v4((prefix, len): (u32, u32), bits: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    bits & mask == prefix & mask
}

fn contains_v6((prefix, len): (u128, u32), bits: u128) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    bits & mask == prefix & mask
}

fn classify_v4(address: Ipv4Addr) -> Class {
    let bits = address.to_bits();
    V4_TABLE
        .iter()
        .find(|(prefix, _)| contains_v4(*prefix, bits))
        .map_or(Public, |(_, class)| *class)
}

fn classify_v6(address: Ipv6Addr) -> Class {
    let bits = address.to_bits();
    let listed = V6_TABLE
        .iter()
        .find(|(prefix, _)| contains_v6(*prefix, bits))
        .map(|(_, class)| *class);
    match listed {
        Some(class) => class,
        // IANA has handed out nothing outside 2000::/3 (global unicast) but the blocks
        // listed above.
        None if bits >> 125 != 0b001 => Special("reserved"),
        None => Public,
    }
}

fn private_v4(address: Ipv4Addr) -> Option<&'static str> {
    match classify_v4(address) {
        Special(kind) => Some(kind),
        Public | Embeds(_) => None,
    }
}

fn private_v6(address: Ipv6Addr) -> Option<&'static str> {
    let bits = address.to_bits();
    let embedded = |shift: u32| Ipv4Addr::from_bits((bits >> shift) as u32);
    match classify_v6(address) {
        Special(kind) => Some(kind),
        Public => None,
        Embeds(Embedding::Last32) => private_v4(embedded(0)),
        Embeds(Embedding::SixToFour) => private_v4(embedded(80)),
        Embeds(Embedding::Teredo) => private_v4(embedded(64)).or_else(|| private_v4(!embedded(0))),
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

    /// One test per registry entry: the addresses just outside it, its first and last, and
    /// what lies between.
    macro_rules! kinds {
        ($($name:ident: [$(($address:literal, $kind:expr)),* $(,)?];)*) => {$(
            #[test]
            fn $name() {
                $(
                    let address: IpAddr = $address.parse().unwrap();
                    assert_eq!(private_kind(address), $kind, "{}", $address);
                )*
            }
        )*};
    }

    kinds! {
        v4_this_network: [("0.0.0.0", Some("unspecified")), ("0.255.255.255", Some("unspecified")), ("1.0.0.0", None)];
        v4_private_10: [("9.255.255.255", None), ("10.0.0.0", Some("private")), ("10.255.255.255", Some("private")), ("11.0.0.0", None)];
        v4_shared_cgnat: [("100.63.255.255", None), ("100.64.0.0", Some("shared (carrier-grade NAT)")), ("100.127.255.255", Some("shared (carrier-grade NAT)")), ("100.128.0.0", None)];
        v4_loopback: [("126.255.255.255", None), ("127.0.0.0", Some("loopback")), ("127.255.255.255", Some("loopback")), ("128.0.0.0", None)];
        v4_link_local: [("169.253.255.255", None), ("169.254.0.0", Some("link-local")), ("169.254.169.254", Some("link-local")), ("169.254.255.255", Some("link-local")), ("169.255.0.0", None)];
        v4_private_172: [("172.15.255.255", None), ("172.16.0.0", Some("private")), ("172.31.255.255", Some("private")), ("172.32.0.0", None)];
        v4_ietf_protocol_assignments: [("191.255.255.255", None), ("192.0.0.0", Some("IETF protocol assignment")), ("192.0.0.8", Some("IETF protocol assignment")), ("192.0.0.170", Some("IETF protocol assignment")), ("192.0.0.255", Some("IETF protocol assignment")), ("192.0.1.0", None)];
        v4_pcp_and_turn_anycast_are_public: [("192.0.0.8", Some("IETF protocol assignment")), ("192.0.0.9", None), ("192.0.0.10", None), ("192.0.0.11", Some("IETF protocol assignment"))];
        v4_documentation_test_net_1: [("192.0.1.255", None), ("192.0.2.0", Some("documentation")), ("192.0.2.255", Some("documentation")), ("192.0.3.0", None)];
        v4_as112_and_amt_are_public: [("192.31.195.255", None), ("192.31.196.0", None), ("192.31.196.255", None), ("192.52.193.0", None), ("192.52.193.255", None)];
        v4_6to4_relay_anycast: [("192.88.98.255", None), ("192.88.99.0", Some("6to4 relay anycast (deprecated)")), ("192.88.99.255", Some("6to4 relay anycast (deprecated)")), ("192.88.100.0", None)];
        v4_private_192_168: [("192.167.255.255", None), ("192.168.0.0", Some("private")), ("192.168.255.255", Some("private")), ("192.169.0.0", None)];
        v4_as112_direct_delegation_is_public: [("192.175.48.0", None), ("192.175.48.255", None)];
        v4_benchmarking: [("198.17.255.255", None), ("198.18.0.0", Some("benchmarking")), ("198.19.255.255", Some("benchmarking")), ("198.20.0.0", None)];
        v4_documentation_test_net_2: [("198.51.99.255", None), ("198.51.100.0", Some("documentation")), ("198.51.100.255", Some("documentation")), ("198.51.101.0", None)];
        v4_documentation_test_net_3: [("203.0.112.255", None), ("203.0.113.0", Some("documentation")), ("203.0.113.255", Some("documentation")), ("203.0.114.0", None)];
        v4_multicast: [("223.255.255.255", None), ("224.0.0.0", Some("multicast")), ("239.255.255.255", Some("multicast"))];
        v4_reserved_and_broadcast: [("240.0.0.0", Some("reserved")), ("255.255.255.254", Some("reserved")), ("255.255.255.255", Some("broadcast"))];
        v4_public: [("8.8.8.8", None), ("93.184.216.34", None), ("1.1.1.1", None)];
        v6_unspecified_and_loopback: [("::", Some("unspecified")), ("::1", Some("loopback")), ("::2", Some("IPv4-compatible (deprecated)"))];
        v6_ipv4_mapped: [("::ffff:127.0.0.1", Some("loopback")), ("::ffff:10.0.0.1", Some("private")), ("::ffff:169.254.169.254", Some("link-local")), ("::ffff:8.8.8.8", None), ("::fffe:ffff:ffff", Some("reserved")), ("::1:0:0:0", Some("reserved"))];
        v6_ipv4_compatible: [("::127.0.0.1", Some("IPv4-compatible (deprecated)")), ("::8.8.8.8", Some("IPv4-compatible (deprecated)")), ("::ffff:ffff", Some("IPv4-compatible (deprecated)")), ("::1:0:0", Some("reserved"))];
        v6_nat64_well_known: [("64:ff9b::127.0.0.1", Some("loopback")), ("64:ff9b::10.1.2.3", Some("private")), ("64:ff9b::192.168.0.1", Some("private")), ("64:ff9b::169.254.169.254", Some("link-local")), ("64:ff9b::8.8.8.8", None), ("64:ff9b::1:0:0", Some("reserved")), ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved"))];
        v6_nat64_local_use: [("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", Some("reserved")), ("64:ff9b:1::", Some("NAT64 (local use)")), ("64:ff9b:1::8.8.8.8", Some("NAT64 (local use)")), ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some("NAT64 (local use)")), ("64:ff9b:2::", Some("reserved"))];
        v6_discard_only: [("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")), ("100::", Some("discard-only")), ("100::ffff:ffff:ffff:ffff", Some("discard-only")), ("100:0:0:1::", Some("dummy prefix")), ("100:0:0:1:ffff:ffff:ffff:ffff", Some("dummy prefix")), ("100:0:0:2::", Some("reserved"))];
        v6_teredo: [("2001::", Some("unspecified")), ("2001:0:808:808::f7f7:f7f7", None), ("2001:0:7f00:1::f7f7:f7f7", Some("loopback")), ("2001:0:808:808::80ff:fffe", Some("loopback")), ("2001:0:808:808::f5ff:fffe", Some("private")), ("2001:0:ffff:ffff:ffff:ffff:f7f7:f7f7", Some("broadcast")), ("2001:1::", Some("IETF protocol assignment"))];
        v6_ietf_protocol_assignments: [("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2001:1::", Some("IETF protocol assignment")), ("2001:1::4", Some("IETF protocol assignment")), ("2001:10::1", Some("IETF protocol assignment")), ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Some("IETF protocol assignment")), ("2001:200::", None)];
        v6_anycast_amt_as112_orchid_drip_are_public: [("2001:1::1", None), ("2001:1::2", None), ("2001:1::3", None), ("2001:3::", None), ("2001:3:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2001:4:112::", None), ("2001:4:112:ffff:ffff:ffff:ffff:ffff", None), ("2001:4:113::", Some("IETF protocol assignment")), ("2001:20::", None), ("2001:2f:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2001:30::", None), ("2001:3f:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2001:40::", Some("IETF protocol assignment")), ("2620:4f:8000::", None), ("2620:4f:8000:ffff:ffff:ffff:ffff:ffff", None)];
        v6_benchmarking: [("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", Some("IETF protocol assignment")), ("2001:2::", Some("benchmarking")), ("2001:2:0:ffff:ffff:ffff:ffff:ffff", Some("benchmarking")), ("2001:2:1::", Some("IETF protocol assignment"))];
        v6_documentation: [("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None), ("2001:db8::", Some("documentation")), ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Some("documentation")), ("2001:db9::", None), ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("3fff::", Some("documentation")), ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Some("documentation")), ("3fff:1000::", None)];
        v6_6to4: [("2001:ffff::", None), ("2002:808:808::1", None), ("2002:7f00:1::1", Some("loopback")), ("2002:a00:1::", Some("private")), ("2002:c0a8:101:1::1", Some("private")), ("2002:a9fe:a9fe::", Some("link-local")), ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("broadcast")), ("2003::", None)];
        v6_segment_routing: [("5eff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")), ("5f00::", Some("segment routing (SRv6)")), ("5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("segment routing (SRv6)")), ("5f01::", Some("reserved"))];
        v6_unique_local: [("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")), ("fc00::", Some("private (unique local)")), ("fd00::1", Some("private (unique local)")), ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("private (unique local)")), ("fe00::", Some("reserved"))];
        v6_link_local: [("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")), ("fe80::", Some("link-local")), ("fe80::1", Some("link-local")), ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("link-local"))];
        v6_site_local: [("fec0::", Some("site-local (deprecated)")), ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("site-local (deprecated)")), ("ff00::", Some("multicast"))];
        v6_multicast: [("fe00::", Some("reserved")), ("ff00::", Some("multicast")), ("ff02::1", Some("multicast")), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("multicast"))];
        v6_outside_global_unicast_is_reserved: [("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some("reserved")), ("2000::", None), ("2606:4700::1111", None), ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None), ("4000::", Some("reserved")), ("8000::", Some("reserved"))];
    }

    #[test]
    fn no_entry_is_hidden_by_an_earlier_one() {
        // An entry is dead when an earlier one covers all of it: as broad or broader, and
        // containing its prefix.
        for (index, (prefix, _)) in V4_TABLE.iter().enumerate() {
            let hidden = V4_TABLE[..index]
                .iter()
                .any(|(p, _)| p.1 <= prefix.1 && contains_v4(*p, prefix.0));
            assert!(!hidden, "{}/{}", Ipv4Addr::from_bits(prefix.0), prefix.1);
        }
        for (index, (prefix, _)) in V6_TABLE.iter().enumerate() {
            let hidden = V6_TABLE[..index]
                .iter()
                .any(|(p, _)| p.1 <= prefix.1 && contains_v6(*p, prefix.0));
            assert!(!hidden, "{}/{}", Ipv6Addr::from_bits(prefix.0), prefix.1);
        }
    }
}
