//! What an application serves on Socket.IO: the ecos contract, or another
//! setup (the conformance mode) on the same production stack.

use axum::Router;
use socketioxide::SocketIo;

use crate::realtime;

/// What an application serves besides the platform routes: its Socket.IO
/// namespaces, and any service mounted next to Socket.IO.
///
/// [`Application::build`](super::Application::build) serves [`EcosContract`];
/// [`Application::build_with`](super::Application::build_with) takes another
/// setup and keeps everything else: settings, adapters, middleware, limits, drain.
pub trait Setup: Send + Sync + 'static {
    /// Registers the namespaces and their handlers on `io`, and returns what
    /// each `io.ns` call returned, so that a cluster adapter can be awaited
    /// until it has subscribed.
    fn namespaces<A: NsAdapter>(&self, io: &SocketIo<A>) -> Vec<A::InitRes>;

    /// Adds services to the routes. They sit inside the platform middleware
    /// (request log, metrics, CORS, drain guard), in front of Socket.IO.
    fn mount(&self, routes: Router) -> Router {
        routes
    }
}

/// An adapter namespaces can be registered on: socketioxide's `Adapter` plus
/// the marker `SocketIo::ns` asks for. Both ecos adapters (in memory, Redis) are.
pub trait NsAdapter:
    socketioxide::adapter::Adapter + socketioxide_core::adapter::DefinedAdapter
{
}

impl<A> NsAdapter for A where
    A: socketioxide::adapter::Adapter + socketioxide_core::adapter::DefinedAdapter
{
}

/// The ecos event contract ([`realtime`]) on namespace `/`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EcosContract;

impl Setup for EcosContract {
    fn namespaces<A: NsAdapter>(&self, io: &SocketIo<A>) -> Vec<A::InitRes> {
        vec![realtime::register(io)]
    }
}
