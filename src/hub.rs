//! The hub: one handle on the Socket.IO server, whatever adapter it runs on.
//!
//! socketioxide types its server by adapter (`SocketIo<LocalAdapter>` for one
//! instance, `SocketIo<ClusterAdapter>` with Redis). Everything above the
//! cluster (the application's drain, the HTTP routes, a server API) talks to a
//! `dyn Hub` instead, so the adapter choice is made once, in `app`, and is
//! invisible elsewhere. The listing helpers are shared with the realtime
//! handlers, so a client's `rooms` and a server-side listing are bounded alike.

use std::{future::Future, pin::Pin, sync::Arc};

use serde::Serialize;
use socketioxide::{SocketIo, adapter::Adapter, operators::BroadcastOperators};

use crate::{
    cluster::{Cluster, ClusterStats},
    realtime::args::Args,
};

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most rooms a listing names (its count is always exact).
pub const MAX_LISTED_ROOMS: usize = 1000;

/// Most socket ids a listing names (its count is always exact).
pub const MAX_LISTED_SOCKETS: usize = 1000;

/// Which sockets an operation applies to: everyone, or the members of some
/// rooms, minus the members of others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Sockets in any of these rooms; empty means every socket.
    pub rooms: Vec<String>,
    /// Sockets in any of these rooms are left out.
    pub except: Vec<String>,
}

/// Why a hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The adapter could not complete it (e.g. the cluster did not answer).
    #[error("adapter error: {0}")]
    Adapter(String),
    /// The payload could not be encoded.
    #[error("cannot encode the payload: {0}")]
    Encode(String),
}

/// A bounded listing: the exact count and at most a fixed number of names, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// How many there are in all.
    pub count: usize,
    /// The first names, sorted; at most the listing's bound.
    pub names: Vec<String>,
}

impl Listing {
    /// Sorts, removes duplicates, counts, and keeps the first `bound`.
    pub fn bounded(mut names: Vec<String>, bound: usize) -> Self {
        names.sort_unstable();
        names.dedup();
        let count = names.len();
        names.truncate(bound);
        Self { count, names }
    }
}

/// What `/readyz` reports about the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterStatus {
    /// `memory` or `redis`.
    pub name: &'static str,
    /// `Err(reason)` while the adapter cannot reach the rest of the cluster.
    pub link: Result<(), String>,
    /// Cluster-wide totals, when the adapter keeps them.
    pub cluster: Option<ClusterStats>,
}

/// The Socket.IO server as the rest of ecos sees it.
pub trait Hub: Send + Sync {
    /// Emits `event` with `args` (each a separate Socket.IO argument) to the selected sockets, cluster-wide.
    fn emit<'a>(
        &'a self,
        selector: &'a Selector,
        event: &'a str,
        args: &'a Args,
    ) -> BoxFuture<'a, Result<(), HubError>>;
    /// Makes the selected sockets, cluster-wide, join `room`.
    fn join<'a>(
        &'a self,
        selector: &'a Selector,
        room: &'a str,
    ) -> BoxFuture<'a, Result<(), HubError>>;
    /// Makes the selected sockets, cluster-wide, leave `room`.
    fn leave<'a>(
        &'a self,
        selector: &'a Selector,
        room: &'a str,
    ) -> BoxFuture<'a, Result<(), HubError>>;
    /// Disconnects the selected sockets, cluster-wide.
    fn disconnect<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<(), HubError>>;
    /// Every room of the namespace, cluster-wide.
    fn rooms(&self) -> BoxFuture<'_, Result<Listing, HubError>>;
    /// The ids of the selected sockets, cluster-wide.
    fn sockets<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<Listing, HubError>>;
    /// Sockets connected to this instance.
    fn local_socket_count(&self) -> usize;
    /// The adapter's state, for `/readyz`.
    fn status(&self) -> AdapterStatus;
    /// Closes every session (clients see a transport close and reconnect), then leaves the cluster.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Every room visible through `ops`, plus `extra`, as a bounded listing.
pub async fn list_rooms<A: Adapter>(
    ops: BroadcastOperators<A>,
    extra: impl IntoIterator<Item = String>,
) -> Result<Listing, HubError> {
    let rooms = ops
        .rooms()
        .await
        .map_err(|e| HubError::Adapter(e.to_string()))?;
    let mut names: Vec<String> = rooms.into_iter().map(|r| r.into_owned()).collect();
    names.extend(extra);
    Ok(Listing::bounded(names, MAX_LISTED_ROOMS))
}

/// The ids of the sockets `ops` selects, as a bounded listing.
pub async fn list_sockets<A: Adapter>(ops: BroadcastOperators<A>) -> Result<Listing, HubError> {
    let sockets = ops
        .fetch_sockets()
        .await
        .map_err(|e| HubError::Adapter(e.to_string()))?;
    Ok(Listing::bounded(
        sockets.iter().map(|s| s.data().id.to_string()).collect(),
        MAX_LISTED_SOCKETS,
    ))
}

/// A [`Hub`] over a `SocketIo` with any adapter, on namespace `/`.
pub struct SocketIoHub<A: Adapter> {
    /// The server handle.
    io: SocketIo<A>,
    /// The Redis link, when the adapter is the cluster's.
    cluster: Option<Cluster>,
}

impl<A: Adapter> SocketIoHub<A> {
    /// A hub for `io`; `cluster` is left on close and reports the link's health.
    pub fn new(io: SocketIo<A>, cluster: Option<Cluster>) -> Arc<Self> {
        Arc::new(Self { io, cluster })
    }

    fn select(&self, selector: &Selector) -> BroadcastOperators<A> {
        self.io
            .to(selector.rooms.clone())
            .except(selector.except.clone())
    }
}

fn adapter_error(error: impl std::fmt::Display) -> HubError {
    HubError::Adapter(error.to_string())
}

impl<A: Adapter> Hub for SocketIoHub<A> {
    fn emit<'a>(
        &'a self,
        selector: &'a Selector,
        event: &'a str,
        args: &'a Args,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            let event = event.to_owned();
            self.select(selector)
                .emit(event, args)
                .await
                .map_err(|e| match e {
                    socketioxide::BroadcastError::Serialize(e) => HubError::Encode(e.to_string()),
                    other => adapter_error(other),
                })
        })
    }

    fn join<'a>(
        &'a self,
        selector: &'a Selector,
        room: &'a str,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        let ops = self.select(selector);
        Box::pin(async move { ops.join(room.to_owned()).await.map_err(adapter_error) })
    }

    fn leave<'a>(
        &'a self,
        selector: &'a Selector,
        room: &'a str,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        let ops = self.select(selector);
        Box::pin(async move { ops.leave(room.to_owned()).await.map_err(adapter_error) })
    }

    fn disconnect<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            self.select(selector)
                .disconnect()
                .await
                .map_err(adapter_error)
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Listing, HubError>> {
        Box::pin(list_rooms(self.io.broadcast(), []))
    }

    fn sockets<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<Listing, HubError>> {
        Box::pin(list_sockets(self.select(selector)))
    }

    fn local_socket_count(&self) -> usize {
        self.io.local().sockets().len()
    }

    fn status(&self) -> AdapterStatus {
        match &self.cluster {
            None => AdapterStatus {
                name: "memory",
                link: Ok(()),
                cluster: None,
            },
            Some(cluster) => AdapterStatus {
                name: "redis",
                link: cluster.link(),
                cluster: cluster.stats(),
            },
        }
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.io.close().await;
            if let Some(cluster) = &self.cluster {
                cluster.stop().await;
            }
        })
    }
}
