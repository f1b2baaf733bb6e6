//! HTTP routes: GraphQL (POST executes, GET serves GraphiQL), health,
//! readiness and Prometheus metrics.

use crate::auth::viewer::{Auth, Bearer, authenticate, authenticate_bearer, bearer};
use crate::graphql::{self, ClientIp, RapportSchema};
use crate::response_cache;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use async_graphql::BatchResponse;
use futures_util::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Instant;

/// Most operations one batched POST may carry.
const MAX_BATCH: usize = 10;

/// The process-wide Prometheus recorder (installable only once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if a recorder is already installed; then ours
            // renders nothing, which a test would notice.
            let _ = metrics::set_global_recorder(recorder);
            // Histogram samples are drained only by a render or by
            // upkeep: an API nobody scrapes would grow with every request.
            let drained = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        drained.run_upkeep();
                    }
                })
                .expect("metrics upkeep thread");
            handle
        })
        .clone()
}

/// The GraphQL error shape, for answers outside GraphQL.
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    }))
}

/// The body, at most `limit` bytes, arrived within `deadline` (see
/// `Settings::body_deadline`).
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Vec<u8>, HttpResponse> {
    let too_large = || {
        error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    let read = async {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| {
                error_body(
                    StatusCode::BAD_REQUEST,
                    "BAD_REQUEST",
                    "could not read the request body",
                )
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(read) => read,
        Err(_) => Err(error_body(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            &format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            ),
        )),
    }
}

async fn graphql_post(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    schema: web::Data<RapportSchema>,
) -> HttpResponse {
    let started = Instant::now();
    // GraphQL over HTTP: a POST body is JSON, said so in Content-Type.
    // Media types are case-insensitive (RFC 9110).
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start()
        .to_ascii_lowercase();
    if !content_type.starts_with("application/json")
        && !content_type.starts_with("application/graphql-response+json")
    {
        return error_body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the request as JSON with `Content-Type: application/json`",
        );
    }
    let graphql_response = accepts_graphql_response(&req);
    let limit = state.settings.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return error_body(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            &format!("request body exceeds the limit of {limit} bytes"),
        );
    }
    let body = match read_body(payload, limit, state.settings.body_deadline).await {
        Ok(b) => web::Bytes::from(b),
        Err(resp) => return resp,
    };
    let mut batch: async_graphql::BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_body(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("body is not a GraphQL request in JSON: {e}"),
            );
        }
    };
    if batch.iter().count() > MAX_BATCH {
        return error_body(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("at most {MAX_BATCH} operations per batch"),
        );
    }
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let bearer = bearer(&state, auth_header);
    // The ticket comes before authentication reads the member's role and
    // scope: a change to them committed meanwhile refuses this answer.
    let ticket = match (&state.response_cache, &bearer, &batch) {
        (Some(cache), Bearer::Signed(claims), async_graphql::BatchRequest::Single(_)) => {
            cache.answers.ticket(claims.agency)
        }
        _ => None,
    };
    let auth = match authenticate_bearer(&state, bearer).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = ?e, "authenticating a request failed");
            return error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
    };
    let cached = match (&state.response_cache, &auth, ticket) {
        (Some(cache), Auth::Member(viewer), Some(ticket))
            if ticket.agency() == viewer.agency_id =>
        {
            Some((
                cache,
                ticket,
                response_cache::Key {
                    session: viewer.session_id,
                    graphql_response,
                    body: body.clone(),
                },
            ))
        }
        _ => None,
    };
    if let Some((cache, ticket, key)) = &cached
        && cache.answers.holds(ticket.agency(), key)
        && cache.confirmed().await
        && let Some(answer) = cache.answers.lookup(ticket.agency(), key)
    {
        metrics::counter!("rapport_response_cache_total", "outcome" => "hit").increment(1);
        count_request(true, started);
        return HttpResponse::Ok()
            .content_type(answer.content_type)
            .body(answer.body);
    }
    // Whether the answer may be kept: a document of queries only. Parsed
    // here, the engine (and the expansion limit) reuse the parse.
    let only_queries = match (&cached, &mut batch) {
        (Some(_), async_graphql::BatchRequest::Single(r)) => {
            r.parsed_query().is_ok_and(holds_only_queries)
        }
        _ => false,
    };
    let ip = peer_ip(&req, &state.settings);
    let mut response = schema
        .execute_batch(
            batch
                .data(auth)
                .data(ClientIp(ip))
                .data(std::sync::Arc::new(
                    graphql::conversations::Preloaded::default(),
                )),
        )
        .await;
    tag_engine_errors(&mut response);
    count_request(response.is_ok(), started);
    let keep = |content_type: &'static str, body: web::Bytes| {
        let Some((cache, ticket, key)) = &cached else {
            return;
        };
        metrics::counter!("rapport_response_cache_total", "outcome" => "miss").increment(1);
        if only_queries && matches!(&response, BatchResponse::Single(r) if r.errors.is_empty()) {
            let answer = response_cache::Answer { content_type, body };
            cache.answers.keep(*ticket, key.clone(), answer);
        }
    };
    if !graphql_response {
        return match serde_json::to_vec(&response) {
            Ok(body) => {
                let body = web::Bytes::from(body);
                keep(JSON, body.clone());
                HttpResponse::Ok().content_type(JSON).body(body)
            }
            Err(e) => {
                tracing::error!(error = %e, "serializing a GraphQL response failed");
                error_body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    "internal error",
                )
            }
        };
    }
    // `application/graphql-response+json`: a request that never executed
    // (unparsable, invalid, variables not coercible) is a 400 without
    // `data`, as the GraphQL-over-HTTP spec asks.
    let mut body = match serde_json::to_value(&response) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "serializing a GraphQL response failed");
            return error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            );
        }
    };
    let status = match &response {
        BatchResponse::Single(r) if request_error(r) => {
            if let Some(obj) = body.as_object_mut() {
                obj.remove("data");
            }
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::OK,
    };
    let body = web::Bytes::from(body.to_string());
    if status == StatusCode::OK {
        keep(GRAPHQL_RESPONSE, body.clone());
    }
    HttpResponse::build(status)
        .content_type(GRAPHQL_RESPONSE)
        .body(body)
}

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json; charset=utf-8";
const JSON: &str = "application/json";

/// Whether every operation of the document is a query (an answer to a
/// document holding a mutation is never kept, whichever operation ran).
fn holds_only_queries(doc: &async_graphql::parser::types::ExecutableDocument) -> bool {
    doc.operations
        .iter()
        .all(|(_, op)| op.node.ty == async_graphql::parser::types::OperationType::Query)
}

fn count_request(ok: bool, started: Instant) {
    metrics::counter!("rapport_graphql_requests_total", "ok" => ok.to_string()).increment(1);
    metrics::histogram!("rapport_graphql_request_seconds").record(started.elapsed().as_secs_f64());
}

/// Whether the client asked for `application/graphql-response+json`.
fn accepts_graphql_response(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/graphql-response+json"))
}

/// Errors before execution (parse, validation, variable coercion) carry no
/// path and leave no data; resolver errors have a path.
fn request_error(r: &async_graphql::Response) -> bool {
    !r.errors.is_empty()
        && r.data == async_graphql::Value::Null
        && r.errors.iter().all(|e| e.path.is_empty())
}

/// See [`graphql::tag_engine_errors`].
fn tag_engine_errors(response: &mut BatchResponse) {
    match response {
        BatchResponse::Single(r) => graphql::tag_engine_errors(r),
        BatchResponse::Batch(rs) => rs.iter_mut().for_each(graphql::tag_engine_errors),
    }
}

/// The client's address, for per-IP rate limits: the TCP peer, or behind
/// the operator's trusted proxies the address they saw (see
/// `rapport_domain::client_ip`).
fn peer_ip(req: &HttpRequest, settings: &crate::settings::Settings) -> String {
    let Some(peer) = req.peer_addr() else {
        return "unknown".into();
    };
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok());
    rapport_domain::client_ip::client_ip(peer.ip(), forwarded, &settings.trusted_proxies)
        .to_string()
}

/// WebSocket subscriptions. The access token comes in the connection_init
/// payload (`{"Authorization": "Bearer …"}`), as browsers cannot set headers
/// on WebSocket requests.
async fn graphql_ws(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    schema: web::Data<RapportSchema>,
) -> actix_web::Result<HttpResponse> {
    let st = state.get_ref().clone();
    let ip = peer_ip(&req, &st.settings);
    // A message over a socket is held to the size of a request body.
    let max_message = st.settings.max_body_bytes;
    let sign_in_within = st.settings.socket_sign_in_deadline;
    let life = std::sync::Arc::new(crate::ws_limit::SocketLife::default());
    let session = life.clone();
    let response = async_graphql_actix_web::GraphQLSubscription::new(schema.get_ref().clone())
        .on_connection_init(move |init: serde_json::Value| async move {
            session.init_seen();
            let header = ["Authorization", "authorization"]
                .iter()
                .find_map(|k| init.get(*k).and_then(|v| v.as_str()))
                .map(String::from)
                .or_else(|| {
                    init.get("token")
                        .and_then(|v| v.as_str())
                        .map(|t| format!("Bearer {t}"))
                });
            let auth = authenticate(&st, header.as_deref()).await.map_err(|e| {
                // Details are logged, never sent.
                tracing::error!(error = ?e, "authenticating a socket failed");
                async_graphql::Error::new("internal error")
            })?;
            let mut data = async_graphql::Data::default();
            // A socket without a valid token is still answered (each
            // operation gets UNAUTHENTICATED) until its deadline closes it.
            if let Auth::Member(v) = &auth {
                data.insert(
                    st.sockets
                        .take(v.membership_id, session.clone())
                        .map_err(async_graphql::Error::new)?,
                );
                session.sign_in();
            }
            data.insert(auth);
            // Each operation is authenticated again from these (see
            // graphql::socket_auth), not from the member as they are now.
            data.insert(graphql::socket_auth::SocketCredentials {
                header,
                ip,
                live: Default::default(),
            });
            Ok(data)
        })
        .start(
            &req,
            crate::ws_limit::MessageLimit::new(payload, max_message, sign_in_within, life.clone()),
        )?;
    Ok(response.map_body(|_, body| {
        actix_web::body::BoxBody::new(crate::ws_limit::ClosingBody::new(body, life))
    }))
}

/// GraphiQL's own files, embedded so the page works offline.
async fn graphiql_asset(path: web::Path<String>) -> HttpResponse {
    let (body, kind): (&'static [u8], &str) = match path.as_str() {
        "graphiql.min.js" => (
            include_bytes!("../assets/graphiql/graphiql.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "graphiql.min.css" => (
            include_bytes!("../assets/graphiql/graphiql.min.css"),
            "text/css; charset=utf-8",
        ),
        "react.production.min.js" => (
            include_bytes!("../assets/graphiql/react.production.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../assets/graphiql/react-dom.production.min.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return HttpResponse::NotFound().finish(),
    };
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header(("Cache-Control", "public, max-age=86400"))
        .body(body)
}

async fn graphiql() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(include_str!("graphiql.html"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (db, redis) = tokio::join!(rapport_store::db::ping(&state.db), state.kv.ping());
    let body = json!({
        "database": if db { "ok" } else { "unreachable" },
        "redis": if redis { "ok" } else { "unreachable" },
    });
    if db && redis {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Reads how full PostgreSQL's notification queue is into its gauge, at
/// most once a second however often `/metrics` is fetched (it is public):
/// NaN when the read fails or takes over a second, never a stale figure.
async fn refresh_queue_usage(db: &sea_orm::DatabaseConnection) {
    use std::sync::Mutex;
    use std::time::Duration;
    static LAST_READ: Mutex<Option<Instant>> = Mutex::new(None);
    {
        let mut last = LAST_READ.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        *last = Some(Instant::now());
    }
    let usage = rapport_store::db::notification_queue_usage(db);
    let read = match tokio::time::timeout(Duration::from_secs(1), usage).await {
        Ok(Ok(None)) => return, // SQLite: no such queue, no gauge
        Ok(Ok(Some(u))) => u,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: reading the notification queue's usage failed");
            f64::NAN
        }
        Err(_) => {
            tracing::warn!("metrics: reading the notification queue's usage timed out");
            f64::NAN
        }
    };
    metrics::gauge!("rapport_pg_notification_queue_usage").set(read);
}

async fn metrics_route(state: web::Data<AppState>) -> HttpResponse {
    refresh_queue_usage(&state.db).await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// A path that only takes GET (and HEAD, for a probe: uptime checkers
/// send it, and get the same answer without its body); other methods get
/// 405.
fn get_only<F, Args>(path: &str, handler: F, probe: bool) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let r = web::resource(path).route(web::get().to(handler.clone()));
    if probe {
        r.route(web::head().to(handler))
            .default_service(only("GET, HEAD"))
    } else {
        r.default_service(only("GET"))
    }
}

/// 405 for a method the path does not take, naming those it does (RFC 9110
/// §15.5.6), instead of a 404 that reads as a wrong URL.
fn only(allow: &'static str) -> actix_web::Route {
    web::route().to(move || async move {
        let mut r = error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            &format!("this path takes {allow}"),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        r
    })
}

/// Binds the API on `listener` and returns the server; awaiting it runs
/// until SIGINT/SIGTERM (actix stops gracefully, finishing open requests).
pub fn server(state: AppState, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let schema = graphql::build(
        Some(state.clone()),
        state.settings.max_query_depth,
        state.settings.max_query_complexity,
    );
    let workers = state.settings.http_workers;
    if let Some(cache) = &state.response_cache {
        cache.start(state.db.get_postgres_connection_pool().clone());
    }
    let state = web::Data::new(state);
    let schema = web::Data::new(schema);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(schema.clone())
            .service(
                web::resource("/graphql")
                    .route(web::post().to(graphql_post))
                    .route(
                        web::get()
                            // RFC 6455: the header's value is case-insensitive.
                            .guard(actix_web::guard::fn_guard(|ctx| {
                                ctx.head()
                                    .headers()
                                    .get("upgrade")
                                    .and_then(|v| v.to_str().ok())
                                    .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
                            }))
                            .to(graphql_ws),
                    )
                    .route(web::get().to(graphiql))
                    .default_service(only("GET, POST")),
            )
            .service(get_only("/graphiql/{file}", graphiql_asset, false))
            .service(
                web::resource("/webhooks/{channel}")
                    .route(web::post().to(crate::webhooks::receive))
                    .route(web::get().to(crate::webhooks::verify))
                    .default_service(only("GET, POST")),
            )
            .service(get_only(
                "/reports/shared/{token}",
                crate::share::shared_report,
                false,
            ))
            .service(get_only(
                "/export/workspaces/{id}/conversations.csv",
                crate::export::conversations,
                false,
            ))
            .service(get_only(
                "/export/workspaces/{id}/report.csv",
                crate::export::report,
                false,
            ))
            .service(get_only("/healthz", healthz, true))
            .service(get_only("/readyz", readyz, true))
            .service(get_only("/metrics", metrics_route, false))
    })
    .shutdown_timeout(10);
    if let Some(n) = workers {
        server = server.workers(n);
    }
    Ok(server.listen(listener)?.run())
}
