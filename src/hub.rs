//! The hub: one handle on the Socket.IO server, whatever adapter it runs on.
//!
//! socketioxide types its server by adapter (`SocketIo<LocalAdapter>` for one
//! instance, `SocketIo<ClusterAdapter>` with Redis). Everything above the
//! cluster (the application's drain, the HTTP routes, a server API) talks to a
//! `dyn Hub` instead, so the adapter choice is made once, in `app`, and is
//! invisible elsewhere. The listing helpers are shared with the realtime
//! handlers, so a client's `rooms` and a server-side listing are bounded alike.

use std::{collections::HashSet, future::Future, pin::Pin, str::FromStr, sync::Arc};

use serde::Serialize;
use socketioxide::{
    BroadcastError, SocketIo,
    adapter::Adapter,
    extract::SocketRef,
    operators::BroadcastOperators,
    socket::{RemoteActionError, RemoteSocket, Sid},
};

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
/// rooms and some sockets named by id, minus the members of other rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Sockets in any of these rooms; with `sockets` also empty, every socket.
    pub rooms: Vec<String>,
    /// Sockets in any of these rooms are left out.
    pub except: Vec<String>,
    /// Sockets with these ids, wherever they are connected, besides the
    /// rooms' members. Sockets are in no room named by their id (that would
    /// flood the room listings), so these are found through the adapter's
    /// cluster-wide socket lookup: see [`SocketIoHub`].
    pub sockets: Vec<String>,
}

impl Selector {
    /// Whether it names neither a room nor a socket, i.e. selects everyone (minus `except`).
    pub fn is_everyone(&self) -> bool {
        self.rooms.is_empty() && self.sockets.is_empty()
    }
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
///
/// Rooms, `except` and "everyone" go to socketioxide's broadcast operators,
/// which the adapter carries to every instance. Sockets named by id are
/// looked up first: on this instance directly, and, for the ids not found
/// here, with one cluster-wide `fetch_sockets` (every instance answers with
/// the ids of its sockets outside the `except` rooms). Each one found
/// elsewhere is then acted on as a socketioxide `RemoteSocket`, whose
/// operations the adapter sends to the one instance that holds it. So no
/// socket has to be in a room of its own, and the room listings stay what
/// clients created.
pub struct SocketIoHub<A: Adapter> {
    /// The server handle.
    io: SocketIo<A>,
    /// The Redis link, when the adapter is the cluster's.
    cluster: Option<Cluster>,
    /// What each local socket's departure does when the server closes.
    farewell: Option<Farewell<A>>,
}

/// Accounts for a socket that the server's close takes away.
///
/// socketioxide's close ends every connection but calls no disconnect
/// handler (it empties its namespaces first), so the contract's own
/// departure (the count, the log, the disconnect webhook) runs from here.
pub type Farewell<A> = Box<dyn Fn(&SocketRef<A>) + Send + Sync>;

impl<A: Adapter> SocketIoHub<A> {
    /// A hub for `io`; `cluster` is left on close and reports the link's
    /// health; `farewell` runs for every local socket when the server closes.
    pub fn new(
        io: SocketIo<A>,
        cluster: Option<Cluster>,
        farewell: Option<Farewell<A>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            io,
            cluster,
            farewell,
        })
    }

    fn select(&self, selector: &Selector) -> BroadcastOperators<A> {
        self.io
            .to(selector.rooms.clone())
            .except(selector.except.clone())
    }

    /// The broadcast that reaches the selector's rooms (or everyone), minus
    /// `except`; `None` when it only names sockets by id.
    fn room_part(&self, selector: &Selector) -> Option<BroadcastOperators<A>> {
        (selector.sockets.is_empty() || !selector.rooms.is_empty()).then(|| self.select(selector))
    }

    /// The sockets `selector` names by id that exist on some instance and are
    /// in none of its `except` rooms; with `skip_room_members`, also leaving
    /// out those its rooms reach anyway (so an emit reaches each socket once).
    async fn sockets_by_id(
        &self,
        selector: &Selector,
        skip_room_members: bool,
    ) -> Result<Vec<Target<A>>, HubError> {
        let mut wanted: HashSet<Sid> = selector
            .sockets
            .iter()
            .filter_map(|id| Sid::from_str(id).ok())
            .collect();
        let mut targets = Vec::new();
        if wanted.is_empty() {
            return Ok(targets);
        }
        let in_any = |rooms: &[String], of: &[std::borrow::Cow<'static, str>]| {
            of.iter().any(|room| rooms.iter().any(|r| r == room))
        };
        // This instance first: no cluster round trip when every id is here.
        wanted.retain(|sid| {
            let Some(socket) = self.io.get_socket(*sid) else {
                return true;
            };
            let rooms = socket.rooms();
            let excluded = in_any(&selector.except, &rooms)
                || (skip_room_members && in_any(&selector.rooms, &rooms));
            if !excluded {
                targets.push(Target::Local(socket));
            }
            false
        });
        if wanted.is_empty() || self.cluster.is_none() {
            return Ok(targets);
        }
        let mut found: Vec<RemoteSocket<A>> = self
            .io
            .except(selector.except.clone())
            .fetch_sockets()
            .await
            .map_err(adapter_error)?
            .into_iter()
            .filter(|socket| wanted.contains(&socket.data().id))
            .collect();
        if skip_room_members && !selector.rooms.is_empty() && !found.is_empty() {
            let members: HashSet<Sid> = self
                .select(selector)
                .fetch_sockets()
                .await
                .map_err(adapter_error)?
                .iter()
                .map(|socket| socket.data().id)
                .collect();
            found.retain(|socket| !members.contains(&socket.data().id));
        }
        targets.extend(found.into_iter().map(Target::Remote));
        Ok(targets)
    }
}

/// A socket named by id: on this instance, or on another one.
enum Target<A: Adapter> {
    /// Connected here.
    Local(SocketRef<A>),
    /// Connected to another instance; the adapter routes operations to it.
    Remote(RemoteSocket<A>),
}

impl<A: Adapter> Target<A> {
    fn id(&self) -> Sid {
        match self {
            Target::Local(socket) => socket.id,
            Target::Remote(socket) => socket.data().id,
        }
    }
}

/// A broadcast that some local sockets refused (their queue was full, or they
/// were leaving) still reached every other socket: that is a success here,
/// and the slow-consumer sweep closes the stalled ones.
fn settle(result: Result<(), BroadcastError>) -> Result<(), HubError> {
    match result {
        Ok(()) => Ok(()),
        Err(BroadcastError::Socket(errors)) => {
            tracing::debug!(
                refused = errors.len(),
                "some local sockets refused a hub operation"
            );
            Ok(())
        }
        Err(BroadcastError::Serialize(e)) => Err(HubError::Encode(e.to_string())),
        Err(other) => Err(adapter_error(other)),
    }
}

/// The same for one socket named by id.
fn settle_one(result: Result<(), RemoteActionError>) -> Result<(), HubError> {
    match result {
        Ok(()) => Ok(()),
        Err(RemoteActionError::Socket(error)) => {
            tracing::debug!(%error, "a socket named by id refused a hub operation");
            Ok(())
        }
        Err(RemoteActionError::Serialize(e)) => Err(HubError::Encode(e.to_string())),
        Err(other) => Err(adapter_error(other)),
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
            let by_id = self.sockets_by_id(selector, true).await?;
            if let Some(ops) = self.room_part(selector) {
                settle(ops.emit(event.to_owned(), args).await)?;
            }
            for target in by_id {
                match target {
                    Target::Local(socket) => {
                        if let Err(error) = socket.emit(event, args) {
                            tracing::debug!(sid = %socket.id, %error, "a socket named by id refused an emit");
                        }
                    }
                    Target::Remote(socket) => settle_one(socket.emit(event, args).await)?,
                }
            }
            Ok(())
        })
    }

    fn join<'a>(
        &'a self,
        selector: &'a Selector,
        room: &'a str,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            let by_id = self.sockets_by_id(selector, false).await?;
            if let Some(ops) = self.room_part(selector) {
                ops.join(room.to_owned()).await.map_err(adapter_error)?;
            }
            for target in by_id {
                match target {
                    Target::Local(socket) => socket.join(room.to_owned()),
                    Target::Remote(socket) => {
                        socket.join(room.to_owned()).await.map_err(adapter_error)?
                    }
                }
            }
            Ok(())
        })
    }

    fn leave<'a>(
        &'a self,
        selector: &'a Selector,
        room: &'a str,
    ) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            let by_id = self.sockets_by_id(selector, false).await?;
            if let Some(ops) = self.room_part(selector) {
                ops.leave(room.to_owned()).await.map_err(adapter_error)?;
            }
            for target in by_id {
                match target {
                    Target::Local(socket) => socket.leave(room.to_owned()),
                    Target::Remote(socket) => {
                        socket.leave(room.to_owned()).await.map_err(adapter_error)?
                    }
                }
            }
            Ok(())
        })
    }

    fn disconnect<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<(), HubError>> {
        Box::pin(async move {
            let by_id = self.sockets_by_id(selector, false).await?;
            if let Some(ops) = self.room_part(selector) {
                settle(ops.disconnect().await)?;
            }
            for target in by_id {
                match target {
                    Target::Local(socket) => {
                        if let Err(error) = socket.disconnect() {
                            tracing::debug!(%error, "a socket named by id was already gone");
                        }
                    }
                    Target::Remote(socket) => settle_one(socket.disconnect().await)?,
                }
            }
            Ok(())
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Result<Listing, HubError>> {
        Box::pin(list_rooms(self.io.broadcast(), []))
    }

    fn sockets<'a>(&'a self, selector: &'a Selector) -> BoxFuture<'a, Result<Listing, HubError>> {
        Box::pin(async move {
            let by_id = self.sockets_by_id(selector, false).await?;
            let mut names: Vec<String> = by_id.iter().map(|t| t.id().to_string()).collect();
            if let Some(ops) = self.room_part(selector) {
                let sockets = ops.fetch_sockets().await.map_err(adapter_error)?;
                names.extend(sockets.iter().map(|s| s.data().id.to_string()));
            }
            Ok(Listing::bounded(names, MAX_LISTED_SOCKETS))
        })
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
            if let (Some(farewell), Some(ns)) = (&self.farewell, self.io.of("/")) {
                for socket in ns.sockets() {
                    farewell(&socket);
                }
            }
            self.io.close().await;
            if let Some(cluster) = &self.cluster {
                cluster.stop().await;
            }
        })
    }
}
