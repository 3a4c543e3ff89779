//! Who the client is: the peer address, or, behind trusted proxies, the address they
//! report in X-Forwarded-For.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

use crate::config::{ConfigError, List};

/// The TLS client certificate (DER) of a connection that presented one: set per
/// connection by the TLS listener, read by renewal.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub Vec<u8>);

/// Set on every connection of the TLS listener: EST answers only over TLS (RFC 7030
/// §3.3).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

#[derive(Debug, Default, Clone)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses (`10.0.0.7`) or blocks (`10.0.0.0/8`).
    pub fn parse(list: &List) -> Result<Self, ConfigError> {
        list.0
            .iter()
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::key(
                            "server.trusted_proxies",
                            format!("{entry:?} is not an address or CIDR block"),
                        )
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. X-Forwarded-For is read only when the peer is a trusted
    /// proxy, from the right (the entry the nearest proxy added) to the left: trusted
    /// proxies are passed over, and the first address that is not one is the client.
    /// Ports are stripped (`1.2.3.4:5678`, `[2001:db8::1]:443`). An entry that is no
    /// address at all (`unknown`, garbage) ends the walk: nothing to its left can be
    /// believed, so the last trusted hop stands for the client.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        let entries: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .map(|v| v.to_str().unwrap_or(""))
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_forwarded(entry) else {
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// One X-Forwarded-For entry: an address, with or without a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        socket.ip()
    } else {
        // `[2001:db8::1]` without a port.
        entry
            .strip_prefix('[')
            .and_then(|e| e.strip_suffix(']'))?
            .parse::<IpAddr>()
            .ok()?
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&List(list.iter().map(|s| s.to_string()).collect())).unwrap()
    }

    fn request(peer: &str, xff: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(format!("{peer}:4000").parse().unwrap());
        if let Some(xff) = xff {
            req = req.insert_header(("x-forwarded-for", xff));
        }
        req.to_http_request()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.1"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            p.client_ip(&request("203.0.113.9", Some("1.2.3.4"))),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            p.client_ip(&request("10.1.2.3", Some("1.2.3.4"))),
            Some(ip("1.2.3.4"))
        );
        // A client cannot hide behind an address it made up: the rightmost untrusted wins.
        assert_eq!(
            p.client_ip(&request("10.1.2.3", Some("6.6.6.6, 1.2.3.4, 192.168.1.1"))),
            Some(ip("1.2.3.4"))
        );
        assert_eq!(
            p.client_ip(&request("10.1.2.3", None)),
            Some(ip("10.1.2.3"))
        );
        assert!(TrustedProxies::parse(&List(vec!["nope".into()])).is_err());
    }

    #[test]
    fn ports_are_stripped_and_garbage_stops_the_walk() {
        let p = proxies(&["10.0.0.0/8"]);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let cases = [
            ("6.6.6.6, 1.2.3.4:5678", "1.2.3.4"),
            ("6.6.6.6, [2001:db8::1]:443", "2001:db8::1"),
            ("6.6.6.6, [2001:db8::2]", "2001:db8::2"),
            // The spoofed leftmost entry is never reached past something unreadable.
            ("6.6.6.6, unknown", "10.1.2.3"),
            ("6.6.6.6, 1.2.3.4:x", "10.1.2.3"),
            ("6.6.6.6, garbage, 10.9.9.9", "10.9.9.9"),
            ("6.6.6.6, 1.2.3.4, 10.9.9.9:80", "1.2.3.4"),
        ];
        for (xff, client) in cases {
            assert_eq!(
                p.client_ip(&request("10.1.2.3", Some(xff))),
                ip(client),
                "{xff}"
            );
        }
    }
}
