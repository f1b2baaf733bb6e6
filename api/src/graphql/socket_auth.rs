//! Operations sent over a WebSocket are authenticated one by one, as HTTP
//! requests are: the socket keeps the token from `connection_init`, not the
//! member as they were then, so a logout, a removal or a role change applies
//! to the socket's next operation rather than to its next reconnect.

use super::ClientIp;
use super::conversations::Preloaded;
use crate::auth::viewer::{Viewer, authenticate, reload};
use crate::error::ApiError;
use crate::state::AppState;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextSubscribe,
};
use async_graphql::{ErrorExtensions, Pos, Request, Response, ServerResult};
use futures_util::stream::BoxStream;
use std::sync::Arc;

/// What a socket's `connection_init` sent, kept for the connection's life.
pub struct SocketCredentials {
    /// The `Authorization` value (`Bearer …`), if any was sent.
    pub header: Option<String>,
    pub ip: String,
    /// Subscriptions running on the socket (see [`LiveSlot`]).
    pub live: Arc<std::sync::atomic::AtomicUsize>,
}

/// Subscriptions one socket may run at once: each holds a Redis pub/sub
/// connection and reads the member again for every event it delivers.
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 20;

/// One running subscription of a socket, counted until it is dropped (the
/// client completes it, or the socket closes).
pub struct LiveSlot(Arc<std::sync::atomic::AtomicUsize>);

impl LiveSlot {
    /// A slot on the socket, or BAD_USER_INPUT when it runs the most it may.
    pub fn take(live: &Arc<std::sync::atomic::AtomicUsize>) -> Result<Self, ApiError> {
        use std::sync::atomic::Ordering;
        live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_SUBSCRIPTIONS_PER_SOCKET).then_some(n + 1)
        })
        .map_err(|_| {
            ApiError::bad_input(
                "subscription",
                format!(
                    "at most {MAX_SUBSCRIPTIONS_PER_SOCKET} subscriptions at once on one connection; complete one first"
                ),
            )
        })?;
        Ok(LiveSlot(live.clone()))
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Signed-in sockets one member may hold open on one API process at once:
/// each costs a connection, an actor and up to 20 feeds, and a browser tab
/// needs one.
pub const MAX_SOCKETS_PER_MEMBER: usize = 10;

/// Open signed-in sockets per membership, on this process.
#[derive(Default)]
pub struct SocketCounts(std::sync::Mutex<std::collections::HashMap<uuid::Uuid, usize>>);

/// One member's open socket, counted until it is dropped with the
/// socket's connection data; the connection is closed then too.
pub struct SocketSlot {
    counts: Arc<SocketCounts>,
    member: uuid::Uuid,
    life: Arc<crate::ws_limit::SocketLife>,
}

impl SocketCounts {
    fn counts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<uuid::Uuid, usize>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `member`'s new socket, or why not.
    pub fn take(
        self: &Arc<Self>,
        member: uuid::Uuid,
        life: Arc<crate::ws_limit::SocketLife>,
    ) -> Result<SocketSlot, String> {
        let mut counts = self.counts();
        let n = counts.entry(member).or_insert(0);
        if *n >= MAX_SOCKETS_PER_MEMBER {
            return Err(format!(
                "at most {MAX_SOCKETS_PER_MEMBER} open connections per member; close one first"
            ));
        }
        *n += 1;
        Ok(SocketSlot {
            counts: self.clone(),
            member,
            life,
        })
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        // A session ended by `connection_terminate` leaves the connection
        // open: it is closed with its place.
        self.life.end();
        let mut counts = self.counts.counts();
        if let Some(n) = counts.get_mut(&self.member) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.member);
            }
        }
    }
}

/// Schema extension: gives each operation of a socket a freshly checked
/// `Auth`, and codes to its engine errors. HTTP requests carry their own
/// and pass through untouched.
pub struct PerOperationAuth;

impl ExtensionFactory for PerOperationAuth {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PerOperationAuth)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for PerOperationAuth {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let (Some(c), Some(st)) = (
            ctx.data_opt::<SocketCredentials>(),
            ctx.data_opt::<AppState>(),
        ) {
            let auth = authenticate(st, c.header.as_deref())
                .await
                .map_err(|e| e.extend().into_server_error(Pos::default()))?;
            request = request
                .data(auth)
                .data(ClientIp(c.ip.clone()))
                .data(Arc::new(Preloaded::default()));
        }
        next.run(ctx, request).await
    }

    /// Operations over a socket run as streams: engine errors (syntax,
    /// validation, limits) get their code here, as HTTP responses do.
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        use futures_util::StreamExt;
        next.run(ctx, stream)
            .map(|mut r| {
                super::tag_engine_errors(&mut r);
                r
            })
            .boxed()
    }
}

/// Ends a live feed once its member may no longer see the workspace: each
/// event is delivered only after the member's session, membership and
/// restriction are read again.
pub fn while_allowed<S>(
    st: AppState,
    viewer: Viewer,
    workspace: uuid::Uuid,
    feed: S,
) -> impl futures_util::Stream<Item = Result<String, ApiError>>
where
    S: futures_util::Stream<Item = String> + Send + 'static,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold(
        (Box::pin(feed), st, viewer, false),
        move |(mut feed, st, v, ended)| async move {
            if ended {
                return None;
            }
            // The feed ends only when its Redis connection is lost (a
            // restart, a failover): said, so the client subscribes again,
            // rather than a quiet `complete` it would take for the end.
            let Some(raw) = feed.next().await else {
                let lost = ApiError::Unavailable("the live feed was interrupted; subscribe again");
                return Some((Err(lost), (feed, st, v, true)));
            };
            let verdict = match reload(&st, &v).await {
                Ok(Some(now)) if now.scope.sees_workspace(workspace) => Ok(raw),
                Ok(_) => Err(ApiError::Unauthenticated(
                    "the session ended or no longer sees this workspace; subscribe again",
                )),
                Err(e) => Err(e),
            };
            let ended = verdict.is_err();
            Some((verdict, (feed, st, v, ended)))
        },
    )
}
