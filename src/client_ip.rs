//! Who the client is, for rate limits and connection caps: the TCP peer, or,
//! when the peer is one of the `TRUSTED_PROXIES` (a load balancer), the
//! rightmost `X-Forwarded-For` address that is not a trusted proxy. Entries
//! to its left were written by the client itself and prove nothing.
use std::{net::IpAddr, str::FromStr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client's address, as [`TrustedProxies::client`] resolves it; what
/// rate limits count against.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The proxies whose `X-Forwarded-For` is believed: IPs or CIDRs.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of IPs (`10.0.0.7`) or CIDRs (`10.0.0.0/8`);
    /// empty for none.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect::<Vec<_>>();
        for entry in forwarded.iter().rev().flat_map(|v| v.rsplit(',')) {
            let Some(ip) = parse_entry(entry) else {
                // A proxy we trust wrote something we cannot read: the
                // last address we could is the best we know.
                return client;
            };
            if !self.contains(ip) {
                return ip;
            }
            client = ip;
        }
        client
    }
}

/// An `X-Forwarded-For` entry: an IP, possibly with a port (`1.2.3.4:5`,
/// `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// IPv4 addresses mapped into IPv6 (`::ffff:1.2.3.4`, as a dual-stack
/// socket reports them) are the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_forward() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let spoofed = headers(&["1.1.1.1"]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &spoofed), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.1".parse().unwrap();
        // The client claims 1.1.1.1; the balancer appended its real address.
        let forwarded = headers(&["1.1.1.1, 198.51.100.7", "192.168.1.1"]);
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &forwarded),
            ip("198.51.100.7")
        );
        let with_port = headers(&["[2001:db8::1]:443", "198.51.100.8:5000"]);
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &with_port),
            ip("198.51.100.8")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        let mapped = ip("::ffff:10.0.0.3");
        assert_eq!(
            trusted.client(mapped, &headers(&["198.51.100.9"])),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("balancer".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().is_ok());
    }
}
