//! The client's address behind reverse proxies, for per-IP limits. Behind a
//! load balancer every request comes from the balancer: counted by the TCP
//! peer, all clients would share one login limit. `X-Forwarded-For` is
//! believed only as far as it was written by proxies the operator named
//! (anyone can send the header), read from the right: the address the last
//! trusted proxy saw is the client.

use crate::ParseError;
use std::net::IpAddr;

/// A network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7`).
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new("trustedProxies", format!("{raw:?}: {why}"));
        let (addr, prefix) = match raw.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw.trim(), None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IP address or network like 10.0.0.0/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("the prefix is 0 to {max}")))?,
        };
        Ok(Self { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen by an IPv6 socket is an IPv4-mapped address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => same_prefix(
                u128::from(n.to_bits()),
                u128::from(a.to_bits()),
                32,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                same_prefix(n.to_bits(), a.to_bits(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let shift = width - u32::from(prefix);
    // A shift of the whole width (prefix 0) matches everything.
    shift >= width || (a >> shift) == (b >> shift)
}

/// The client's address: the TCP `peer`, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` address not written by one
/// (`forwarded` holds the header's values in order). A value that is not an
/// address stops the walk at the proxy that passed it on.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded: impl IntoIterator<Item = &'a str>,
    trusted: &[Cidr],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        if !is_trusted(client) {
            break;
        }
        match address(hop) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// The client a per-IP limit counts: an IPv4 address, or an IPv6 address's
/// /64 (one subscriber's network: a host chooses any address in it, so
/// counting addresses would give it billions of limits). An IPv4 address
/// written as IPv6 (`::ffff:a.b.c.d`) counts as itself.
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// An `X-Forwarded-For` entry's address; some balancers add the client's
/// port (`203.0.113.9:41234`, `[2001:db8::1]:41234`).
fn address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits_count_ipv6_networks_not_addresses() {
        let key = |s: &str| limit_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.9"), "203.0.113.9");
        assert_eq!(key("::ffff:203.0.113.9"), "203.0.113.9");
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:1:2:3"), key("2001:db8:1:2::1"));
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn networks_parse_and_hold_their_addresses() {
        let n = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(n.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "proxy", "10.0.0.0/x", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_counts_only_behind_trusted_proxies() {
        let trusted = cidrs(&["10.0.0.0/8"]);
        // Straight from a client: its header is its own invention.
        assert_eq!(
            client_ip(ip("203.0.113.9"), ["1.2.3.4"], &trusted),
            ip("203.0.113.9")
        );
        // Through the balancer: the address it saw.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // A client that sent its own header first: the balancer appended
        // the real address, which is the right-most untrusted one.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["1.2.3.4, 203.0.113.9"], &trusted),
            ip("203.0.113.9")
        );
        // Two trusted hops, header values split across lines.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["198.51.100.4", "10.0.0.3"], &trusted),
            ip("198.51.100.4")
        );
        // Garbage stops at the proxy that passed it.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["198.51.100.4, junk"], &trusted),
            ip("10.0.0.2")
        );
        // With the client's port, as some balancers write it.
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["203.0.113.9:41234"], &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["[2001:db8::1]:443"], &trusted),
            ip("2001:db8::1")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(ip("10.0.0.2"), [], &trusted), ip("10.0.0.2"));
        // Nobody trusted: the peer, always.
        assert_eq!(client_ip(ip("10.0.0.2"), ["1.2.3.4"], &[]), ip("10.0.0.2"));
    }

    proptest! {
        #[test]
        fn a_network_holds_exactly_the_addresses_sharing_its_prefix(
            net in any::<u32>(), addr in any::<u32>(), prefix in 0u8..=32,
        ) {
            let c = Cidr::parse(&format!("{}/{prefix}", std::net::Ipv4Addr::from_bits(net))).unwrap();
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            prop_assert_eq!(
                c.contains(IpAddr::V4(std::net::Ipv4Addr::from_bits(addr))),
                net & mask == addr & mask
            );
        }
    }
}
