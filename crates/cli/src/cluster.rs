//! `trimaran cluster status`: is the cluster whole, and is any one site essential?
//!
//! The store members are asked one by one over PostgreSQL (who is primary, which standbys
//! stream, how far behind); the failover quorum is etcd, asked over its JSON gateway (the v3
//! API's HTTP form). DESIGN.md G3 is the yardstick: losing any one site must lose nothing and
//! stop nothing, so everything that would make one site essential is a warning.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use trimaran_core::config::Config;
use trimaran_core::store::postgres::members::{probe_members, Member, MemberState};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Each site's store member and failover-quorum member, and what makes any site essential.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// An etcd client URL of the failover quorum (repeatable) [default: port 2379 on each host
    /// of the store URL]
    #[arg(long, value_name = "URL")]
    etcd: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A standby further behind than this would make a failover to it wait (or lose its place).
const LAG_WARNING_BYTES: i64 = 16 << 20;
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(config: Config, cmd: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status(args) = cmd;
    let url = config.store_url();
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        bail!("cluster status needs a PostgreSQL store (--store postgres://HOST1,HOST2,HOST3/DB)");
    }
    let members = probe_members(&url).await?;
    let hosts: Vec<String> = members
        .iter()
        .map(|m| host_of(&m.address).to_string())
        .collect();
    let etcd_urls = if args.etcd.is_empty() {
        hosts.iter().map(|h| format!("http://{h}:2379")).collect()
    } else {
        args.etcd.clone()
    };
    let quorum = etcd_quorum(&etcd_urls).await;
    let report = assess(&members, &quorum);
    let shown_url = url.parse::<trimaran_core::store::StoreUrl>()?.to_string();
    if args.json {
        let mut out = report;
        out["store"] = json!(shown_url);
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&shown_url, &report);
    }
    Ok(())
}

fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map_or(address, |(h, _)| h)
}

// ---- the failover quorum ------------------------------------------------------------------

struct EtcdMember {
    name: String,
    client_url: String,
    healthy: bool,
    leader: bool,
}

struct Quorum {
    members: Vec<EtcdMember>,
    /// Why the member list could not be read, when it could not.
    error: Option<String>,
}

async fn etcd_quorum(urls: &[String]) -> Quorum {
    // ring, as everywhere else here; the etcd gateway may be HTTPS in production.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            return Quorum {
                members: vec![],
                error: Some(format!("HTTP client: {e}")),
            }
        }
    };
    let mut last_error = None;
    for url in urls {
        let list = post_json(&client, &format!("{url}/v3/cluster/member/list")).await;
        let list = match list {
            Ok(v) => v,
            Err(e) => {
                last_error = Some(format!("{url}: {e}"));
                continue;
            }
        };
        let mut members = Vec::new();
        for m in list["members"].as_array().into_iter().flatten() {
            let client_url = m["clientURLs"][0].as_str().unwrap_or_default().to_string();
            let healthy = get_json(&client, &format!("{client_url}/health"))
                .await
                .map(|h| h["health"] == "true")
                .unwrap_or(false);
            // The leader as this member sees it; compared with its own id.
            let leader = post_json(&client, &format!("{client_url}/v3/maintenance/status"))
                .await
                .map(|s| s["leader"] == s["header"]["member_id"] && s["leader"] != Value::Null)
                .unwrap_or(false);
            members.push(EtcdMember {
                name: m["name"].as_str().unwrap_or("?").to_string(),
                client_url,
                healthy,
                leader,
            });
        }
        return Quorum {
            members,
            error: None,
        };
    }
    Quorum {
        members: vec![],
        error: last_error.or_else(|| Some("no etcd URL".into())),
    }
}

async fn post_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    // The v3 gateway takes its (here empty) request messages as JSON bodies of POSTs.
    json_of(client.post(url).body("{}"), url).await
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    json_of(client.get(url), url).await
}

async fn json_of(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Value> {
    let body = request.send().await?.error_for_status()?.text().await?;
    serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))
}

// ---- the verdict --------------------------------------------------------------------------

fn assess(members: &[Member], quorum: &Quorum) -> Value {
    let mut warnings: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    let store_hosts: Vec<&str> = members.iter().map(|m| host_of(&m.address)).collect();

    let mut sites = Vec::new();
    let mut primaries = 0;
    let mut up = 0;
    for m in members {
        let host = host_of(&m.address);
        let etcd: Vec<&EtcdMember> = quorum
            .members
            .iter()
            .filter(|e| url_host(&e.client_url) == host)
            .collect();
        let store = match &m.state {
            MemberState::Down(why) => json!({"role": "down", "error": why}),
            MemberState::Primary {
                wal_lsn,
                synchronous_standby_names,
                replicas,
            } => {
                primaries += 1;
                up += 1;
                let sync = replicas
                    .iter()
                    .filter(|r| matches!(r.sync_state.as_deref(), Some("sync" | "quorum")))
                    .count();
                let hidden = !replicas.is_empty() && replicas.iter().all(|r| r.state.is_none());
                if hidden {
                    warnings.push(
                        "replication details are hidden: grant pg_monitor to the store's role"
                            .into(),
                    );
                } else if sync == 0 {
                    warnings.push(format!(
                        "the primary {} has no synchronous standby: commits wait (or, without \
                         synchronous_mode_strict, are acknowledged on one site only)",
                        m.address
                    ));
                }
                for r in replicas {
                    if let Some(lag) = r.lag_bytes.filter(|l| *l > LAG_WARNING_BYTES) {
                        warnings.push(format!(
                            "standby {} is {} MiB behind the primary",
                            r.name,
                            lag >> 20
                        ));
                    }
                }
                json!({
                    "role": "primary",
                    "wal_lsn": wal_lsn,
                    "synchronous_standby_names": synchronous_standby_names,
                    "replicas": replicas.iter().map(|r| json!({
                        "name": r.name, "address": r.client_addr, "state": r.state,
                        "sync_state": r.sync_state, "lag_bytes": r.lag_bytes,
                        "replay_lag_s": r.replay_lag_s,
                    })).collect::<Vec<_>>(),
                })
            }
            MemberState::Standby {
                replay_lsn,
                replay_age_s,
                receiving,
            } => {
                up += 1;
                if !receiving {
                    warnings.push(format!(
                        "standby {} receives no WAL from a primary",
                        m.address
                    ));
                }
                json!({"role": "standby", "replay_lsn": replay_lsn,
                       "last_replayed_commit_age_s": replay_age_s, "receiving": receiving})
            }
        };
        sites.push(json!({
            "host": host,
            "store": {"address": m.address, "state": store},
            "etcd": etcd.iter().map(|e| json!({
                "name": e.name, "url": e.client_url, "healthy": e.healthy, "leader": e.leader,
            })).collect::<Vec<_>>(),
        }));
    }

    if primaries == 0 {
        errors.push("no primary: writes wait (up to store_wait) until one is elected".into());
    } else if primaries > 1 {
        errors.push(format!(
            "{primaries} members act as primary: a cut-off site has not stepped down yet, or \
             the cluster is split"
        ));
    }
    if members.len() < 3 {
        warnings.push(format!(
            "the store has {} member(s): losing one site loses the store or its second copy",
            members.len()
        ));
    } else if up < members.len() {
        warnings.push(format!(
            "{} of {} store members are down: every remaining site is essential until they \
             return",
            members.len() - up,
            members.len()
        ));
    }

    // The failover decision is etcd's majority; it must survive the loss of any one site.
    let n = quorum.members.len();
    let majority = n / 2 + 1;
    let healthy = quorum.members.iter().filter(|e| e.healthy).count();
    match &quorum.error {
        Some(e) => errors.push(format!(
            "cannot read the failover quorum (etcd): {e}; pass --etcd URL"
        )),
        None => {
            if n < 3 {
                warnings.push(format!(
                    "the failover quorum has {n} member(s): it cannot lose a site and still decide"
                ));
            }
            if healthy < majority {
                errors.push(format!(
                    "only {healthy} of {n} etcd members are healthy: no failover can be decided"
                ));
            } else if healthy - 1 < majority && n >= 3 {
                warnings.push(format!(
                    "{healthy} of {n} etcd members are healthy: losing one more site stops failover"
                ));
            }
            let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
            for e in &quorum.members {
                *per_host.entry(url_host(&e.client_url)).or_default() += 1;
            }
            for (host, count) in &per_host {
                if n - count < majority {
                    warnings.push(format!(
                        "{host} holds {count} of {n} etcd members: losing that site stops failover"
                    ));
                }
                if !store_hosts.contains(host) {
                    warnings.push(format!(
                        "etcd member at {host} is at no store member's address: check that it is \
                         in a site of its own"
                    ));
                }
            }
        }
    }
    let spans_all_sites = quorum.error.is_none()
        && n >= 3
        && store_hosts
            .iter()
            .all(|h| quorum.members.iter().any(|e| url_host(&e.client_url) == *h));
    json!({
        "sites": sites,
        "quorum": {"members": n, "healthy": healthy, "majority": majority,
                   "spans_all_sites": spans_all_sites},
        "errors": errors,
        "warnings": warnings,
        "healthy": errors.is_empty() && warnings.is_empty(),
    })
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    host_of(authority)
}

fn print_text(store: &str, report: &Value) {
    println!("store {store}");
    for site in report["sites"].as_array().into_iter().flatten() {
        let state = &site["store"]["state"];
        let role = state["role"].as_str().unwrap_or("?");
        let detail = match role {
            "primary" => format!(
                "wal {}  synchronous_standby_names {:?}",
                state["wal_lsn"].as_str().unwrap_or("?"),
                state["synchronous_standby_names"].as_str().unwrap_or("")
            ),
            "standby" => format!(
                "replayed {}  {}",
                state["replay_lsn"].as_str().unwrap_or("?"),
                if state["receiving"] == true {
                    "receiving"
                } else {
                    "NOT receiving"
                }
            ),
            _ => state["error"].as_str().unwrap_or("").to_string(),
        };
        let etcd: Vec<String> = site["etcd"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "etcd {} {}{}",
                    e["name"].as_str().unwrap_or("?"),
                    if e["healthy"] == true { "up" } else { "DOWN" },
                    if e["leader"] == true { " (leader)" } else { "" }
                )
            })
            .collect();
        println!(
            "  {:<22} {:<8} {}  [{}]",
            site["store"]["address"].as_str().unwrap_or("?"),
            role,
            detail,
            if etcd.is_empty() {
                "no etcd member".to_string()
            } else {
                etcd.join(", ")
            }
        );
        for r in state["replicas"].as_array().into_iter().flatten() {
            println!(
                "      standby {} {} {} {} lag {} bytes{}",
                r["name"].as_str().unwrap_or("?"),
                r["address"].as_str().unwrap_or("?"),
                r["state"].as_str().unwrap_or("?"),
                r["sync_state"].as_str().unwrap_or("?"),
                r["lag_bytes"],
                r["replay_lag_s"]
                    .as_f64()
                    .map(|s| format!(", replay lag {s:.3} s"))
                    .unwrap_or_default()
            );
        }
    }
    let q = &report["quorum"];
    println!(
        "failover quorum: {} of {} etcd members healthy (majority {}), {}",
        q["healthy"],
        q["members"],
        q["majority"],
        if q["spans_all_sites"] == true {
            "spread over every store site"
        } else {
            "NOT spread over every store site"
        }
    );
    for e in report["errors"].as_array().into_iter().flatten() {
        println!("ERROR: {}", e.as_str().unwrap_or(""));
    }
    for w in report["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", w.as_str().unwrap_or(""));
    }
    if report["healthy"] == true {
        println!("healthy: any one site can be lost");
    }
}
