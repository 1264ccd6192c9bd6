//! Server-side request forgery guard: an endpoint URL may not make keyledger
//! talk to itself, its network or a cloud's metadata service. The host is
//! resolved and every address checked when the endpoint is written, and
//! again at each delivery by the client's resolver ([`GuardedResolver`]),
//! which hands the connector only the addresses it checked: a name that
//! resolves to a public address at creation and to 127.0.0.1 later (DNS
//! rebinding) is refused then too.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ipnet::{Ipv4Net, Ipv6Net};

/// How long resolving an endpoint's host may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the host does not resolve")]
    Unresolved,
    #[error("the host resolves to a private, loopback or reserved address ({0})")]
    Private(IpAddr),
}

/// Whether keyledger may connect to `ip` when private addresses are not allowed.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const BLOCKED: &[&str] = &[
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // RFC 1918
        "100.64.0.0/10",   // carrier-grade NAT (RFC 6598)
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",   // RFC 1918
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.168.0.0/16",  // RFC 1918
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, broadcast
    ];
    !BLOCKED
        .iter()
        .any(|net| net.parse::<Ipv4Net>().is_ok_and(|net| net.contains(&ip)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    const BLOCKED: &[&str] = &[
        "::/128",       // unspecified
        "::1/128",      // loopback
        "::/96",        // IPv4-compatible (deprecated)
        "64:ff9b::/96", // NAT64: would reach an IPv4 address unchecked
        "64:ff9b:1::/48",
        "100::/64",      // discard
        "2001:db8::/32", // documentation
        "fc00::/7",      // unique local (ULA), incl. fd00:ec2::254 (metadata)
        "fe80::/10",     // link-local
        "fec0::/10",     // site-local (deprecated)
        "ff00::/8",      // multicast
    ];
    !BLOCKED
        .iter()
        .any(|net| net.parse::<Ipv6Net>().is_ok_and(|net| net.contains(&ip)))
}

/// Resolve `host` (a name or an address literal) and check every address;
/// all must be public unless `allow_private`. The checked addresses.
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refused> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| Refused::Unresolved)?
            .map_err(|_| Refused::Unresolved)?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refused::Unresolved);
    }
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(Refused::Private(bad.ip()));
    }
    Ok(addrs)
}

/// The delivery client's resolver: [`resolve`], so the connection goes only
/// to an address that was checked in this very lookup.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = resolve(name.as_str(), 0, allow_private).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} is refused");
        }
        for ip in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is allowed");
        }
    }

    #[tokio::test]
    async fn literals_and_names_are_checked() {
        assert!(matches!(
            resolve("127.0.0.1", 80, false).await,
            Err(Refused::Private(_))
        ));
        assert!(matches!(
            resolve("[::1]", 80, false).await,
            Err(Refused::Private(_))
        ));
        assert!(matches!(
            resolve("localhost", 80, false).await,
            Err(Refused::Private(_))
        ));
        assert!(resolve("127.0.0.1", 80, true).await.is_ok());
    }
}
