//! Where mail for a domain goes: a configured route or smarthost, or the domain's MX hosts
//! (RFC 5321 §5.1), each with its addresses, in the order to try them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use trimaran_core::config::{Outbound, Relay};

/// One host to try, with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// RFC 3463 5.1.2: the domain does not exist.
    #[error("5.1.2 domain {0} does not exist")]
    NoDomain(String),
    /// RFC 7505 §3: the domain says it takes no mail.
    #[error("5.1.10 domain {0} does not accept mail (null MX)")]
    NullMx(String),
    /// Nothing to connect to: no host has an address.
    #[error("5.4.4 no address found for {0}")]
    NoAddress(String),
    /// DNS failed for now (RFC 5321 §5.1: try again later).
    #[error("4.4.3 DNS lookup for {0} failed: {1}")]
    Dns(String, String),
}

impl RouteError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RouteError::Dns(..))
    }
}

/// The destination of a domain: what pooled connections and concurrency limits are keyed
/// on, so that every domain relayed through one smarthost shares its connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination {
    Relay(String, u16),
    Mx(String),
}

pub struct Router {
    smarthost: Option<Relay>,
    routes: HashMap<String, Relay>,
    mx_port: u16,
    /// None when the system has no usable DNS configuration: the server still runs (a
    /// receive-only node, or a smarthost given by address), and lookups fail temporarily.
    resolver: Option<TokioResolver>,
}

impl Router {
    pub fn new(config: &Outbound) -> Result<Router, String> {
        let parse = |s: &String| s.parse::<Relay>();
        let smarthost = config.smarthost.as_ref().map(parse).transpose()?;
        let routes = config
            .routes
            .iter()
            .map(|(d, r)| Ok((d.to_ascii_lowercase(), parse(r)?)))
            .collect::<Result<_, String>>()?;
        let resolver = if config.dns_servers.is_empty() {
            match TokioResolver::builder_tokio().and_then(|b| b.build()) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "no usable system DNS configuration; outbound mail waits for MX lookups until outbound.dns_servers is set");
                    None
                }
            }
        } else {
            let servers = config
                .dns_servers
                .iter()
                .map(|s| name_server(s))
                .collect::<Result<Vec<_>, _>>()?;
            let resolver = TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
            .build()
            .map_err(|e| format!("starting the DNS resolver: {e}"))?;
            Some(resolver)
        };
        Ok(Router {
            smarthost,
            routes,
            mx_port: config.port,
            resolver,
        })
    }

    pub fn destination(&self, domain: &str) -> Destination {
        let domain = domain.to_ascii_lowercase();
        match self.routes.get(&domain).or(self.smarthost.as_ref()) {
            Some(r) => Destination::Relay(r.host.clone(), r.port),
            None => Destination::Mx(domain),
        }
    }

    fn resolver(&self) -> Result<&TokioResolver, RouteError> {
        self.resolver.as_ref().ok_or_else(|| {
            RouteError::Dns("any domain".into(), "no DNS resolver configured".into())
        })
    }

    /// The hosts of a destination in the order to try them.
    pub async fn hosts(&self, dest: &Destination) -> Result<Vec<Host>, RouteError> {
        match dest {
            Destination::Relay(host, port) => {
                // A relay is used as named: no MX lookup (RFC 5321 §5.1 applies to domains).
                let addrs = self.addresses(host, *port).await?;
                Ok(vec![Host {
                    name: host.clone(),
                    addrs,
                }])
            }
            Destination::Mx(domain) => self.mx_hosts(domain).await,
        }
    }

    async fn mx_hosts(&self, domain: &str) -> Result<Vec<Host>, RouteError> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        let resolver = self.resolver()?;
        let names = match resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut mx: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                // RFC 7505 §3: a single MX of "." means no mail at all.
                if mx.len() == 1 && (mx[0].1 == "." || mx[0].1.is_empty()) {
                    return Err(RouteError::NullMx(domain.to_string()));
                }
                // RFC 5321 §5.1: lowest preference first; equal ones in random order (so
                // every process does not pile onto the same one).
                let salt = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                mx.sort_by_cached_key(|(pref, name)| {
                    let mut h = blake3::Hasher::new();
                    h.update(&salt.to_le_bytes());
                    h.update(name.as_bytes());
                    (*pref, *h.finalize().as_bytes())
                });
                mx.into_iter().map(|(_, name)| name).collect()
            }
            Err(e) if e.is_nx_domain() => return Err(RouteError::NoDomain(domain.to_string())),
            // RFC 5321 §5.1: no MX records: the domain itself is the implicit MX.
            Err(e) if e.is_no_records_found() => vec![fqdn.clone()],
            Err(e) => return Err(RouteError::Dns(domain.to_string(), e.to_string())),
        };
        let mut hosts = Vec::new();
        let mut temporary = None;
        for name in names {
            match self.addresses(&name, self.mx_port).await {
                Ok(addrs) => hosts.push(Host {
                    name: name.trim_end_matches('.').to_string(),
                    addrs,
                }),
                Err(e @ RouteError::Dns(..)) => temporary = Some(e),
                Err(_) => {}
            }
        }
        match (hosts.is_empty(), temporary) {
            (false, _) => Ok(hosts),
            (true, Some(e)) => Err(e),
            (true, None) => Err(RouteError::NoAddress(domain.to_string())),
        }
    }

    /// A and AAAA addresses of a host (RFC 5321 §5.1), or the literal address it is.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, RouteError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver()?.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => {
                let addrs: Vec<SocketAddr> =
                    ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    Err(RouteError::NoAddress(host.to_string()))
                } else {
                    Ok(addrs)
                }
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => {
                Err(RouteError::NoAddress(host.to_string()))
            }
            Err(e) => Err(RouteError::Dns(host.to_string(), e.to_string())),
        }
    }
}

/// `IP` or `IP:PORT` (`[v6]:PORT`) of a DNS server.
fn name_server(s: &str) -> Result<NameServerConfig, String> {
    let (ip, port) = match s.parse::<SocketAddr>() {
        Ok(sa) => (sa.ip(), sa.port()),
        Err(_) => (
            s.parse::<IpAddr>()
                .map_err(|_| format!("outbound.dns_servers: {s:?} is not IP or IP:PORT"))?,
            53,
        ),
    };
    let mut udp = ConnectionConfig::udp();
    udp.port = port;
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = port;
    let mut server = NameServerConfig::udp_and_tcp(ip);
    server.connections = vec![udp, tcp];
    Ok(server)
}
