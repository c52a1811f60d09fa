//! Admission of client connections: a limit per client address and in total, and the signal
//! that tells open sessions the server is stopping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

pub struct Gate {
    per_address: usize,
    total_limit: usize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    total: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server has as many connections as it takes.
    Busy,
    /// This client address has as many as it may have.
    TooManyFromAddress,
}

/// A connection's place; dropping it frees the place.
pub struct Pass {
    gate: Arc<Gate>,
    ip: IpAddr,
    _total: OwnedSemaphorePermit,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut map = self.gate.by_address.lock().expect("connection map");
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub fn new(per_address: usize, total: usize) -> Arc<Gate> {
        Arc::new(Gate {
            per_address,
            total_limit: total,
            by_address: Mutex::new(HashMap::new()),
            total: Arc::new(Semaphore::new(total)),
            stopping: watch::channel(false).0,
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pass, Refusal> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)?;
        let mut map = self.by_address.lock().expect("connection map");
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        Ok(Pass {
            gate: self.clone(),
            ip,
            _total: total,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total_limit - self.total.available_permits()
    }

    /// A receiver that becomes true when the server is stopping.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Tells sessions to stop and waits up to `grace` for them to close. Sessions leave between
    /// commands, so work in progress (a message being committed) finishes first. Returns how
    /// many were still open when the grace period ended.
    pub async fn shut_down(&self, grace: Duration) -> usize {
        self.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let open = self.open();
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Accepts connections on `socket` and hands each to `serve` (which spawns its session) until
/// `gate` says the server is stopping. Accept errors (out of file descriptors and the like)
/// back off briefly instead of spinning.
pub async fn accept_until_stopped<F>(
    socket: tokio::net::TcpListener,
    gate: &Gate,
    listener: &'static str,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpStream, std::net::SocketAddr),
{
    let mut stopping = gate.stopping();
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = stopping.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                serve(tcp, peer);
            }
            Err(e) => {
                tracing::warn!(listener, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_in_total() {
        let gate = Gate::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = gate.admit(a).unwrap();
        let _p2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::TooManyFromAddress));
        let _p3 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Refusal::Busy));
        assert_eq!(gate.open(), 3);
        drop(p1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(a).is_ok());
    }
}
