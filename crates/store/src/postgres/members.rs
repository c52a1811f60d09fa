//! Each member of a replicated PostgreSQL as seen from here, for `trimaran cluster status`:
//! every host of the store URL is asked on its own, so a member that is down, a standby, or a
//! second primary (split brain) shows as such instead of being skipped by the multi-host
//! connection the server itself uses.

use std::time::Duration;

use tokio_postgres::config::{Host, TargetSessionAttrs};
use tokio_postgres::NoTls;

use crate::error::{Result, StoreError};

/// How long to wait for one member; a cut-off member must not hold up the report.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Member {
    /// `host:port` as written in the store URL.
    pub address: String,
    pub state: MemberState,
}

#[derive(Debug, Clone)]
pub enum MemberState {
    Down(String),
    Primary {
        wal_lsn: String,
        synchronous_standby_names: String,
        replicas: Vec<Replica>,
    },
    Standby {
        replay_lsn: Option<String>,
        /// Seconds since the last replayed transaction committed on the primary; with no
        /// writes this grows although nothing is missing, so it is shown, not judged.
        replay_age_s: Option<f64>,
        receiving: bool,
    },
}

/// A standby as its primary sees it (`pg_stat_replication`). Without the `pg_monitor` role
/// the details are hidden and come back as None.
#[derive(Debug, Clone)]
pub struct Replica {
    pub name: String,
    pub client_addr: Option<String>,
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub lag_bytes: Option<i64>,
    pub replay_lag_s: Option<f64>,
}

/// Asks every host of `url` what it is.
pub async fn probe_members(url: &str) -> Result<Vec<Member>> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    // All members are asked at once, so that the slowest one bounds the whole report.
    let mut probes = tokio::task::JoinSet::new();
    for (i, host) in hosts.iter().enumerate() {
        // libpq's rule: one port for all hosts, or one per host.
        let port = match ports.len() {
            0 => 5432,
            1 => ports[0],
            _ => ports.get(i).copied().unwrap_or(5432),
        };
        // A fresh configuration: Config::host adds to the list of hosts, it does not replace it.
        let mut single = tokio_postgres::Config::new();
        if let Some(user) = config.get_user() {
            single.user(user);
        }
        if let Some(password) = config.get_password() {
            single.password(password);
        }
        if let Some(db) = config.get_dbname() {
            single.dbname(db);
        }
        single.application_name("trimaran cluster status");
        let shown = match host {
            Host::Tcp(name) => {
                single.host(name);
                name.clone()
            }
            #[cfg(unix)]
            Host::Unix(path) => {
                single.host_path(path);
                path.display().to_string()
            }
        };
        probes.spawn(async move {
            let address = format!("{shown}:{port}");
            let state = match tokio::time::timeout(PROBE_TIMEOUT, probe(single, port)).await {
                Ok(Ok(state)) => state,
                Ok(Err(e)) => MemberState::Down(e),
                Err(_) => {
                    MemberState::Down(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
                }
            };
            (i, Member { address, state })
        });
    }
    let mut members: Vec<(usize, Member)> = probes.join_all().await;
    members.sort_by_key(|(i, _)| *i);
    Ok(members.into_iter().map(|(_, m)| m).collect())
}

async fn probe(
    mut config: tokio_postgres::Config,
    port: u16,
) -> std::result::Result<MemberState, String> {
    config
        .port(port)
        .target_session_attrs(TargetSessionAttrs::Any)
        .connect_timeout(PROBE_TIMEOUT);
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        // "error connecting to server" alone does not say refused from timed out.
        match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    })?;
    let driver = tokio::spawn(connection);
    let result = async {
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(),
                        CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text
                             ELSE pg_current_wal_lsn()::text END,
                        current_setting('synchronous_standby_names'),
                        extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,
                        (SELECT count(*) FROM pg_stat_wal_receiver)",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
        let standby: bool = row.get(0);
        if standby {
            return Ok(MemberState::Standby {
                replay_lsn: row.get(1),
                replay_age_s: row.get(3),
                receiving: row.get::<_, i64>(4) > 0,
            });
        }
        let replicas = client
            .query(
                "SELECT application_name, client_addr::text, state, sync_state,
                        pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
                        extract(epoch FROM replay_lag)::float8
                   FROM pg_stat_replication ORDER BY application_name",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .map(|r| Replica {
                name: r.get(0),
                client_addr: r.get(1),
                state: r.get(2),
                sync_state: r.get(3),
                lag_bytes: r.get(4),
                replay_lag_s: r.get(5),
            })
            .collect();
        Ok(MemberState::Primary {
            wal_lsn: row.get::<_, Option<String>>(1).unwrap_or_default(),
            synchronous_standby_names: row.get(2),
            replicas,
        })
    }
    .await;
    driver.abort();
    result
}
