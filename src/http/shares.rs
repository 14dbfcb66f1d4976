//! Each client address's share of the request bytes held in flight. The global bound
//! (`http.max_in_flight_bytes`) keeps memory bounded; this one keeps one client (300 slow
//! uploads from one address, say) from taking all of it: past its share
//! (`http.client_share_percent`), that client gets 503 while others are still served.
//! Clients behind one address (a NAT, a gateway) share it: 100 % turns the share off.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Bytes held by each client address.
#[derive(Debug)]
pub struct ClientShares {
    limit: u64,
    held: Mutex<HashMap<IpAddr, u64>>,
}

impl ClientShares {
    /// Shares of at most `limit` bytes per address.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: Mutex::default(),
        }
    }

    /// Reserves `bytes` for `client` while the returned guard lives; `None` when the client
    /// already holds its share. A request of more than the whole share is taken while the
    /// client holds nothing else.
    pub fn reserve(self: &Arc<Self>, client: IpAddr, bytes: u64) -> Option<ClientHold> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let now = held.get(&client).copied().unwrap_or(0);
        if now > 0 && now + bytes > self.limit {
            return None;
        }
        held.insert(client, now + bytes);
        Some(ClientHold {
            shares: Arc::clone(self),
            client,
            bytes,
        })
    }
}

/// A client's reservation; given back when dropped.
#[derive(Debug)]
pub struct ClientHold {
    shares: Arc<ClientShares>,
    client: IpAddr,
    bytes: u64,
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(now) = held.get_mut(&self.client) {
            *now = now.saturating_sub(self.bytes);
            if *now == 0 {
                held.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_share_waits_while_others_are_served_and_room_comes_back() {
        let shares = Arc::new(ClientShares::new(100));
        let (one, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = shares.reserve(one, 60).unwrap();
        assert!(shares.reserve(one, 60).is_none(), "past its share");
        let _second = shares.reserve(other, 60).unwrap();
        drop(first);
        let _again = shares.reserve(one, 60).unwrap();
        // More than the whole share is taken when the client holds nothing else.
        let _large = shares.reserve("10.0.0.3".parse().unwrap(), 500).unwrap();
        assert_eq!(shares.held.lock().unwrap().len(), 3);
    }
}
